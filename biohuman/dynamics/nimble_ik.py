"""Fast inverse kinematics with nimblephysics: per-frame weighted marker fit, warm started.

Solves, frame by frame, the problem OpenSim's InverseKinematicsTool solves (marker tasks only,
constraints enforced exactly):

    min_q  sum_i w_i |x_i(q) - m_i|^2     subject to  lo <= q <= hi  (clamped coordinates)

x_i(q): model marker i in ground (nimble forward kinematics of the scaled .osim parsed by
`NimbleModel.load`, equal to OpenSim's to 1e-15 m), m_i: measured marker, w_i: OpenSim's IK
marker weights (`biohuman.osim.ik.ik_marker_weights`: 1 for skin markers, overrides by name).
Locked coordinates stay at their default value, coupled coordinates (Rajagopal's
`knee_angle_*_beta`) are returned as their coupler function of the independent coordinate,
which is what OpenSim's IK does with `constraint_weight = inf`. Markers missing (NaN) in a
frame are left out of that frame's sum.

Solver: projected Levenberg-Marquardt with Marquardt scaling on the free coordinates. Marker
Jacobians are nimble's world Jacobians at each marker (`Skeleton.getWorldJacobian(body,
offset)`; nimble 0.10 exposes no batched marker Jacobian). Bounds: an active set (a coordinate
at a bound whose gradient pushes outward is held there) and each step projected onto the box.
The first frame starts from the model's default pose with several pelvis headings
(`restarts`), the root alone first, and rotations a fit turned by whole turns are brought back
near their default; each later frame starts from the previous solution extrapolated at constant
velocity (coordinates that no present marker depends on keep the previous value instead).
Iteration stops when the largest coordinate step is below `tolerance` (rad or m) or the cost
stops falling (relative decrease < 1e-12). A frame without any marker holds the previous pose.

Accuracy vs OpenSim: OpenSim's IPOPT-based assembler at accuracy 1e-6 stops within ~0.15 deg
of the optimum (see `biohuman.osim.ik`); this solver converges to the optimum itself, so the
two differ by OpenSim's own early stopping, mostly in flat directions (forearm rotation,
shoulder rotation with a straight elbow).
"""

from __future__ import annotations

import json
import math
import time as _time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from biohuman.dynamics.nimble_id import NimbleModel
from biohuman.errors import MarkerError, SolverError
from biohuman.io.atomic import atomic_write_text
from biohuman.io.trc import MarkerData, read_trc
from biohuman.osim._tools import time_range_of, write_storage
from biohuman.osim.ik import IKResult, ik_marker_weights
from biohuman.osim.model import opensim, single_couplers

SETTINGS_SUFFIX = "_ik_settings.json"
"""The settings record written beside the .mot (`<stem>_ik_settings.json`), IKResult.setup."""


@dataclass
class _Problem:
    """The marker-fit problem on one nimble skeleton.

    names: tracked markers (M); body_index (M,) index into `nodes` (the marked bodies);
    offsets (M, 3) marker position in its body frame (m); sqrt_w (M,) square roots of the
    weights; free (n,) nimble DOF indices that are solved; lo, hi (n,) their bounds (rad / m,
    +-inf when not clamped); q_base (ndof,) full nimble position with locked DOFs at their
    default; root (k,) positions in `free` of the root joint's DOFs; heading: position in
    `free` of the pelvis heading DOF (vertical axis) or None; nimble_markers: (body node,
    offset) pairs in nimble's marker format.
    """

    model: NimbleModel
    names: list[str]
    nodes: list
    body_index: np.ndarray
    offsets: np.ndarray
    sqrt_w: np.ndarray
    free: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    q_base: np.ndarray
    root: np.ndarray
    heading: int | None
    nimble_markers: list = field(default_factory=list)

    def __post_init__(self) -> None:
        self.nimble_markers = [(self.nodes[b], self.offsets[i]) for i, b in enumerate(self.body_index)]

    def full(self, x: np.ndarray) -> np.ndarray:
        """Full nimble position vector (ndof,) from free coordinates x (n,)."""
        q = self.q_base.copy()
        q[self.free] = x
        return q

    def markers(self, x: np.ndarray) -> np.ndarray:
        """Model marker positions (M, 3) in ground (m) at free coordinates x."""
        skel = self.model.skeleton
        skel.setPositions(self.full(x))
        return skel.getMarkerWorldPositions(self.nimble_markers).reshape(-1, 3)

    def markers_and_jacobian(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Model markers (M, 3) and their Jacobian (M, 3, n) wrt the free coordinates."""
        skel = self.model.skeleton
        skel.setPositions(self.full(x))
        pos = skel.getMarkerWorldPositions(self.nimble_markers).reshape(-1, 3)
        # world Jacobian of each marker point: rows 0-2 angular, 3-5 linear (nimble's order)
        jac = np.stack([skel.getWorldJacobian(node, off) for node, off in self.nimble_markers])
        return pos, jac[:, 3:][:, :, self.free]


@dataclass
class _FrameFit:
    """Outcome of one frame's fit: free coordinates, weighted cost (m^2), iterations, converged."""

    x: np.ndarray
    cost: float
    iterations: int
    converged: bool


def _marker_frames(om, names: Sequence[str], model: NimbleModel) -> tuple[list[str], np.ndarray]:  # noqa: ANN001
    """(nimble body name, offset (3,) m in that body's frame) per marker, from the OpenSim model.

    Markers on bodies nimble merged into an ancestor are re-expressed in that ancestor at the
    default pose (rigid merge); markers on bodies that move with a coupled coordinate (which
    nimble drops, e.g. Rajagopal's patellae) cannot be tracked: MarkerError naming them.
    """
    kept = {model.skeleton.getBodyNode(i).getName() for i in range(model.skeleton.getNumBodyNodes())}
    ms = om.getMarkerSet()
    state = None
    bodies, offsets, bad = [], [], []
    for n in names:
        mk = ms.get(n)
        frame = mk.getParentFrame()
        body = frame.findBaseFrame().getName()
        loc = mk.get_location()
        if body in kept:
            # marker location in its base body: parent frame's fixed transform, no state needed
            tf = frame.findTransformInBaseFrame()
            rot, p = tf.R(), tf.p()
            v = np.array([loc.get(0), loc.get(1), loc.get(2)])
            r = np.array([[rot.get(i, j) for j in range(3)] for i in range(3)])
            offsets.append(r @ v + np.array([p.get(0), p.get(1), p.get(2)]))
            bodies.append(body)
            continue
        anc = model.merged.get(body)
        if anc is None:
            bad.append(f"{n} (on {body})")
            continue
        if state is None:
            state = om.initSystem()  # default pose: merged bodies are rigid in their ancestor there
        p = mk.findLocationInFrame(state, om.getBodySet().get(anc))
        offsets.append(np.array([p.get(0), p.get(1), p.get(2)]))
        bodies.append(anc)
    if bad:
        raise MarkerError(f"markers on bodies nimble does not model cannot be tracked (give them weight 0): "
                          f"{', '.join(bad)}", model.path)
    return bodies, np.asarray(offsets, dtype=float).reshape(-1, 3)


def _build_problem(model: NimbleModel, weights: Mapping[str, float]) -> _Problem:
    """Set up the marker-fit problem for the tracked markers `weights` (name -> weight > 0)."""
    om = model._opensim_model
    cs = om.getCoordinateSet()
    names = list(weights)
    body_names, offsets = _marker_frames(om, names, model)
    skel = model.skeleton
    unique = sorted(set(body_names))
    nodes = [skel.getBodyNode(b) for b in unique]
    body_index = np.array([unique.index(b) for b in body_names], dtype=int)
    free = np.array([k for k, d in enumerate(model.dofs) if d not in model.locked], dtype=int)
    lo = np.full(len(free), -np.inf)
    hi = np.full(len(free), np.inf)
    for j, k in enumerate(free):
        c = cs.get(model.dofs[k])
        if c.get_clamped():
            lo[j], hi[j] = float(c.getRangeMin()), float(c.getRangeMax())
    q_base = np.array([model.defaults.get(d, 0.0) for d in model.dofs], dtype=float)
    root_joint = skel.getRootJoint()
    root_dofs = {root_joint.getDofName(i) for i in range(root_joint.getNumDofs())}
    root = np.array([j for j, k in enumerate(free) if model.dofs[k] in root_dofs], dtype=int)
    heading = _heading_dof(model, free, root)
    return _Problem(model=model, names=names, nodes=nodes, body_index=body_index, offsets=offsets,
                    sqrt_w=np.sqrt(np.array([weights[n] for n in names], dtype=float)), free=free, lo=lo, hi=hi,
                    q_base=q_base, root=root, heading=heading)


def _heading_dof(model: NimbleModel, free: np.ndarray, root: np.ndarray) -> int | None:
    """Position in `free` of the root rotation DOF that turns the body about the vertical (the
    gravity axis) at the default pose, found numerically; None if there is none."""
    skel = model.skeleton
    up = -model.gravity / (np.linalg.norm(model.gravity) or 1.0)
    q0 = np.array([model.defaults.get(d, 0.0) for d in model.dofs], dtype=float)
    skel.setPositions(q0)
    root_node = skel.getRootBodyNode()
    jw = skel.getWorldJacobian(root_node)[:3]
    best, best_val = None, 0.9
    for j in root:
        w = jw[:, free[j]]
        val = abs(float(w @ up)) / (np.linalg.norm(w) or 1.0)
        if val > best_val:
            best, best_val = int(j), val
    return best


def _lm(prob: _Problem, x0: np.ndarray, target: np.ndarray, present: np.ndarray, *, max_iter: int,
        tolerance: float, subset: np.ndarray | None = None, fallback: np.ndarray | None = None,
        lam0: float = 1e-3) -> _FrameFit:
    """Projected Levenberg-Marquardt on one frame.

    target (M, 3) measured markers (m), present (M,) bool; subset: positions in `free` to move
    (the others held), default all; fallback (n,): values for the coordinates that no present
    marker depends on (they keep these instead of x0, e.g. the previous frame's rather than an
    extrapolation). Returns the fit at the best point found.
    """
    sw = prob.sqrt_w[present][:, None]
    tgt = target[present]
    lo, hi = prob.lo, prob.hi
    x = np.clip(x0, lo, hi)
    move = np.arange(len(x)) if subset is None else subset
    pos, jac = prob.markers_and_jacobian(x)
    if fallback is not None:
        col = np.abs(jac[present]).max(axis=(0, 1))  # (n,) largest marker sensitivity per coordinate
        unseen = col <= 1e-12
        x[unseen] = np.clip(fallback[unseen], lo[unseen], hi[unseen])  # moves no present marker
    r = (sw * (pos[present] - tgt)).ravel()
    cost = float(r @ r)
    lam = lam0
    it = 0
    converged = False
    while it < max_iter:
        it += 1
        j = (sw[:, :, None] * jac[present]).reshape(-1, len(x))[:, move]
        g = j.T @ r
        h = j.T @ j
        xm = x[move]
        at_lo = (xm <= lo[move] + 1e-12) & (g > 0)
        at_hi = (xm >= hi[move] - 1e-12) & (g < 0)
        act = ~(at_lo | at_hi)
        if not act.any():
            converged = True
            break
        ha = h[np.ix_(act, act)]
        ga = g[act]
        d = np.diag(ha).copy()
        floor = 1e-9 * max(float(d.max()), 1e-12)
        d = np.maximum(d, floor)
        accepted = False
        while lam <= 1e10:
            try:
                step = np.linalg.solve(ha + lam * np.diag(d), -ga)
            except np.linalg.LinAlgError:
                lam *= 10.0
                continue
            x_new = x.copy()
            idx = move[act]
            x_new[idx] = np.clip(x[idx] + step, lo[idx], hi[idx])
            pos_new = prob.markers(x_new)
            r_new = (sw * (pos_new[present] - tgt)).ravel()
            cost_new = float(r_new @ r_new)
            if cost_new <= cost:
                accepted = True
                break
            lam *= 10.0
        if not accepted:
            converged = True  # no descent possible: a (bounded) minimum to machine precision
            break
        dx = float(np.max(np.abs(x_new - x)))
        drop = cost - cost_new
        x, cost = x_new, cost_new
        lam = max(lam * 0.1, 1e-9)
        if dx < tolerance or drop <= 1e-12 * max(cost, 1e-30):
            converged = True
            break
        pos, jac = prob.markers_and_jacobian(x)
        r = (sw * (pos[present] - tgt)).ravel()
    return _FrameFit(x=x, cost=cost, iterations=it, converged=converged)


def _first_frame(prob: _Problem, target: np.ndarray, present: np.ndarray, *, restarts: int, max_iter: int,
                 tolerance: float) -> _FrameFit:
    """Fit the first frame from the default pose: for each of `restarts` pelvis headings spread
    over the circle, place the root on the markers' centroid, fit the root alone, then fit all
    coordinates; keep the lowest cost."""
    x_def = prob.q_base[prob.free].copy()
    headings = [0.0] if prob.heading is None else [2 * math.pi * k / max(restarts, 1) for k in range(max(restarts, 1))]
    best: _FrameFit | None = None
    total = 0
    for h in headings:
        x = x_def.copy()
        if prob.heading is not None:
            a = (h + math.pi) % (2 * math.pi) - math.pi  # wrap to [-pi, pi)
            x[prob.heading] = float(np.clip(a, prob.lo[prob.heading], prob.hi[prob.heading]))
        pos = prob.markers(x)
        shift = np.mean(target[present] - pos[present], axis=0)
        trans = [j for j in prob.root if _is_translation(prob, j)]
        if len(trans) == 3:
            # translation DOFs of the root: move the model so the marker centroids coincide
            skel = prob.model.skeleton
            skel.setPositions(prob.full(x))
            jt = skel.getWorldJacobian(skel.getRootBodyNode())[3:][:, prob.free[trans]]
            x[trans] += np.linalg.lstsq(jt, shift, rcond=None)[0]
        root_fit = _lm(prob, x, target, present, max_iter=max_iter, tolerance=tolerance, subset=prob.root)
        fit = _lm(prob, root_fit.x, target, present, max_iter=max_iter, tolerance=tolerance)
        total += root_fit.iterations + fit.iterations
        if best is None or fit.cost < best.cost:
            best = fit
    assert best is not None
    return _FrameFit(x=_unwind(prob, best.x), cost=best.cost, iterations=total, converged=best.converged)


def _unwind(prob: _Problem, x: np.ndarray) -> np.ndarray:
    """Bring rotational coordinates that a fit turned by whole turns back near their default:
    x_j - 2 pi k when that stays within the bounds and leaves every marker where it was (a
    coordinate that also drives translations, like the walker knee's, is left alone). Large LM
    steps in poorly observed directions (shoulder rotation) can otherwise land a turn away."""
    x = x.copy()
    ref = prob.markers(x)
    x_def = prob.q_base[prob.free]
    for j in range(len(x)):
        if _is_translation(prob, j):
            continue
        turns = np.round((x[j] - x_def[j]) / (2 * math.pi))
        if turns == 0:
            continue
        cand = x.copy()
        cand[j] -= 2 * math.pi * turns
        if not (prob.lo[j] <= cand[j] <= prob.hi[j]):
            continue
        if np.max(np.abs(prob.markers(cand) - ref)) < 1e-9:
            x = cand
    return x


def _is_translation(prob: _Problem, j: int) -> bool:
    """True when free DOF j is an OpenSim translational coordinate."""
    return prob.model.dofs[prob.free[j]] in prob.model.translational


def _coupled_values(model: NimbleModel, coords: pd.DataFrame) -> dict[str, np.ndarray]:
    """Values (T,) of the coupler-dependent coordinates: f(independent coordinate) per frame."""
    osim = opensim()
    out = {}
    vec = osim.Vector(1, 0.0)
    for dep, (ind, fn) in single_couplers(model._opensim_model).items():
        if ind not in coords.columns:
            continue
        vals = np.empty(len(coords))
        for t, v in enumerate(coords[ind].to_numpy()):
            vec.set(0, float(v))
            vals[t] = fn.calcValue(vec)
        out[dep] = vals
    return out


def nimble_ik(model_osim: str | Path, markers: MarkerData | str | Path, out_mot: str | Path, *,
              marker_weights: Mapping[str, float] | None = None,
              time_range: Sequence[float] | None = None,
              tolerance: float = 1e-5,
              max_iterations: int = 30,
              first_frame_iterations: int = 200,
              restarts: int = 4,
              extrapolate: bool = True) -> IKResult:
    """Inverse kinematics of `markers` on the scaled `model_osim` with nimblephysics.

    markers: MarkerData (m, NaN = missing) or a TRC path (read with gaps left as NaN).
    out_mot: the coordinates file written (OpenSim storage, `inDegrees=no`: rad and m), with the
    settings record `<stem>_ik_settings.json` beside it (solver settings, weights, per-frame
    iterations summary; `IKResult.setup` points to it: there is no OpenSim setup XML).
    marker_weights: marker -> weight as in `osim.ik.run_ik` (default 1 for the model's skin
    markers present in the window; virtual markers only when named; 0 drops a marker).
    time_range: (start, end) s, default the whole trial. tolerance: stop when the largest
    coordinate step is below it (rad / m; 1e-5 rad = 0.0006 deg). max_iterations: per frame after the first;
    first_frame_iterations and restarts: the first frame's budget (per stage and heading).
    extrapolate: start each frame from the constant-velocity prediction (else the previous pose).

    Returns IKResult with the same fields and units as `run_ik` (coordinates: all model
    coordinates in model order; marker_errors (T x tracked markers) m, NaN where missing;
    marker_rmse, marker_max (T,) m). Raises MarkerError (no trackable marker, markers on bodies
    nimble drops), ConfigError (weights naming unknown markers), SolverError (non-finite result).
    """
    out_mot = Path(out_mot)
    model = NimbleModel.load(model_osim)
    om = model._opensim_model
    if not isinstance(markers, MarkerData):
        markers = read_trc(markers, max_gap_s=None)
    src = markers.source or None
    t0, t1 = time_range_of(markers.time, time_range)
    sel = (markers.time >= t0 - 1e-9) & (markers.time <= t1 + 1e-9)
    if not sel.any():
        raise MarkerError(f"no frames in time range {t0}..{t1} s", src)
    times = markers.time[sel]
    data = markers.xyz[sel]  # (T, M_all, 3)
    present_any = [n for j, n in enumerate(markers.names) if np.isfinite(data[:, j]).all(axis=1).any()]
    weights = ik_marker_weights(om, markers.names, present_any, marker_weights)
    if not weights:
        raise MarkerError(f"no marker of the trial matches a model marker ({model.path.name})", src)
    prob = _build_problem(model, weights)
    cols = [markers.names.index(n) for n in prob.names]
    target_all = data[:, cols]  # (T, M, 3)
    present_all = np.isfinite(target_all).all(axis=2)  # (T, M)

    n_frames = len(times)
    x_out = np.empty((n_frames, len(prob.free)))
    iters = np.zeros(n_frames, dtype=int)
    conv = np.zeros(n_frames, dtype=bool)
    empty = ~present_all.any(axis=1)  # (T,) frames without any tracked marker
    tic = _time.perf_counter()
    first_s = 0.0
    first_k = -1
    x_prev: np.ndarray | None = None
    x_prev2: np.ndarray | None = None
    for t in range(n_frames):
        present = present_all[t]
        if not present.any():
            # nothing to fit: hold the previous pose (or the default), errors are NaN
            x_out[t] = x_prev if x_prev is not None else np.clip(prob.q_base[prob.free], prob.lo, prob.hi)
            conv[t] = True
            x_prev2, x_prev = x_prev, x_out[t]
            continue
        if first_k < 0:
            first_k = t
            t_first = _time.perf_counter()
            fit = _first_frame(prob, target_all[t], present, restarts=restarts, max_iter=first_frame_iterations,
                               tolerance=tolerance)
            first_s = _time.perf_counter() - t_first
        else:
            guess = x_prev if (x_prev2 is None or not extrapolate) else 2.0 * x_prev - x_prev2
            fit = _lm(prob, guess, target_all[t], present, max_iter=max_iterations, tolerance=tolerance,
                      fallback=x_prev)
        x_out[t], iters[t], conv[t] = fit.x, fit.iterations, fit.converged
        x_prev2, x_prev = x_prev, fit.x
    solve_s = _time.perf_counter() - tic
    if first_k < 0:
        raise MarkerError("no frame has any tracked marker (all NaN)", src)
    if not np.isfinite(x_out).all():
        raise SolverError(f"nimble IK produced non-finite coordinates for markers {markers.source}", out_mot)

    # coordinates of every OpenSim coordinate, model order
    q_full = np.tile(prob.q_base, (n_frames, 1))
    q_full[:, prob.free] = x_out
    index = pd.Index(times, name="time")
    values = {d: q_full[:, k] for k, d in enumerate(model.dofs)}
    values.update(_coupled_values(model, pd.DataFrame(values, index=index)))
    coords = pd.DataFrame({c: values.get(c, np.full(n_frames, model.defaults.get(c, 0.0)))
                           for c in model.coordinates}, index=index)

    # marker errors at the solution
    err = np.full((n_frames, len(prob.names)), np.nan)
    for t in range(n_frames):
        pos = prob.markers(x_out[t])
        e = np.linalg.norm(pos - target_all[t], axis=1)
        err[t] = np.where(present_all[t], e, np.nan)
    errors = pd.DataFrame(err, index=pd.Index(times, name="time"), columns=prob.names)
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", category=RuntimeWarning)  # frames with every marker missing
        rmse = np.sqrt(np.nanmean(err**2, axis=1))
        mx = np.nanmax(err, axis=1)

    later = ~empty
    later[: first_k + 1] = False  # warm-started frames
    stem = out_mot.stem
    out_mot.parent.mkdir(parents=True, exist_ok=True)
    write_storage(out_mot, coords, name=stem, in_degrees=False)
    settings_path = out_mot.with_name(f"{stem}{SETTINGS_SUFFIX}")
    record = {
        "solver": "nimble_ik",
        "model_file": str(Path(model.path).resolve()),
        "marker_file": str(markers.source),
        "output_motion_file": str(out_mot.resolve()),
        "time_range": [float(times[0]), float(times[-1])],
        "frames": int(n_frames),
        "marker_weights": dict(weights),
        "locked_coordinates": list(model.locked),
        "coupled_coordinates": list(model.coupled),
        "settings": {"tolerance": tolerance, "max_iterations": max_iterations,
                     "first_frame_iterations": first_frame_iterations, "restarts": restarts},
        "iterations": {"first_frame": int(iters[first_k]),
                       "mean": float(iters[later].mean()) if later.any() else 0.0,
                       "max": int(iters[later].max()) if later.any() else 0},
        "frames_not_converged": int((~conv).sum()),
        "frames_without_markers": int(empty.sum()),
        "solve_s": solve_s,
        "first_frame_solve_s": first_s,
        "steady_solve_s": solve_s - first_s,
    }
    atomic_write_text(settings_path, json.dumps(record, indent=1))
    return IKResult(coordinates=coords, marker_errors=errors, marker_rmse=rmse, marker_max=mx, out_mot=out_mot,
                    setup=settings_path, weights=dict(weights))


__all__ = ["SETTINGS_SUFFIX", "nimble_ik"]
