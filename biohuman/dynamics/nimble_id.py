"""Batched inverse dynamics with nimblephysics: all frames of a trial in one pass.

The scaled OpenSim model is parsed once by `nimble.biomechanics.OpenSimParser.parseOsim`
(`NimbleModel`); for each frame the generalized forces are

    tau = M(q) qdd + C(q, qd) - sum_feet (J_lin(cop)^T F + J_ang^T T)

with M qdd + C from nimble's recursive inverse dynamics, and each foot's ground force F applied at
its centre of pressure (a point of calcn_r / calcn_l) plus its free torque T, all in ground.

Facts about nimble's copy of an OpenSim model (measured on Rajagopal-family models):
* nimble has no muscles and no force elements: the result is the net generalized force that
  OpenSim's InverseDynamicsTool reports with `forces_to_exclude = Muscles` for models without
  passive force elements. Models with passive forces (ligaments, bushings, springs) differ.
* nimble's default gravity is (0, 0, -9.81); the gravity of the OpenSim model (Y up,
  (0, -9.80665, 0) for Rajagopal) is set explicitly.
* CoordinateCouplerConstraints are ignored and bodies on coupler-driven joints are dropped: the
  patellae of Rajagopal models (0.07 kg each; `knee_angle_*_beta` has no nimble DOF). Without
  them the pelvis residual force is off by their weight (1.4 N). `NimbleModel` tabulates each
  such body's pose in its parent (femur) against its coupled coordinate and applies its
  inertial and gravity wrench along that path to the parent (`_attached_wrench_term`); the
  coupled coordinate's own generalized force (knee_angle_*_beta) is reported too. OpenSim's ID
  ignores constraints as well, so this reproduces its moments of all coordinates. Other
  dropped bodies are merged rigidly into their nearest kept ancestor.
* Outside the walker knee's range (knee_angle < 0) nimble extrapolates the knee's spline
  functions differently from OpenSim: 0.016 N m at -0.2 rad; inside the range the models agree
  to 1e-5 N m.
* Locked coordinates stay DOFs with zero-width limits; they are held at their default values.
* OpenSim's (Simbody's) CustomJoint velocity terms are inexact when one mobility drives several
  rotations (Rajagopal's walker knee): MobilizedBody::FunctionBasedImpl::buildHdot
  differentiates the rotation axes with the angular velocity of the leading *mobilities*
  instead of the leading *rotations*. nimble's dynamics are exact (its velocity-product forces
  equal the Christoffel terms of its mass matrix, which equals OpenSim's to 1e-9). The
  difference is quadratic in knee speed: 1.2 N on pelvis_tx and 1 N m at the hip at 7 rad/s,
  2 % of the pelvis residuals of a well-matched walking trial. `bias="opensim"` (default, so
  that results match OpenSim's ID and SO) adds Simbody's term (`_opensim_hdot_term`);
  `bias="exact"` keeps nimble's exact dynamics.

Velocities and accelerations (`qdd_method`):
* "spline" (default): natural quintic interpolating splines of every coordinate, which is what
  OpenSim's InverseDynamicsTool uses (GCVSplineSet of degree 5 with error variance 0, i.e. no
  smoothing; natural end conditions q''' = q'''' = 0). Same inputs -> same derivatives.
* "speed_spline": speeds as above, accelerations from a second natural quintic spline through
  the speed samples: what OpenSim's AnalyzeTool/StaticOptimization use for their target
  accelerations (measured: this moves pelvis residual forces by up to 2.4 N at 1 kHz; use it
  to reproduce OpenSim SO's reserves exactly).
* "central": second-order central differences (np.gradient), for comparison.
Neither filters: pass coordinates that are already low-passed.
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from biohuman.dynamics.grf import FEET, GroundForces
from biohuman.dynamics.kinematics import coordinate_name
from biohuman.errors import InputFormatError, SolverError
from biohuman.osim.model import coordinate_couplers, load_model, opensim, resolve_model_path, single_couplers

QDD_METHODS = ("spline", "speed_spline", "central")
BIAS_MODES = ("opensim", "exact")


@contextlib.contextmanager
def quiet_native_output() -> Iterator[None]:
    """Silence C/C++ writes to stdout/stderr (nimble warns about every missing mesh and weld)."""
    saved = []
    with open(os.devnull, "wb") as null:
        for fd in (1, 2):
            try:
                saved.append((fd, os.dup(fd)))
                os.dup2(null.fileno(), fd)
            except OSError:
                pass
        try:
            yield
        finally:
            for fd, dup in saved:
                with contextlib.suppress(OSError):
                    os.dup2(dup, fd)
                    os.close(dup)


@dataclass
class NimbleModel:
    """A scaled OpenSim model parsed by nimblephysics, with name maps to OpenSim coordinates.

    path: the .osim; skeleton: nimble Skeleton (gravity set from the OpenSim model);
    dofs: nimble DOF names in nimble order (equal to OpenSim coordinate names);
    coordinates: OpenSim coordinates in model order; translational: translational coordinates;
    locked / coupled: OpenSim locked coordinates and coupler-dependent coordinates;
    defaults: OpenSim default values (rad / m); gravity (3,) m/s^2; mass_kg: the nimble
    skeleton's mass (attached bodies excluded), opensim_mass_kg: OpenSim's; merged: dropped
    bodies merged rigidly -> ancestor; attached: dropped bodies moving with a coupled coordinate
    (`_AttachedBody`, e.g. the patellae); custom_joint_terms: OpenSim CustomJoints whose Simbody
    velocity term is inexact (`_opensim_hdot_term`); inertia: body -> (mass kg, COM (3,) m,
    inertia about the COM (3, 3) kg m^2, body frame) after merging; _opensim_model keeps the
    OpenSim functions used per frame alive;
    foot_bodies: foot -> body that carries that foot's ground force (calcn_r / calcn_l).
    """

    path: Path
    skeleton: object
    dofs: tuple[str, ...]
    coordinates: tuple[str, ...]
    translational: tuple[str, ...]
    locked: tuple[str, ...]
    coupled: tuple[str, ...]
    defaults: dict[str, float]
    gravity: np.ndarray
    mass_kg: float
    opensim_mass_kg: float
    merged: dict[str, str] = field(default_factory=dict)
    attached: tuple = ()
    custom_joint_terms: tuple = ()
    inertia: dict[str, tuple[float, np.ndarray, np.ndarray]] = field(default_factory=dict)
    _opensim_model: object = None
    foot_bodies: dict[str, str] = field(default_factory=lambda: {"r": "calcn_r", "l": "calcn_l"})

    @classmethod
    def load(cls, model_osim: str | Path | None) -> NimbleModel:
        """Parse (cached per file path, size and modification time) a scaled .osim."""
        path = resolve_model_path(model_osim).resolve()
        st = path.stat()
        return _load_cached(str(path), st.st_mtime_ns, st.st_size)

    @property
    def free_dofs(self) -> tuple[str, ...]:
        """nimble DOFs that are neither locked nor coupled in OpenSim."""
        return tuple(d for d in self.dofs if d not in self.locked and d not in self.coupled)

    def positions(self, coordinates: pd.DataFrame) -> np.ndarray:
        """(T, ndof) nimble positions from a coordinates frame (rad / m; names or state paths).

        Columns the model lacks raise InputFormatError; DOFs the frame lacks take their OpenSim
        default; locked DOFs are always at their default; coupled coordinates are ignored.
        """
        data: dict[str, np.ndarray] = {}
        unknown = []
        for col in coordinates.columns:
            name = coordinate_name(str(col))
            if name is None:
                continue
            if name not in self.coordinates:
                unknown.append(str(col))
                continue
            data[name] = np.asarray(coordinates[col], dtype=float)
        if unknown:
            raise InputFormatError(f"columns are not coordinates of the model: {unknown[:10]}", self.path)
        n = len(coordinates)
        out = np.empty((n, len(self.dofs)))
        for k, d in enumerate(self.dofs):
            if d in data and d not in self.locked:
                out[:, k] = data[d]
            else:
                out[:, k] = self.defaults.get(d, 0.0)
        if not np.all(np.isfinite(out)):
            bad = [d for k, d in enumerate(self.dofs) if not np.all(np.isfinite(out[:, k]))]
            raise InputFormatError(f"coordinates contain NaN or inf: {bad}", self.path)
        return out


@functools.lru_cache(maxsize=8)
def _load_cached(path: str, mtime_ns: int, size: int) -> NimbleModel:  # noqa: ARG001 - cache key
    import nimblephysics as nimble

    model = load_model(path)
    state = model.initSystem()
    cs = model.getCoordinateSet()
    coords = [cs.get(i).getName() for i in range(cs.getSize())]
    trans = tuple(c for c in coords if cs.get(c).getMotionType() == 2)
    locked = tuple(c for c in coords if cs.get(c).get_locked())
    coupled = [c.dependent for c in coordinate_couplers(model)]
    defaults = {c: float(cs.get(c).getDefaultValue()) for c in coords}
    g = model.getGravity()
    gravity = np.array([g.get(0), g.get(1), g.get(2)], dtype=float)
    try:
        with quiet_native_output():
            parsed = nimble.biomechanics.OpenSimParser.parseOsim(path, "", True)
    except Exception as exc:  # noqa: BLE001 - nimble raises RuntimeError with its own text
        raise InputFormatError(f"nimblephysics could not parse the model: {exc}", path) from exc
    skel = parsed.skeleton
    skel.setGravity(gravity)
    dofs = tuple(skel.getDofByIndex(i).getName() for i in range(skel.getNumDofs()))
    merged, attached, inertia = _merge_dropped_bodies(model, state, skel, path, dofs)
    foreign = [d for d in dofs if d not in coords]
    if foreign:
        raise InputFormatError(f"nimble DOFs {foreign} have no OpenSim coordinate of the same name", path)
    for side, body in (("r", "calcn_r"), ("l", "calcn_l")):
        if skel.getBodyNode(body) is None:
            raise InputFormatError(f"foot body {body} (foot {side}) not found in the nimble model", path)
    return NimbleModel(
        path=Path(path), skeleton=skel, dofs=dofs, coordinates=tuple(coords), translational=trans,
        locked=locked, coupled=tuple(coupled), defaults=defaults, gravity=gravity,
        mass_kg=float(skel.getMass()), opensim_mass_kg=float(model.getTotalMass(state)), merged=merged,
        attached=attached, custom_joint_terms=_custom_joint_terms(model, skel, dofs), inertia=inertia,
        _opensim_model=model,
    )


def _vec(v) -> np.ndarray:  # noqa: ANN001 - SimTK Vec3
    return np.array([v.get(0), v.get(1), v.get(2)], dtype=float)


def _transform_in_ground(frame, state) -> tuple[np.ndarray, np.ndarray]:  # noqa: ANN001
    """(R (3, 3), p (3,)) of an OpenSim frame in ground."""
    x = frame.getTransformInGround(state)
    rot = x.R()
    r = np.array([[rot.get(i, j) for j in range(3)] for i in range(3)])
    return r, _vec(x.p())


def _inertia_matrix(v6) -> np.ndarray:  # noqa: ANN001 - SimTK Vec6 (Ixx Iyy Izz Ixy Ixz Iyz)
    a = [v6.get(i) for i in range(6)]
    return np.array([[a[0], a[3], a[4]], [a[3], a[1], a[5]], [a[4], a[5], a[2]]])


@dataclass
class _AttachedBody:
    """An OpenSim body nimble dropped because its joint follows a coupler-driven coordinate (the
    patella): its pose in its kept parent body is tabulated against that coordinate (beta), and
    beta = f(independent DOF). Used by `_attached_wrench_term`."""

    name: str
    parent: str  # kept nimble body it hangs on
    dependent: str  # coupled coordinate driving its joint (e.g. knee_angle_r_beta)
    independent: int  # nimble DOF index of the coupler's independent coordinate
    coupler: object  # OpenSim Function beta = f(independent)
    mass: float
    inertia: np.ndarray  # (3, 3) about its COM, in its own frame
    com: object  # CubicSpline beta -> (3,) COM position in the parent body frame (m)
    rot: object  # CubicSpline beta -> (9,) rotation of the body in the parent frame (row-major)
    omega: object  # CubicSpline beta -> (3,) w = vee(R' R^T), relative angular velocity per unit beta


def _tabulate_attached(model, state, body, parent, dependent: str, lo: float, hi: float):  # noqa: ANN001, ANN202
    """Splines of a body's COM, orientation and relative angular velocity in `parent` against the
    coordinate `dependent` over [lo, hi] (OpenSim evaluates the joint's functions)."""
    from scipy.interpolate import CubicSpline

    coord = model.getCoordinateSet().get(dependent)
    saved = coord.getValue(state)
    grid = np.linspace(lo, hi, 4001)
    coms, rots = [], []
    c_local = _vec(body.get_mass_center())
    for v in grid:
        coord.setValue(state, float(v), False)
        model.realizePosition(state)
        ra, pa = _transform_in_ground(parent, state)
        rb, pb = _transform_in_ground(body, state)
        coms.append(ra.T @ (pb + rb @ c_local - pa))
        rots.append((ra.T @ rb).ravel())
    coord.setValue(state, saved, False)
    model.realizePosition(state)
    com = CubicSpline(grid, np.array(coms), axis=0)
    rot = CubicSpline(grid, np.array(rots), axis=0)
    rr = rot(grid).reshape(-1, 3, 3)
    dr = rot(grid, 1).reshape(-1, 3, 3)
    skew = dr @ np.transpose(rr, (0, 2, 1))
    w = np.stack([skew[:, 2, 1], skew[:, 0, 2], skew[:, 1, 0]], axis=1)
    return com, rot, CubicSpline(grid, w, axis=0)


def _merge_dropped_bodies(model, state, skel, path: str, dofs: tuple[str, ...]):  # noqa: ANN001, ANN202
    """Account for OpenSim bodies that nimble dropped (Rajagopal's patellae hang on a joint driven
    by the coupler-dependent `knee_angle_*_beta`, which nimble ignores).

    A dropped body whose joint has one coordinate that an enforced one-argument coupler drives
    from a nimble DOF becomes an `_AttachedBody`: its inertial and gravity wrench along its true
    path is applied to its parent (`_attached_wrench_term`), which is what OpenSim's ID does (it
    ignores constraints, so the beta coordinate takes only the patella's own joint moment). Any
    other dropped body is merged rigidly into its nearest kept ancestor at the default pose
    (mass, COM, inertia by the parallel-axis theorem).
    Returns ({dropped body: ancestor}, attached bodies, {kept body: (mass, COM (3,), inertia about
    the COM (3, 3)) in its body frame}).
    """
    bodies = model.getBodySet()
    kept = {skel.getBodyNode(i).getName() for i in range(skel.getNumBodyNodes())}
    parent_of, joint_of = {}, {}
    js = model.getJointSet()
    for i in range(js.getSize()):
        j = js.get(i)
        child = j.getChildFrame().findBaseFrame().getName()
        parent_of[child] = j.getParentFrame().findBaseFrame().getName()
        joint_of[child] = j
    couplers = single_couplers(model)
    cs = model.getCoordinateSet()
    merged: dict[str, str] = {}
    attached: list[_AttachedBody] = []
    additions: dict[str, list[tuple[float, np.ndarray, np.ndarray]]] = {}
    for i in range(bodies.getSize()):
        b = bodies.get(i)
        name = b.getName()
        if name in kept or b.get_mass() <= 0:
            continue
        anc = parent_of.get(name)
        while anc is not None and anc not in kept:
            anc = parent_of.get(anc)
        if anc is None or anc == "ground":
            raise InputFormatError(f"nimble dropped body {name} and it has no kept ancestor to merge into", path)
        joint = joint_of.get(name)
        dep = joint.get_coordinates(0).getName() if joint is not None and joint.numCoordinates() == 1 else None
        if dep in couplers and couplers[dep][0] in dofs and parent_of.get(name) == anc:
            ind, fn = couplers[dep]
            c = cs.get(ind)
            x = opensim().Vector(1, 0.0)
            vals = []
            # independent range widened by 1 rad (or 1 m) each side: IK can leave the model's range
            for v in np.linspace(c.getRangeMin() - 1.0, c.getRangeMax() + 1.0, 401):
                x.set(0, float(v))
                vals.append(fn.calcValue(x))
            lo, hi = min(vals), max(vals)
            com, rot, omega = _tabulate_attached(model, state, b, bodies.get(anc), dep, lo, hi)
            attached.append(_AttachedBody(
                name=name, parent=anc, dependent=dep, independent=dofs.index(ind), coupler=fn,
                mass=float(b.get_mass()), inertia=_inertia_matrix(b.get_inertia()), com=com, rot=rot, omega=omega))
            continue
        ra, pa = _transform_in_ground(bodies.get(anc), state)
        rb, pb = _transform_in_ground(b, state)
        r_ab = ra.T @ rb  # body b's axes in the ancestor's frame
        com = ra.T @ (pb + rb @ _vec(b.get_mass_center()) - pa)
        inertia = r_ab @ _inertia_matrix(b.get_inertia()) @ r_ab.T  # about b's COM, ancestor axes
        additions.setdefault(anc, []).append((float(b.get_mass()), com, inertia))
        merged[name] = anc
    inertia_of = {}
    for name in kept:
        ob = bodies.get(name)
        inertia_of[name] = (float(ob.get_mass()), _vec(ob.get_mass_center()), _inertia_matrix(ob.get_inertia()))
    for anc, items in additions.items():
        parts = [inertia_of[anc]] + items
        mass = sum(m for m, _, _ in parts)
        com = sum(m * c for m, c, _ in parts) / mass
        inertia = np.zeros((3, 3))
        for m, c, i_c in parts:
            d = c - com
            inertia += i_c + m * (d @ d * np.eye(3) - np.outer(d, d))
        node = skel.getBodyNode(anc)
        node.setMass(mass)
        node.setLocalCOM(com)
        node.setMomentOfInertia(inertia[0, 0], inertia[1, 1], inertia[2, 2], inertia[0, 1], inertia[0, 2],
                                inertia[1, 2])
        inertia_of[anc] = (mass, com, inertia)
    return merged, tuple(attached), inertia_of


def _coupled_trajectory(body: _AttachedBody, q: np.ndarray, qd: np.ndarray, qdd: np.ndarray):  # noqa: ANN202
    """beta, beta', beta'' (T,) of an attached body's coordinate by the chain rule through its
    coupler function of the independent DOF."""
    osim = opensim()
    x = osim.Vector(1, 0.0)
    th = q[:, body.independent]
    f0, f1, f2 = (np.empty(len(th)) for _ in range(3))
    d1, d2 = osim.StdVectorInt([0]), osim.StdVectorInt([0, 0])
    for t, v in enumerate(th):
        x.set(0, float(v))
        f0[t] = body.coupler.calcValue(x)
        f1[t] = body.coupler.calcDerivative(d1, x)
        f2[t] = body.coupler.calcDerivative(d2, x)
    thd, thdd = qd[:, body.independent], qdd[:, body.independent]
    return f0, f1 * thd, f2 * thd**2 + f1 * thdd


def _cross(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cross product of two 3-vectors (np.cross is slow for single vectors)."""
    return np.array([a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]])


def _attached_path(body: _AttachedBody, q: np.ndarray, qd: np.ndarray, qdd: np.ndarray) -> dict[str, np.ndarray]:
    """Per-frame path of an attached body in its parent's frame: beta rate `bd` and acceleration
    `bdd` (T,), COM `r`, `rp`, `rpp` (T, 3) and its derivatives wrt beta, orientation `rot`
    (T, 3, 3), relative angular velocity per unit beta `w` and its derivative `wp` (T, 3)."""
    b0, b1, b2 = _coupled_trajectory(body, q, qd, qdd)
    return {"bd": b1, "bdd": b2, "r": body.com(b0), "rp": body.com(b0, 1), "rpp": body.com(b0, 2),
            "rot": body.rot(b0).reshape(-1, 3, 3), "w": body.omega(b0), "wp": body.omega(b0, 1)}


def _attached_wrench_term(model: NimbleModel, body: _AttachedBody, qd: np.ndarray, qdd: np.ndarray,
                          path: dict[str, np.ndarray], t: int) -> tuple[np.ndarray, float]:
    """Generalized forces (ndof,) of an attached body's inertia and weight at frame t, carried by
    its parent (skeleton posed at q[t] with speeds qd), and the generalized force of its own
    coordinate (beta; what OpenSim's ID reports as e.g. knee_angle_r_beta_moment). path from
    `_attached_path`."""
    skel = model.skeleton
    bd, bdd = path["bd"][t], path["bdd"][t]
    r, rp, rpp, w, wp = path["r"][t], path["rp"][t], path["rpp"][t], path["w"][t], path["wp"][t]
    node = skel.getBodyNode(body.parent)
    rf = node.getWorldTransform().rotation()
    jac = skel.getWorldJacobian(node, r)
    djac = skel.getJacobianClassicDeriv(node, r)
    w_f = jac[:3] @ qd
    alpha_f = jac[:3] @ qdd + djac[:3] @ qd
    a_pt = jac[3:] @ qdd + djac[3:] @ qd  # acceleration of the parent-fixed point at the COM
    v_rel = rf @ (rp * bd)
    a_com = a_pt + 2.0 * _cross(w_f, v_rel) + rf @ (rpp * bd**2 + rp * bdd)
    w_rel = rf @ (w * bd)
    omega = w_f + w_rel
    alpha = alpha_f + _cross(w_f, w_rel) + rf @ (wp * bd**2 + w * bdd)
    r_world = rf @ path["rot"][t]
    inertia = r_world @ body.inertia @ r_world.T
    moment = inertia @ alpha + _cross(omega, inertia @ omega)
    force = body.mass * (a_com - model.gravity)
    tau_beta = float((rf @ w) @ moment + (rf @ rp) @ force)
    return jac[:3].T @ moment + jac[3:].T @ force, tau_beta


@dataclass
class _CustomJointTerm:
    """What `_opensim_hdot_term` needs of one OpenSim CustomJoint (see the module docstring)."""

    name: str
    dofs: tuple[int, ...]  # nimble DOF index of each joint coordinate (mobility order)
    axes: np.ndarray  # (3, 3) rotation axes a0, a1, a2 (columns), unit, in the joint's parent frame F
    functions: tuple  # 3 OpenSim Functions (rotation 1-3), evaluated on `args[i]`
    args: tuple[tuple[int, ...], ...]  # per rotation: indices into `dofs` of its arguments
    parent_body: str
    r_parent_f: np.ndarray  # (3, 3) orientation of F in the parent body
    child_body: str
    p_child_m: np.ndarray  # (3,) origin of the child frame M in the child body
    subtree: tuple[str, ...]  # nimble bodies moved by this joint


def _rot(angle: float, axis: np.ndarray) -> np.ndarray:
    """Rotation matrix of `angle` rad about the unit `axis` (Rodrigues)."""
    k = np.array([[0.0, -axis[2], axis[1]], [axis[2], 0.0, -axis[0]], [-axis[1], axis[0], 0.0]])
    return np.eye(3) + np.sin(angle) * k + (1.0 - np.cos(angle)) * (k @ k)


def _custom_joint_terms(model, skel, dofs: tuple[str, ...]) -> tuple[_CustomJointTerm, ...]:  # noqa: ANN001
    """CustomJoints whose Simbody velocity term differs from the exact one (see module docstring):
    those where a rotation depends on a mobility other than its own index (e.g. walker knee)."""
    osim = opensim()
    out = []
    js = model.getJointSet()
    kept = {skel.getBodyNode(i).getName() for i in range(skel.getNumBodyNodes())}
    for i in range(js.getSize()):
        cj = osim.CustomJoint.safeDownCast(js.get(i))
        if cj is None:
            continue
        coords = [cj.get_coordinates(k).getName() for k in range(cj.numCoordinates())]
        st = cj.getSpatialTransform()
        axes, funcs, args = [], [], []
        simple = True
        for r in range(3):
            ta = st.getTransformAxis(r)
            ax = ta.getAxis()
            v = np.array([ax.get(0), ax.get(1), ax.get(2)], dtype=float)
            axes.append(v / np.linalg.norm(v))
            names = ta.getCoordinateNamesInArray()
            arg = tuple(coords.index(names.get(k)) for k in range(names.getSize()))
            funcs.append(ta.get_function() if ta.hasFunction() else None)
            args.append(arg if ta.hasFunction() else ())
            if arg not in ((), (r,)):
                simple = False
        if simple or not all(c in dofs for c in coords):
            continue
        child = cj.getChildFrame().findBaseFrame().getName()
        parent = cj.getParentFrame().findBaseFrame().getName()
        if child not in kept or parent not in kept:
            continue
        xf = cj.getParentFrame().findTransformInBaseFrame()
        rf = xf.R()
        xm = cj.getChildFrame().findTransformInBaseFrame()
        subtree, stack = [], [skel.getBodyNode(child)]
        while stack:
            body = stack.pop()
            subtree.append(body.getName())
            stack += [body.getChildJoint(c).getChildBodyNode() for c in range(body.getNumChildJoints())]
        out.append(_CustomJointTerm(
            name=cj.getName(), dofs=tuple(dofs.index(c) for c in coords), axes=np.column_stack(axes),
            functions=tuple(funcs), args=tuple(args), parent_body=parent,
            r_parent_f=np.array([[rf.get(a, b) for b in range(3)] for a in range(3)]),
            child_body=child, p_child_m=np.array([xm.p().get(k) for k in range(3)]), subtree=tuple(subtree)))
    return tuple(out)


def _eval_function(fn, x: np.ndarray) -> tuple[float, np.ndarray]:  # noqa: ANN001 - OpenSim Function
    """Value and gradient of an OpenSim Function at x (len = its argument count)."""
    osim = opensim()
    vec = osim.Vector(len(x), 0.0)
    for k, v in enumerate(x):
        vec.set(k, float(v))
    grad = np.array([fn.calcDerivative(osim.StdVectorInt([k]), vec) for k in range(len(x))])
    return float(fn.calcValue(vec)), grad


def _custom_joint_functions(term: _CustomJointTerm, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rotation angles theta (T, 3) and their gradients fq (T, 3, N) of a CustomJoint per frame."""
    qj = q[:, list(term.dofs)]
    n = len(term.dofs)
    theta = np.zeros((len(q), 3))
    fq = np.zeros((len(q), 3, n))
    for r, (fn, arg) in enumerate(zip(term.functions, term.args)):
        if fn is None:
            continue
        for t in range(len(q)):
            val, grad = _eval_function(fn, qj[t, list(arg)])
            theta[t, r] = val
            for k, a in enumerate(arg):
                fq[t, r, a] = grad[k]
    return theta, fq


def _opensim_hdot_term(model: NimbleModel, q: np.ndarray, qd: np.ndarray,
                       funcs: list[tuple[np.ndarray, np.ndarray]] | None = None) -> np.ndarray:
    """Generalized forces (ndof,) that Simbody's FunctionBased mobilizer adds to the exact
    inverse dynamics of CustomJoints, at positions q / speeds qd (skeleton posed at q).

    Simbody (MobilizedBody::FunctionBasedImpl::buildHdot) differentiates the axes
    W = [a0, R1 a1, R1 R2 a2] of the body-fixed rotation sequence with the angular velocity of
    *mobilities* 0 and 0..1 instead of that of *rotations* 1 and 1..2. For a one-mobility joint
    whose three rotations all follow that mobility (Rajagopal's walker knee) the child's angular
    acceleration gains dalpha = (V1 - w1) x W1 thd1 + (V2 - w12) x W2 thd2 (in F), quadratic in
    the knee speed. This returns sum_b J_b^T [I_b dalpha; m_b dalpha x (c_b - o_M)] over the
    bodies the joint moves: what OpenSim's ID / SO add to the exact dynamics.
    """
    skel = model.skeleton
    tau = np.zeros(q.shape[0])
    for k_term, term in enumerate(model.custom_joint_terms):
        u = qd[list(term.dofs)]
        if not np.any(u):
            continue
        if funcs is None:
            theta, fq = (x[0] for x in _custom_joint_functions(term, q[None]))
        else:
            theta, fq = funcs[k_term]
        a0, a1, a2 = term.axes[:, 0], term.axes[:, 1], term.axes[:, 2]
        r1 = _rot(theta[0], a0)
        r12 = r1 @ _rot(theta[1], a1)
        w = np.column_stack([a0, r1 @ a1, r12 @ a2])
        h = w @ fq  # (3, N) angular part of H in F
        u1 = u.copy()
        u1[1:] = 0.0
        u2 = u.copy()
        if len(u) > 2:
            u2[2] = 0.0
        v1, v2 = h @ u1, h @ u2
        thd = fq @ u
        w1 = w[:, 0] * thd[0]
        w12 = w1 + w[:, 1] * thd[1]
        dalpha_f = _cross(v1 - w1, w[:, 1]) * thd[1] + _cross(v2 - w12, w[:, 2]) * thd[2]
        if not np.any(dalpha_f):
            continue
        tf_parent = skel.getBodyNode(term.parent_body).getWorldTransform()
        dalpha = tf_parent.rotation() @ term.r_parent_f @ dalpha_f
        tf_child = skel.getBodyNode(term.child_body).getWorldTransform()
        o_m = tf_child.rotation() @ term.p_child_m + tf_child.translation()
        for name in term.subtree:
            mass, com_local, inertia_local = model.inertia[name]
            node = skel.getBodyNode(name)
            tf = node.getWorldTransform()
            rot = tf.rotation()
            com = rot @ com_local + tf.translation()
            moment = rot @ inertia_local @ rot.T @ dalpha
            force = mass * _cross(dalpha, com - o_m)
            jac = skel.getWorldJacobian(node, com_local)
            tau += jac[:3].T @ moment + jac[3:].T @ force
    return tau


def coordinate_derivatives(time: np.ndarray, q: np.ndarray, method: str = "spline") -> tuple[np.ndarray, np.ndarray]:
    """Velocities and accelerations of coordinate trajectories.

    time (T,) s strictly increasing; q (T, K). method "spline": natural quintic interpolating
    spline (OpenSim ID's GCVSplineSet(5), error variance 0) and its derivatives;
    "speed_spline": speeds from that spline, accelerations from a second such spline through the
    speed samples (what OpenSim's AnalyzeTool / StaticOptimization do); "central": np.gradient
    twice.
    Returns (qd (T, K) per s, qdd (T, K) per s^2).
    """
    time = np.asarray(time, dtype=float)
    q = np.asarray(q, dtype=float)
    if method not in QDD_METHODS:
        raise ValueError(f"qdd_method must be one of {QDD_METHODS}, got {method!r}")
    if len(time) < 6:
        raise InputFormatError(f"need at least 6 frames to differentiate coordinates, got {len(time)}")
    if not np.all(np.diff(time) > 0):
        raise InputFormatError("coordinate time index must be strictly increasing")
    if method == "central":
        qd = np.gradient(q, time, axis=0, edge_order=2)
        return qd, np.gradient(qd, time, axis=0, edge_order=2)
    from scipy.interpolate import make_interp_spline

    natural = [(3, np.zeros(q.shape[1])), (4, np.zeros(q.shape[1]))]
    spl = make_interp_spline(time, q, k=5, bc_type=(natural, natural), axis=0)
    qd = spl(time, 1)
    if method == "speed_spline":
        return qd, make_interp_spline(time, qd, k=5, bc_type=(natural, natural), axis=0)(time, 1)
    return qd, spl(time, 2)


def grf_on_times(grf: GroundForces, time: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """GroundForces (force, cop, torque (T, 2, 3)) linearly interpolated onto `time` (s).

    Raises InputFormatError when `time` reaches outside the force data by more than 1e-6 s.
    """
    gt = np.asarray(grf.time, dtype=float)
    if len(gt) == len(time) and np.allclose(gt, time, atol=1e-9, rtol=0):
        return grf.force, grf.cop, grf.torque
    if time[0] < gt[0] - 1e-6 or time[-1] > gt[-1] + 1e-6:
        raise InputFormatError(
            f"ground forces cover {gt[0]:.4f}-{gt[-1]:.4f} s but the coordinates need {time[0]:.4f}-{time[-1]:.4f} s")
    out = []
    for arr in (grf.force, grf.cop, grf.torque):
        flat = np.asarray(arr, dtype=float).reshape(len(gt), -1)
        res = np.stack([np.interp(time, gt, flat[:, k]) for k in range(flat.shape[1])], axis=1)
        out.append(res.reshape((len(time),) + arr.shape[1:]))
    return out[0], out[1], out[2]


def inverse_dynamics_arrays(
    model: NimbleModel, q: np.ndarray, qd: np.ndarray, qdd: np.ndarray,
    force: np.ndarray | None = None, cop: np.ndarray | None = None, torque: np.ndarray | None = None,
    *, bias: str = "opensim",
) -> np.ndarray:
    """Generalized forces (T, ndof) in nimble DOF order from nimble-ordered q, qd, qdd (T, ndof).

    bias: "opensim" adds Simbody's CustomJoint velocity term (`_opensim_hdot_term`), "exact"
    keeps nimble's exact rigid-body dynamics.
    Returns (T, ndof + n_attached): nimble DOFs, then the coupled coordinate of each attached
    body (`model.attached[k].dependent`, e.g. knee_angle_r_beta) as OpenSim's ID reports it.

    force, cop, torque: (T, 2, 3) ground loads on feet [r, l] in ground (N, m, N m) or None.
    """
    skel = model.skeleton
    n = q.shape[0]
    tau = np.empty_like(q)
    bodies = [skel.getBodyNode(model.foot_bodies[s]) for s in FEET]
    skel.clearExternalForces()
    loaded = None if force is None else np.any(np.abs(force) > 0, axis=2) | np.any(np.abs(torque) > 0, axis=2)
    if bias not in BIAS_MODES:
        raise ValueError(f"bias must be one of {BIAS_MODES}, got {bias!r}")
    opensim_bias = bias == "opensim" and bool(model.custom_joint_terms)
    paths = [_attached_path(body, q, qd, qdd) for body in model.attached]
    beta_tau = np.zeros((n, len(model.attached)))
    funcs = [_custom_joint_functions(term, q) for term in model.custom_joint_terms] if opensim_bias else []
    for t in range(n):
        skel.setPositions(q[t])
        skel.setVelocities(qd[t])
        tau_t = skel.getInverseDynamics(qdd[t])
        if opensim_bias:
            tau_t = tau_t + _opensim_hdot_term(model, q[t], qd[t], [(th[t], fq[t]) for th, fq in funcs])
        for k, (body, path) in enumerate(zip(model.attached, paths)):
            term, tau_beta = _attached_wrench_term(model, body, qd[t], qdd[t], path, t)
            tau_t = tau_t + term
            beta_tau[t, k] = tau_beta
        if loaded is not None:
            for i, body in enumerate(bodies):
                if not loaded[t, i]:
                    continue
                tf = body.getWorldTransform()
                local = tf.rotation().T @ (cop[t, i] - tf.translation())
                jac = skel.getWorldJacobian(body, local)  # (6, ndof): angular rows 0-2, linear 3-5
                tau_t = tau_t - jac[3:].T @ force[t, i] - jac[:3].T @ torque[t, i]
        tau[t] = tau_t
    return np.concatenate([tau, beta_tau], axis=1)


def inverse_dynamics(
    model_osim: str | Path | NimbleModel | None,
    coordinates: pd.DataFrame,
    grf: GroundForces | None,
    *,
    qdd_method: str = "spline",
    bias: str = "opensim",
    derivatives: Mapping[str, pd.DataFrame] | None = None,
) -> pd.DataFrame:
    """Net generalized forces of every frame from coordinates and ground forces, in one batch.

    model_osim: scaled .osim path (or a loaded NimbleModel). coordinates: DataFrame, index time
    (s, strictly increasing), columns coordinate names or state paths, rad / m (the frame's own
    rows are the output rows; pass it already filtered). grf: ground loads on feet [r, l]
    applied to calcn_r / calcn_l (linearly interpolated onto the coordinate times), or None.
    qdd_method: "spline" (OpenSim ID's differentiation), "speed_spline" (OpenSim SO's) or "central"
    (see module docstring).
    bias: "opensim" (default) reproduces OpenSim's velocity terms of CustomJoints such as the
    walker knee, "exact" uses exact rigid-body dynamics (see module docstring).
    derivatives: optional {"qd": DataFrame, "qdd": DataFrame} (same index and columns as the
    coordinates) to bypass differentiation.
    Returns DataFrame (T x coordinates in OpenSim model order: nimble's DOFs plus the coupled
    coordinates of attached bodies such as knee_angle_r_beta, as OpenSim's ID reports them): N m
    for rotational coordinates, N for translational ones; attrs: "units", "labels" (OpenSim ID
    labels, e.g. `hip_flexion_r_moment`), "qdd_method", "bias", "locked", "missing" (OpenSim
    coordinates without a column).
    """
    model = model_osim if isinstance(model_osim, NimbleModel) else NimbleModel.load(model_osim)
    if not isinstance(coordinates, pd.DataFrame) or len(coordinates) == 0:
        raise InputFormatError("coordinates must be a non-empty DataFrame (index time s)", model.path)
    time = np.asarray(coordinates.index, dtype=float)
    q = model.positions(coordinates)
    if derivatives is not None:
        qd = model.positions(derivatives["qd"])
        qdd = model.positions(derivatives["qdd"])
        for k, d in enumerate(model.dofs):  # positions() fills absent columns with defaults
            if d not in [coordinate_name(str(c)) for c in derivatives["qd"].columns] or d in model.locked:
                qd[:, k] = 0.0
                qdd[:, k] = 0.0
        method = "given"
    else:
        qd, qdd = coordinate_derivatives(time, q, qdd_method)
        method = qdd_method
    locked_idx = [k for k, d in enumerate(model.dofs) if d in model.locked]
    qd[:, locked_idx] = 0.0
    qdd[:, locked_idx] = 0.0
    if grf is not None:
        force, cop, torque = grf_on_times(grf, time)
    else:
        force = cop = torque = None
    tau = inverse_dynamics_arrays(model, q, qd, qdd, force, cop, torque, bias=bias)
    if not np.all(np.isfinite(tau)):
        raise SolverError("nimble inverse dynamics produced non-finite generalized forces", model.path)
    columns = list(model.dofs) + [b.dependent for b in model.attached]
    order = [c for c in model.coordinates if c in columns]
    idx = [columns.index(c) for c in order]
    df = pd.DataFrame(tau[:, idx], index=pd.Index(time, name="time"), columns=order)
    df.attrs["units"] = {c: ("N" if c in model.translational else "N m") for c in order}
    df.attrs["labels"] = {c: f"{c}_{'force' if c in model.translational else 'moment'}" for c in order}
    df.attrs["qdd_method"] = method
    df.attrs["bias"] = bias
    df.attrs["locked"] = [c for c in order if c in model.locked]
    df.attrs["missing"] = [c for c in model.coordinates if c not in columns]
    return df


__all__ = [
    "QDD_METHODS", "NimbleModel", "coordinate_derivatives", "grf_on_times", "inverse_dynamics",
    "inverse_dynamics_arrays", "quiet_native_output",
]
