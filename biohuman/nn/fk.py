"""Differentiable forward kinematics of an OpenSim model (Rajagopal2015 by default) in torch:
coordinates -> joint centres in ground, scaled to the subject.

The kinematic tree is read once from OpenSim (joint types, offset frames, CustomJoint axes and
functions) into plain tensors; each frame is then posed with batched matrix products, so joint
losses and MPJPE can back-propagate into predicted coordinates. Conventions follow OpenSim:

- a joint's centre is the origin of its child offset frame M in ground (as
  `biohuman.dynamics.kinematics.joint_centers`), named with `JOINT_ALIASES` (`knee_r`, `lumbar`, ...);
- CustomJoint: body-fixed successive rotations about its three rotation axes, translations along
  its three translation axes expressed in the parent offset frame F; PinJoint: rotation about F's z;
  UniversalJoint: about x then y;
- coupled coordinates (`knee_angle_r_beta`) follow their CoordinateCouplerConstraint; non-linear
  functions (SimmSpline) are tabulated densely and interpolated linearly;
- scaling, as OpenSim's ScaleTool: offset-frame locations are scaled by the scale factors of the
  body they sit on, CustomJoint translation functions by the parent body's factors; frame
  orientations and rotation axes do not change.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from biohuman.errors import ConfigError

TABLE_POINTS = 2001
"""Samples of each tabulated (spline) function over its coordinate range."""
TABLE_MARGIN = 1.0
"""Extra range (rad) tabulated on each side of a coordinate's range; beyond it values are clamped."""


# ------------------------------------------------------------------------------------------------
# Model description (plain numpy, read from OpenSim once)
# ------------------------------------------------------------------------------------------------


@dataclass
class _Fn:
    """A scalar function of one coordinate: kind 'linear' (slope, intercept), 'constant' (value),
    or 'table' (x0, dx, values)."""

    kind: str
    coord: str | None = None
    slope: float = 0.0
    intercept: float = 0.0
    x0: float = 0.0
    dx: float = 1.0
    values: np.ndarray | None = None


@dataclass
class _Joint:
    name: str  # friendly name
    kind: str  # custom | pin | universal | weld
    parent: int  # body index, -1 = ground
    child: int
    parent_R: np.ndarray  # (3, 3) offset frame F in parent body
    parent_t: np.ndarray  # (3,)
    child_R: np.ndarray  # (3, 3) offset frame M in child body
    child_t: np.ndarray
    rot_axes: list[np.ndarray] = field(default_factory=list)  # custom: 3 axes; pin/universal: implied
    rot_fns: list[_Fn] = field(default_factory=list)
    trans_axes: list[np.ndarray] = field(default_factory=list)
    trans_fns: list[_Fn] = field(default_factory=list)


@dataclass
class KinematicTree:
    """What forward kinematics needs from an OpenSim model (generic, unscaled)."""

    bodies: list[str]
    joints: list[_Joint]
    coordinates: list[str]  # independent coordinates (not locked-by-coupler), model order
    defaults: dict[str, float]
    rotational: list[str]
    joint_names: list[str]  # friendly names in the model's JointSet order


def _euler_xyz(a: Sequence[float]) -> np.ndarray:
    """Rotation matrix of body-fixed X-Y-Z Euler angles (OpenSim frame orientation)."""
    cx, cy, cz = np.cos(a)
    sx, sy, sz = np.sin(a)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rx @ ry @ rz


def _vec(v) -> np.ndarray:  # noqa: ANN001 - opensim Vec3
    return np.array([v.get(0), v.get(1), v.get(2)], dtype=np.float64)


@functools.lru_cache(maxsize=4)
def kinematic_tree(model_osim: str | None = None) -> KinematicTree:
    """Read the kinematic tree of an .osim model (None: generic Rajagopal2015). Cached."""
    from biohuman.dynamics.kinematics import JOINT_ALIASES
    from biohuman.osim.model import coordinate_couplers, load_model, opensim

    osim = opensim()
    model = load_model(model_osim)
    state = model.initSystem()
    bs = model.getBodySet()
    bodies = [bs.get(i).getName() for i in range(bs.getSize())]
    index = {b: i for i, b in enumerate(bodies)}
    cs = model.getCoordinateSet()
    ranges = {cs.get(i).getName(): (cs.get(i).getRangeMin(), cs.get(i).getRangeMax()) for i in range(cs.getSize())}
    defaults = {cs.get(i).getName(): float(cs.get(i).getDefaultValue()) for i in range(cs.getSize())}
    rotational = [cs.get(i).getName() for i in range(cs.getSize()) if cs.get(i).getMotionType() != 2]

    # coupled coordinates: dependent -> (independent, function)
    couplers: dict[str, tuple[str, object]] = {}
    for c in coordinate_couplers(model):
        if not c.enforced:
            continue
        if len(c.independent) != 1:
            raise ConfigError(f"the coupler of {c.dependent} has {len(c.independent)} independent coordinates; "
                              "only 1 supported", model_osim)
        couplers[c.dependent] = (c.independent[0], c.function)

    def tabulate(fn, coord: str) -> _Fn:  # noqa: ANN001 - opensim Function
        """Express fn(coord) as a function of an independent coordinate (composing couplers)."""
        inner = None
        base = coord
        if coord in couplers:
            base, inner = couplers[coord]
        lin = osim.LinearFunction.safeDownCast(fn)
        if inner is None and lin is not None:
            return _Fn("linear", base, slope=lin.getSlope(), intercept=lin.getIntercept())
        const = osim.Constant.safeDownCast(fn)
        if const is not None:
            return _Fn("constant", None, intercept=const.getValue())
        lo, hi = ranges[base]
        x = np.linspace(lo - TABLE_MARGIN, hi + TABLE_MARGIN, TABLE_POINTS)
        vec = osim.Vector(1, 0.0)
        vals = np.empty_like(x)
        for k, xv in enumerate(x):
            v = xv
            if inner is not None:
                vec.set(0, float(v))
                v = inner.calcValue(vec)
            vec.set(0, float(v))
            vals[k] = fn.calcValue(vec)
        return _Fn("table", base, x0=float(x[0]), dx=float(x[1] - x[0]), values=vals)

    joints: list[_Joint] = []
    js = model.getJointSet()
    for i in range(js.getSize()):
        j = js.get(i)
        pf, cf = j.getParentFrame(), j.getChildFrame()
        parent_name, child_name = pf.findBaseFrame().getName(), cf.findBaseFrame().getName()
        frames = []
        for f in (pf, cf):
            off = osim.PhysicalOffsetFrame.safeDownCast(f)
            if off is None:
                frames.append((np.eye(3), np.zeros(3)))
            else:
                frames.append((_euler_xyz(_vec(off.get_orientation())), _vec(off.get_translation())))
        cls = j.getConcreteClassName()
        jt = _Joint(JOINT_ALIASES.get(j.getName(), j.getName()), "", index.get(parent_name, -1), index[child_name],
                    frames[0][0], frames[0][1], frames[1][0], frames[1][1])
        coords = [j.get_coordinates(k).getName() for k in range(j.numCoordinates())]
        if cls == "CustomJoint":
            jt.kind = "custom"
            st = osim.CustomJoint.safeDownCast(j).getSpatialTransform()
            for a in range(6):
                ta = st.getTransformAxis(a)
                names = ta.getCoordinateNamesInArray()
                cn = [names.get(n) for n in range(names.getSize())]
                if len(cn) > 1:
                    raise ConfigError(f"joint {j.getName()} axis {a} depends on {len(cn)} coordinates", model_osim)
                fn = ta.get_function()
                f = tabulate(fn, cn[0]) if cn else _Fn("constant", None,
                                                         intercept=osim.Constant.safeDownCast(fn).getValue())
                axis = _vec(ta.getAxis())
                (jt.rot_axes if a < 3 else jt.trans_axes).append(axis / np.linalg.norm(axis))
                (jt.rot_fns if a < 3 else jt.trans_fns).append(f)
        elif cls == "PinJoint":
            jt.kind = "custom"
            jt.rot_axes = [np.array([0.0, 0.0, 1.0])]
            jt.rot_fns = [_Fn("linear", coords[0], slope=1.0)]
        elif cls == "UniversalJoint":
            jt.kind = "custom"
            jt.rot_axes = [np.array([1.0, 0.0, 0.0]), np.array([0.0, 1.0, 0.0])]
            jt.rot_fns = [_Fn("linear", coords[0], slope=1.0), _Fn("linear", coords[1], slope=1.0)]
        elif cls == "WeldJoint":
            jt.kind = "custom"
        else:
            raise ConfigError(f"joint {j.getName()}: {cls} is not supported by the torch forward kinematics",
                              model_osim)
        joints.append(jt)
    # topological order: a joint's parent body must be posed before it
    done = {-1}
    ordered: list[_Joint] = []
    pending = list(joints)
    while pending:
        ready = [jt for jt in pending if jt.parent in done]
        if not ready:
            raise ConfigError("kinematic tree has a loop or a body without a joint", model_osim)
        for jt in ready:
            ordered.append(jt)
            done.add(jt.child)
            pending.remove(jt)
    indep = [c for c in defaults if c not in couplers]
    del state
    return KinematicTree(bodies=bodies, joints=ordered, coordinates=indep, defaults=defaults, rotational=rotational,
                         joint_names=[jt.name for jt in joints])


# ------------------------------------------------------------------------------------------------
# torch layer
# ------------------------------------------------------------------------------------------------


def axis_angle_matrix(axis: torch.Tensor, angle: torch.Tensor) -> torch.Tensor:
    """Rotation matrices (..., 3, 3) about a fixed unit axis (3,) by angles (...) (rad), Rodrigues."""
    k = torch.zeros(3, 3, dtype=angle.dtype, device=angle.device)
    k[0, 1], k[0, 2], k[1, 2] = -axis[2], axis[1], -axis[0]
    k = k - k.T
    s, c = torch.sin(angle)[..., None, None], torch.cos(angle)[..., None, None]
    eye = torch.eye(3, dtype=angle.dtype, device=angle.device)
    return eye + s * k + (1 - c) * (k @ k)


class ForwardKinematics(nn.Module):
    """Coordinates -> joint centres (..., J, 3) in ground (m), differentiable.

    model_osim: generic model (None: Rajagopal2015); joints: friendly joint names to return
    (default: every joint except the patellae, the set of the dataset's `joint` dim).
    """

    def __init__(self, model_osim: str | Path | None = None, joints: Sequence[str] | None = None) -> None:
        super().__init__()
        tree = kinematic_tree(None if model_osim is None else str(model_osim))
        self.tree = tree
        self.bodies = list(tree.bodies)
        names = [jt.name for jt in tree.joints]
        if joints is None:
            joints = [n for n in tree.joint_names if not n.startswith("patella")]
        unknown = [j for j in joints if j not in names]
        if unknown:
            raise ConfigError(f"joints {unknown} are not in the model (joints: {names})")
        self.joints = list(joints)
        self._out = [names.index(j) for j in self.joints]
        self.coordinates = list(tree.coordinates)
        self.rotational = [c for c in tree.rotational if c in self.coordinates]
        dt = torch.get_default_dtype()
        for k, jt in enumerate(tree.joints):
            self.register_buffer(f"pR{k}", torch.tensor(jt.parent_R, dtype=dt), persistent=False)
            self.register_buffer(f"pt{k}", torch.tensor(jt.parent_t, dtype=dt), persistent=False)
            self.register_buffer(f"cR{k}", torch.tensor(jt.child_R, dtype=dt), persistent=False)
            self.register_buffer(f"ct{k}", torch.tensor(jt.child_t, dtype=dt), persistent=False)
            for kind, fns in (("r", jt.rot_fns), ("t", jt.trans_fns)):
                for a, f in enumerate(fns):
                    if f.kind == "table":
                        self.register_buffer(f"tab{k}{kind}{a}", torch.tensor(f.values, dtype=dt), persistent=False)

    # -- helpers ----------------------------------------------------------------------------------

    def _eval(self, f: _Fn, name: str, q: Mapping[str, torch.Tensor], like: torch.Tensor) -> torch.Tensor:
        if f.kind == "constant":
            return torch.full_like(like, f.intercept)
        x = q[f.coord] if f.coord in q else torch.full_like(like, self.tree.defaults[f.coord])
        if f.kind == "linear":
            return f.slope * x + f.intercept
        table = getattr(self, name)
        u = ((x - f.x0) / f.dx).clamp(0, table.numel() - 1.000001)
        i = u.detach().floor().long()
        w = u - i
        return table[i] * (1 - w) + table[i + 1] * w

    def scale_from_height(self, height_m: torch.Tensor) -> torch.Tensor:
        """Uniform per-body scale (..., n_bodies, 3) of a subject of this height (m) relative to the
        generic model's stature (`biohuman.motion.library.GENERIC_HEIGHT_M`)."""
        from biohuman.motion.library import GENERIC_HEIGHT_M

        s = torch.as_tensor(height_m, dtype=torch.get_default_dtype()) / GENERIC_HEIGHT_M
        return s[..., None, None].expand(*s.shape, len(self.bodies), 3)

    def scale_from_factors(self, factors: Mapping[str, Sequence[float]]) -> torch.Tensor:
        """Per-body scale (n_bodies, 3) from a name -> (sx, sy, sz) mapping (e.g. a trial's
        `scale_factor`); bodies not listed keep 1."""
        out = torch.ones(len(self.bodies), 3)
        for i, b in enumerate(self.bodies):
            if b in factors:
                out[i] = torch.as_tensor(np.asarray(factors[b], dtype=np.float64), dtype=out.dtype)
        return out

    # -- forward ----------------------------------------------------------------------------------

    def forward(self, coords: Mapping[str, torch.Tensor], *, scale: torch.Tensor | None = None,
                pelvis_rotation: torch.Tensor | None = None,
                pelvis_translation: torch.Tensor | None = None) -> torch.Tensor:
        """Joint centres (..., J, 3) in ground, m, in `self.joints` order.

        coords: coordinate name -> (...) values (rad / m); missing ones take the model default,
        coupled ones follow their coupler. scale: (..., n_bodies, 3) per-body factors in
        `self.bodies` order (None: generic size). pelvis_rotation (..., 3, 3) / pelvis_translation
        (..., 3) replace the pelvis coordinates (rotation of the pelvis frame in ground, and its
        origin) when given.
        """
        like = next(iter(coords.values())) if coords else (
            pelvis_translation[..., 0] if pelvis_translation is not None else None)
        if like is None:
            raise ConfigError("forward kinematics needs at least one coordinate or a pelvis pose")
        shape = like.shape
        dt, dev = like.dtype, like.device
        eye = torch.eye(3, dtype=dt, device=dev).expand(*shape, 3, 3)
        zero = torch.zeros(*shape, 3, dtype=dt, device=dev)
        if scale is None:
            scale = torch.ones(*shape, len(self.bodies), 3, dtype=dt, device=dev)
        else:
            scale = scale.to(dtype=dt, device=dev).expand(*shape, len(self.bodies), 3)
        pose: dict[int, tuple[torch.Tensor, torch.Tensor]] = {-1: (eye, zero)}
        centres = []
        for k, jt in enumerate(self.tree.joints):
            R_gp, p_gp = pose[jt.parent]
            s_par = scale[..., jt.parent, :] if jt.parent >= 0 else torch.ones_like(zero)
            s_chi = scale[..., jt.child, :]
            pR, pt = getattr(self, f"pR{k}"), getattr(self, f"pt{k}")
            cR, ct = getattr(self, f"cR{k}"), getattr(self, f"ct{k}")
            R_gf = R_gp @ pR.to(dt)
            p_gf = p_gp + (R_gp @ (s_par * pt.to(dt))[..., None])[..., 0]
            if jt.parent == -1 and pelvis_rotation is not None:
                R_fm = pelvis_rotation.to(dt)
            else:
                R_fm = eye
                for a, (axis, f) in enumerate(zip(jt.rot_axes, jt.rot_fns)):
                    ang = self._eval(f, f"tab{k}r{a}", coords, like)
                    R_fm = R_fm @ axis_angle_matrix(torch.as_tensor(axis, dtype=dt, device=dev), ang)
            if jt.parent == -1 and pelvis_translation is not None:
                p_fm = pelvis_translation.to(dt)
            else:
                p_fm = zero
                for a, (axis, f) in enumerate(zip(jt.trans_axes, jt.trans_fns)):
                    ax = torch.as_tensor(axis, dtype=dt, device=dev)
                    s_ax = (s_par * ax.abs()).sum(-1)  # the parent's factor along this axis
                    p_fm = p_fm + (s_ax * self._eval(f, f"tab{k}t{a}", coords, like))[..., None] * ax
            R_gm = R_gf @ R_fm
            p_gm = p_gf + (R_gf @ p_fm[..., None])[..., 0]
            centres.append(p_gm)
            R_gc = R_gm @ cR.to(dt).transpose(-1, -2)
            p_gc = p_gm - (R_gc @ (s_chi * ct.to(dt))[..., None])[..., 0]
            pose[jt.child] = (R_gc, p_gc)
        out = torch.stack(centres, dim=-2)
        return out[..., self._out, :]
