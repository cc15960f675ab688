"""Trajectory optimisation that turns a `MotionPlan` into physically plausible kinematics.

The plan's joint-angle templates are followed as closely as possible while, exactly:
- every foot contact point in stance stays at one anchor on the floor (y = 0: no sliding, no
  sinking); the anchors are unknowns, so feet land where the legs put them;
- no foot point goes below the floor in swing;
- in flight the whole-body centre of mass accelerates at g (a ballistic path), and in stance
  its vertical acceleration never asks the floor to pull (a_y >= -g), while its accelerations
  are kept (softly) within what real ground forces produce;
- in quasi-static motions the centre of mass stays over the feet (balance);
- the centre of pressure the motion implies lies within the support area of the feet: the
  point-mass one, or (plans with `angular_momentum`: walking, running) the multi-body one that
  ground-force estimation and inverse dynamics see, with the whole-body angular momentum about
  the COM; those plans also conserve angular momentum in flight;
- plans with `trunk_balance` (walking) end with a stage that also solves those trunk coordinates
  and keeps the whole-body angular-momentum rate small, as people do.

Forward kinematics is OpenSim's own (the subject's scaled .osim), so the synthetic markers and
ground-truth coordinates are consistent with what OpenSim IK will later see. The problem is
solved by Levenberg-Marquardt on all frames at once with a sparse Jacobian built from per-frame
finite differences (about 0.1 ms per OpenSim forward-kinematics call here).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from biohuman.errors import SolverError
from biohuman.motion.library import CONTACT_POINTS, DEG, MotionPlan
from biohuman.osim.model import coordinate_couplers, foot_geometry, load_model, opensim

GRAVITY = 9.80665


class ModelKinematics:
    """OpenSim forward kinematics of a fixed set of body points and the centre of mass.

    Holds one model and state; coordinates are set by name order `self.names` (all model
    coordinates). Coupled coordinates (the Rajagopal knee `*_beta`) follow their independent
    coordinate through the coupler function.
    """

    def __init__(self, model_path: str | Path | None, points: list[tuple[str, tuple[float, float, float]]]) -> None:
        osim = opensim()
        self.model_path = model_path
        self.model = load_model(model_path)
        self.state = self.model.initSystem()
        cs = self.model.getCoordinateSet()
        self.names = [cs.get(i).getName() for i in range(cs.getSize())]
        self._coords = [cs.get(i) for i in range(cs.getSize())]
        self.index = {n: i for i, n in enumerate(self.names)}
        self.default = np.array([c.getDefaultValue() for c in self._coords])
        self._coupled: dict[int, tuple[int, object]] = {}
        for cc in coordinate_couplers(self.model):
            self._coupled[self.index[cc.independent[0]]] = (self.index[cc.dependent], cc.function)
        bodies = self.model.getBodySet()
        self._points = [(bodies.get(b), osim.Vec3(*p)) for b, p in points]
        self._arg = osim.Vector(1, 0.0)

    def coupled_value(self, i: int, value: float) -> tuple[int, float] | None:
        """(dependent index, value) when coordinate i drives a coupled coordinate."""
        if i not in self._coupled:
            return None
        j, fn = self._coupled[i]
        self._arg.set(0, float(value))
        return j, float(fn.calcValue(self._arg))

    def fill_coupled(self, q: np.ndarray) -> np.ndarray:
        """Return q (..., ncoord) with coupled coordinates set from their drivers."""
        q = np.array(q, dtype=float, copy=True)
        flat = q.reshape(-1, q.shape[-1])
        for i in self._coupled:
            for row in flat:
                j, v = self.coupled_value(i, row[i])  # type: ignore[misc]
                row[j] = v
        return q

    def set_all(self, q: np.ndarray) -> None:
        """Set every coordinate (radians / metres) without enforcing constraints."""
        for c, v in zip(self._coords, q):
            c.setValue(self.state, float(v), False)

    def set_one(self, i: int, value: float) -> None:
        """Set one coordinate (and what it drives)."""
        self._coords[i].setValue(self.state, float(value), False)
        dep = self.coupled_value(i, value)
        if dep is not None:
            self._coords[dep[0]].setValue(self.state, dep[1], False)

    def coupled_slope(self, i: int, value: float, h: float = 1e-6) -> tuple[int, float] | None:
        """(dependent index, d dependent / d coordinate i) when coordinate i drives a coupled one."""
        if i not in self._coupled:
            return None
        j, hi = self.coupled_value(i, value + h)  # type: ignore[misc]
        _, lo = self.coupled_value(i, value - h)  # type: ignore[misc]
        return j, (hi - lo) / (2 * h)

    def set_speeds(self, qd: np.ndarray) -> None:
        """Set every coordinate speed (rad/s, m/s)."""
        for c, v in zip(self._coords, qd):
            c.setSpeedValue(self.state, float(v))

    def angular_momentum(self) -> np.ndarray:
        """Whole-body angular momentum about the centre of mass, in ground (kg m^2/s), at the
        state's coordinates and speeds."""
        self.model.realizeVelocity(self.state)
        h = self.model.calcAngularMomentum(self.state)
        return np.array([h.get(0), h.get(1), h.get(2)])

    @property
    def mass(self) -> float:
        """Total model mass (kg)."""
        return float(self.model.getTotalMass(self.state))

    def outputs(self) -> np.ndarray:
        """Ground positions of the points then the centre of mass, flattened (3 * (P + 1),)."""
        self.model.realizePosition(self.state)
        out = np.empty(3 * (len(self._points) + 1))
        for k, (body, p) in enumerate(self._points):
            v = body.findStationLocationInGround(self.state, p)
            out[3 * k: 3 * k + 3] = (v.get(0), v.get(1), v.get(2))
        c = self.model.calcMassCenterPosition(self.state)
        out[-3:] = (c.get(0), c.get(1), c.get(2))
        return out


@dataclass
class Synthesis:
    """Result of synthesising one motion on one subject model.

    coordinates: DataFrame (time index in s; all model coordinates; radians / metres).
    contact: (T, 4) bool in CONTACT_POINTS order. points: (T, 4, 3) contact-point positions (m).
    com: (T, 3) centre of mass (m). diagnostics: figures that the acceptance checks read.
    """

    coordinates: pd.DataFrame
    contact: np.ndarray
    points: np.ndarray
    com: np.ndarray
    diagnostics: dict[str, float] = field(default_factory=dict)


@dataclass
class _Layout:
    T: int
    n: int
    anchors: list[tuple[int, int, int]]  # (point index, first frame, last frame inclusive)

    @property
    def size(self) -> int:
        return self.T * self.n + 2 * len(self.anchors)


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """Contiguous True runs of a 1-D mask as (first, last) inclusive."""
    idx = np.flatnonzero(np.diff(np.concatenate([[0], mask.astype(int), [0]])))
    return [(int(a), int(b) - 1) for a, b in zip(idx[::2], idx[1::2])]


PELVIS_TRANSLATIONS = ("pelvis_tx", "pelvis_ty", "pelvis_tz")
"""Translational coordinates of the pelvis (m); every other solved coordinate is an angle."""


DEFAULT_SD = {
    "angle": 3.0 * DEG,        # template tracking, sagittal leg angles
    "angle_minor": 2.0 * DEG,  # hip adduction / rotation
    "translation": 0.05,       # pelvis translation (m)
    "contact": 0.0005,         # contact / floor (m)
    "smooth_angle": 0.004,     # second difference per frame (rad)
    "smooth_translation": 0.001,
    "accel": 0.3,              # ballistic / unilateral COM acceleration (m/s^2)
    "stance_accel_h": 1.0,     # horizontal COM acceleration in stance (m/s^2; 0.1 g ~ 10 % BW shear)
    "stance_accel_v": 2.5,     # vertical COM acceleration in stance (m/s^2)
    "balance": 0.02,           # COM over the feet in quasi-static motions (m)
    "cop": 0.01,               # implied centre of pressure outside the support area (m)
    "flight_angular": 2.0,     # whole-body dH/dt about the COM in flight, which must be zero (N m; angular_momentum plans)
    "angular_rate": np.inf,    # whole-body dH/dt about the COM, sagittal and frontal (N m; the trunk-balance stage)
}


class _Problem:
    """Residuals and sparse Jacobian of the synthesis least-squares problem."""

    def __init__(self, kin: ModelKinematics, plan: MotionPlan, sd: dict[str, float]) -> None:
        self.kin, self.plan, self.sd = kin, plan, sd
        t = plan.time
        self.dt = float(t[1] - t[0])
        self.T = len(t)
        self.solved = [kin.index[c] for c in plan.solved]
        self.n = len(self.solved)
        q = np.tile(kin.default, (self.T, 1))
        for name, values in plan.q_ref.items():
            if name in kin.index:
                q[:, kin.index[name]] = values
        self.q_ref_full = kin.fill_coupled(q)
        self.contact = np.stack([plan.contact[p] for p in CONTACT_POINTS], axis=1)  # (T, 4)
        anchors = []
        for p in range(4):
            for a, b in _runs(self.contact[:, p]):
                anchors.append((p, a, b))
        self.layout = _Layout(self.T, self.n, anchors)
        self.anchor_of = np.full((self.T, 4), -1)
        for a_idx, (p, a, b) in enumerate(anchors):
            self.anchor_of[a: b + 1, p] = a_idx
        self.flight = ~self.contact.any(axis=1)
        self.half_width = 0.6 * float(np.mean([f.half_width for f in foot_geometry(kin.model_path).values()]))
        w = np.empty(self.n)
        for k, name in enumerate(plan.solved):
            if name in PELVIS_TRANSLATIONS:
                w[k] = 1.0 / sd["translation"]
            elif "adduction" in name or "rotation" in name:
                w[k] = 1.0 / sd["angle_minor"]
            else:
                w[k] = 1.0 / sd["angle"]
        self.w_reg = w
        self.w_smooth = np.array([1.0 / (sd["smooth_translation"] if c in PELVIS_TRANSLATIONS else sd["smooth_angle"])
                                  for c in plan.solved])
        self.angular = bool(plan.angular_momentum)
        self.mass = kin.mass
        self.blocks: dict[str, slice] = {}
        """Rows of the named residual blocks (balance, flight_angular), from `residuals`."""
        self.hjac: np.ndarray | None = None
        """(T, 3, 3, n) dH_t / dq_(t+o) for o = -1, 0, +1 (solved coordinates), from `evaluate`."""

    # ---- variables <-> coordinates
    def full(self, x: np.ndarray) -> np.ndarray:
        """All coordinates (T, ncoord) for a variable vector."""
        q = self.q_ref_full.copy()
        q[:, self.solved] = x[: self.T * self.n].reshape(self.T, self.n)
        return self.kin.fill_coupled(q) if self.kin._coupled else q

    def anchors(self, x: np.ndarray) -> np.ndarray:
        return x[self.T * self.n:].reshape(-1, 2)

    # ---- kinematics
    def evaluate(self, x: np.ndarray, jacobian: bool) -> tuple[np.ndarray, np.ndarray | None]:
        """Outputs (T, 18): contact points, COM and (when the plan balances angular momentum)
        the whole-body angular momentum about the COM; and, if asked, the derivatives of the
        first 15 (T, 15, n) by forward differences (the momentum's, which reach the neighbouring
        frames through the speeds, go to `self.hjac`)."""
        q = self.full(x)
        out = np.zeros((self.T, 18))
        jac = np.empty((self.T, 15, self.n)) if jacobian else None
        h = 1e-6
        for t in range(self.T):
            self.kin.set_all(q[t])
            out[t, :15] = self.kin.outputs()
            if jacobian:
                for k, i in enumerate(self.solved):
                    self.kin.set_one(i, q[t, i] + h)
                    jac[t, :, k] = (self.kin.outputs() - out[t, :15]) / h
                    self.kin.set_one(i, q[t, i])
        if self.angular and self.T >= 3:
            out[:, 15:18] = self._momentum(q, jacobian)
        return out, jac

    def _momentum(self, q: np.ndarray, jacobian: bool) -> np.ndarray:
        """Angular momentum about the COM of every frame (T, 3), with the speeds the time
        derivatives of the coordinates (np.gradient: central inside, one-sided at the ends).
        H is linear in the speeds, H_t = A(q_t) qd_t, so dH_t/dq_s = c_ts A_t + [s = t] dA/dq qd_t
        with c_ts the difference weights; both parts are filled into `self.hjac`."""
        T, n, kin, dt = self.T, self.n, self.kin, self.dt
        qd = np.gradient(q, dt, axis=0)
        H = np.empty((T, 3))
        hjac = np.zeros((T, 3, 3, n)) if jacobian else None
        zero = np.zeros(q.shape[1])
        h = 1e-6
        for t in range(T):
            kin.set_all(q[t])
            kin.set_speeds(qd[t])
            H[t] = kin.angular_momentum()
            if hjac is None:
                continue
            for k, i in enumerate(self.solved):  # position part, speeds held
                kin.set_one(i, q[t, i] + h)
                hjac[t, :, 1, k] += (kin.angular_momentum() - H[t]) / h
                kin.set_one(i, q[t, i])
            kin.set_speeds(zero)
            if t == 0:
                weights = {1: -1.0 / dt, 2: 1.0 / dt}
            elif t == T - 1:
                weights = {0: -1.0 / dt, 1: 1.0 / dt}
            else:
                weights = {0: -0.5 / dt, 2: 0.5 / dt}
            for k, i in enumerate(self.solved):  # speed part: column k of A(q_t)
                unit = zero.copy()
                unit[i] = 1.0
                dep = kin.coupled_slope(i, q[t, i])
                if dep is not None:
                    unit[dep[0]] = dep[1]
                kin.set_speeds(unit)
                col = kin.angular_momentum()
                for o, w in weights.items():
                    hjac[t, :, o, k] += w * col
            kin.set_speeds(zero)
        self.hjac = hjac
        return H

    def _rate_jacobian(self) -> np.ndarray:
        """d(dH/dt at frame m, axis a) / dq at frames m - 2 .. m + 2, (T - 2, 3, 5, n), for the mid
        frames m = 1 .. T - 2: dH_m = (H_(m+1) - H_(m-1)) / (2 dt) and H_t reaches q_(t-1 .. t+1)."""
        T, n = self.T, self.n
        mid = np.arange(1, T - 1)
        d = np.zeros((T - 2, 3, 5, n))
        for side in (1, -1):
            hs = mid + side
            for o in (-1, 0, 1):
                ok = (hs + o >= 0) & (hs + o < T)
                d[:, :, side + o + 2] += self.hjac[hs, :, o + 1, :] * (side * ok / (2 * self.dt))[:, None, None]
        return d

    def _banded(self, block: np.ndarray, row0: int, rows: list, cols: list, vals: list) -> None:
        """Append the sparse entries of rows row0 + m (mid frame m = 1 .. T - 2) whose derivatives
        w.r.t. the solved coordinates of frames m - 2 .. m + 2 are block (T - 2, 5, n)."""
        T, n = self.T, self.n
        mid = np.arange(1, T - 1)
        for o in range(5):
            frames = mid + o - 2
            ok = np.flatnonzero((frames >= 0) & (frames < T) & np.any(block[:, o] != 0, axis=1))
            if len(ok):
                rows.append(np.repeat(row0 + ok, n))
                cols.append((frames[ok][:, None] * n + np.arange(n)[None, :]).ravel())
                vals.append(block[ok, o].ravel())

    # ---- residuals
    def residuals(self, x: np.ndarray, out: np.ndarray, jac: np.ndarray | None):  # noqa: ANN201
        """Stacked residual vector and (optionally) its sparse Jacobian."""
        T, n, sd = self.T, self.n, self.sd
        nx = self.layout.size
        qs = x[: T * n].reshape(T, n)
        res: list[np.ndarray] = []
        rows: list[np.ndarray] = []
        cols: list[np.ndarray] = []
        vals: list[np.ndarray] = []
        r0 = 0

        def var(t: np.ndarray | int, k: np.ndarray | int) -> np.ndarray:
            return np.asarray(t) * n + np.asarray(k)

        def add_dense(r: np.ndarray, frames: np.ndarray, dout: np.ndarray | None, scale: float) -> None:
            """Rows r (m,) whose derivative is dout (m, n) w.r.t. the solved vars of `frames`."""
            nonlocal r0
            res.append(r)
            if dout is not None:
                m = len(r)
                rr = np.repeat(np.arange(r0, r0 + m), n)
                cc = (frames[:, None] * n + np.arange(n)[None, :]).ravel()
                rows.append(rr)
                cols.append(cc)
                vals.append((dout * scale).ravel())
            r0 += len(r)

        # 1. template tracking
        tt, kk = np.meshgrid(np.arange(T), np.arange(n), indexing="ij")
        ref = self.q_ref_full[:, self.solved]
        r = ((qs - ref) * self.w_reg).ravel()
        res.append(r)
        if jac is not None:
            rows.append(np.arange(r0, r0 + r.size))
            cols.append(var(tt, kk).ravel())
            vals.append(np.broadcast_to(self.w_reg, (T, n)).ravel().copy())
        r0 += r.size

        # 2. smoothness (second differences)
        if T >= 3:
            d2 = (qs[2:] - 2 * qs[1:-1] + qs[:-2]) * self.w_smooth
            r = d2.ravel()
            res.append(r)
            if jac is not None:
                base = np.arange(r0, r0 + r.size)
                t_mid, k_mid = np.meshgrid(np.arange(1, T - 1), np.arange(n), indexing="ij")
                for dt_, coef in ((-1, 1.0), (0, -2.0), (1, 1.0)):
                    rows.append(base)
                    cols.append(var(t_mid + dt_, k_mid).ravel())
                    vals.append((coef * np.broadcast_to(self.w_smooth, (T - 2, n))).ravel().copy())
            r0 += r.size

        # 3. contact anchors and floor
        wc = 1.0 / sd["contact"]
        anchors = self.anchors(x)
        for a_idx, (p, a, b) in enumerate(self.layout.anchors):
            frames = np.arange(a, b + 1)
            pos = out[frames, 3 * p: 3 * p + 3]
            target = np.stack([np.full(len(frames), anchors[a_idx, 0]), np.zeros(len(frames)),
                               np.full(len(frames), anchors[a_idx, 1])], axis=1)
            r = ((pos - target) * wc).ravel()
            start = r0
            dout = None if jac is None else jac[frames, 3 * p: 3 * p + 3, :].reshape(-1, n)
            add_dense(r, np.repeat(frames, 3), dout, wc)
            if jac is not None:
                ax = T * n + 2 * a_idx
                m = len(frames)
                rows.append(start + 3 * np.arange(m))
                cols.append(np.full(m, ax))
                vals.append(np.full(m, -wc))
                rows.append(start + 3 * np.arange(m) + 2)
                cols.append(np.full(m, ax + 1))
                vals.append(np.full(m, -wc))
        for p in range(4):
            frames = np.flatnonzero(~self.contact[:, p])
            if len(frames) == 0:
                continue
            y = out[frames, 3 * p + 1]
            active = y < 0.0
            r = np.where(active, y, 0.0) * wc
            dout = None
            if jac is not None:
                dout = jac[frames, 3 * p + 1, :] * active[:, None]
            add_dense(r, frames, dout, wc)

        # 4. centre-of-mass dynamics: ballistic in flight; in stance the floor never pulls
        #    (a_y >= -g) and accelerations stay in the range of real ground forces (soft)
        dt2 = self.dt ** 2
        g = np.array([0.0, -GRAVITY, 0.0])
        if T >= 3:
            com = out[:, 12:15]
            acc = (com[2:] - 2 * com[1:-1] + com[:-2]) / dt2  # at frames 1..T-2
            mid = np.arange(1, T - 1)
            fl = self.flight[mid]
            groups = []
            for axis in range(3):
                err = acc[:, axis] - g[axis]
                groups.append((axis, np.where(fl, err, 0.0), fl, 1.0 / sd["accel"]))
                soft = sd["stance_accel_v"] if axis == 1 else sd["stance_accel_h"]
                target = 0.0 if self.plan.stance_accel is None else self.plan.stance_accel[mid, axis]
                groups.append((axis, np.where(fl, 0.0, acc[:, axis] - target), ~fl, 1.0 / soft))
            err = acc[:, 1] + GRAVITY
            pull = ~fl & (err < 0)
            groups.append((1, np.where(pull, err, 0.0), pull, 1.0 / sd["accel"]))
            for axis, err, active, w in groups:
                res.append(err * w)
                if jac is not None:
                    for dt_, coef in ((-1, 1.0), (0, -2.0), (1, 1.0)):
                        frames = mid + dt_
                        d = jac[frames, 12 + axis, :] * (coef / dt2 * w) * active[:, None]
                        rows.append(np.repeat(np.arange(r0, r0 + len(mid)), n))
                        cols.append((frames[:, None] * n + np.arange(n)[None, :]).ravel())
                        vals.append(d.ravel())
                r0 += len(mid)

        # whole-body angular-momentum rate at the mid frames (terms 5, 5b, 5c) and its Jacobian
        if self.angular and T >= 3:
            dH = np.gradient(out[:, 15:18], self.dt, axis=0)[1:-1]
            d_rate = self._rate_jacobian() if jac is not None and self.hjac is not None else None

        # 5. dynamic balance: the centre of pressure implied by the body's motion must lie within
        #    the support area of the feet. Point-mass model p = c - c_y a / (a_y + g); with
        #    `plan.angular_momentum` also the whole-body angular momentum about the COM, as the
        #    ground-force estimate has it (biohuman.dynamics.grf): p_x += dH_z / (m D),
        #    p_z -= dH_x / (m D), D = a_y + g. The residual is the distance vector from the
        #    support area, differentiated through the projection and the foot anchors.
        if T >= 3 and np.isfinite(sd["cop"]):
            start = r0
            wz = 1.0 / sd["cop"]
            com = out[:, 12:15]
            acc = (com[2:] - 2 * com[1:-1] + com[:-2]) / dt2
            mid = np.arange(1, T - 1)
            M = len(mid)
            stance = ~self.flight[mid]
            d_raw = acc[:, 1] + GRAVITY
            D = np.maximum(d_raw, 1.0)
            free_d = (d_raw > 1.0).astype(float)  # D's derivative is zero where it is clamped
            cy = com[1:-1, 1]
            anchors_xz = self.anchors(x)
            p = com[1:-1][:, [0, 2]] - (cy / D)[:, None] * acc[:, [0, 2]]
            use_h = self.angular
            h_axes = ((2, 1.0), (0, -1.0))  # the H axis each of (p_x, p_z) reads, with its sign
            corr = np.zeros((M, 2))
            if use_h:
                mD = self.mass * D
                for j, (ax_h, sign) in enumerate(h_axes):
                    corr[:, j] = sign * dH[:, ax_h] / mD
                p = p + corr
            gap = np.zeros((M, 2))
            g_p = np.zeros((M, 2, 2))
            g_anchor: list[tuple[int, np.ndarray, np.ndarray]] = []
            for k, t in enumerate(mid):
                if not stance[k]:
                    continue
                idx = self.anchor_of[t][self.anchor_of[t] >= 0]
                gap[k], g_p[k], g_pts = _support_gap(p[k], anchors_xz[idx], self.half_width)
                if g_pts.any():
                    g_anchor.append((k, idx, g_pts))
            res.append(gap[:, 0] * wz)
            res.append(gap[:, 1] * wz)
            if jac is not None:
                d_p = np.zeros((M, 2, 5, n))  # d(p_x, p_z) / dq at frames mid - 2 .. mid + 2
                for j, h in enumerate((0, 2)):
                    ah = acc[:, h]
                    for o, w_k in ((-1, 1.0), (0, -2.0), (1, 1.0)):
                        dch = -cy / D * w_k / dt2 + (1.0 if o == 0 else 0.0)
                        dcy = ((cy * ah / D**2 - corr[:, j] / D) * w_k / dt2 * free_d
                               - (ah / D if o == 0 else 0.0))
                        d_p[:, j, o + 2] += jac[mid + o, 12 + h, :] * dch[:, None] + jac[mid + o, 13, :] * dcy[:, None]
                    if use_h and d_rate is not None:
                        ax_h, sign = h_axes[j]
                        d_p[:, j] += d_rate[:, ax_h] * (sign / mD)[:, None, None]
                d_gap = np.einsum("mij,mjon->mion", g_p, d_p) * wz
                for j in range(2):
                    self._banded(d_gap[:, j], r0 + j * M, rows, cols, vals)
                for k, idx, g_pts in g_anchor:
                    for pi, a_idx in enumerate(idx):
                        for j in range(2):
                            rows.append(np.full(2, r0 + j * M + k))
                            cols.append(T * n + 2 * a_idx + np.arange(2))
                            vals.append(g_pts[pi, j] * wz)
            r0 += 2 * M
            self.blocks["balance"] = slice(start, r0)

        # 5b. flight: no external load, so the whole-body angular momentum about the COM is
        #     conserved (dH/dt = 0); otherwise the pelvis residual carries it in the air
        if T >= 3 and self.angular and self.flight[1:-1].any():
            start = r0
            weight = self.flight[1:-1] / sd["flight_angular"]
            for ax_h in range(3):
                res.append(dH[:, ax_h] * weight)
                if d_rate is not None:
                    self._banded(d_rate[:, ax_h] * weight[:, None, None], r0, rows, cols, vals)
                r0 += T - 2
            self.blocks["flight_angular"] = slice(start, r0)

        # 5c. a small whole-body angular-momentum rate (people regulate it, Herr & Popovic 2008):
        #     what it leaves for the feet swings the ground-force line off the COM and the hips
        if T >= 3 and self.angular and np.isfinite(sd["angular_rate"]):
            start = r0
            wr = 1.0 / sd["angular_rate"]
            for ax_h in (0, 2):
                res.append(dH[:, ax_h] * wr)
                if d_rate is not None:
                    self._banded(d_rate[:, ax_h] * wr, r0, rows, cols, vals)
                r0 += T - 2
            self.blocks["angular_rate"] = slice(start, r0)

        # 6. balance: COM over the mean of the points in contact (quasi-static motions)
        if self.plan.quasi_static:
            wb = 1.0 / sd["balance"]
            cnt = self.contact.sum(axis=1)
            frames = np.flatnonzero(cnt > 0)
            wts = self.contact[frames] / cnt[frames, None]  # (m, 4)
            pts = out[frames, :12].reshape(-1, 4, 3)
            centre = np.einsum("mp,mpc->mc", wts, pts)
            for axis in (0, 2):
                r = (out[frames, 12 + axis] - centre[:, axis]) * wb
                dout = None
                if jac is not None:
                    dpts = jac[frames, :12, :].reshape(-1, 4, 3, n)[:, :, axis, :]
                    dout = jac[frames, 12 + axis, :] - np.einsum("mp,mpn->mn", wts, dpts)
                add_dense(r, frames, dout, wb)

        rvec = np.concatenate(res)
        if jac is None:
            return rvec, None
        J = sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(r0, nx))
        return rvec, J


def _support_gap(p: np.ndarray, pts: np.ndarray, margin: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """How far p (2,) lies outside the support area: the convex hull of the contact points
    (k, 2) dilated by `margin` (m; the sole's width around the heel-toe lines).

    Returns (gap (2,), d gap / d p (2, 2), d gap / d pts (k, 2, 2)); all zero when p is inside.
    The gap is p minus its nearest point of the area, differentiated exactly through the nearest
    edge (or vertex), so that the optimiser may move the body or the feet.
    """
    k = len(pts)
    zero = (np.zeros(2), np.zeros((2, 2)), np.zeros((k, 2, 2)))
    if k == 0:
        return zero
    if k >= 3:
        from scipy.spatial import ConvexHull, QhullError

        try:
            hull = ConvexHull(pts)
            if np.all(hull.equations[:, :2] @ p + hull.equations[:, 2] <= margin):
                return zero
            edges = [(int(a), int(b)) for a, b in hull.simplices]
        except QhullError:  # collinear points
            edges = [(a, b) for a in range(k) for b in range(a + 1, k)]
    elif k == 2:
        edges = [(0, 1)]
    else:
        edges = [(0, 0)]
    best: tuple[float, int, int, float, bool] | None = None
    for ia, ib in edges:
        a, b = pts[ia], pts[ib]
        ab = b - a
        l2 = float(ab @ ab)
        u_raw = 0.0 if l2 == 0.0 else float((p - a) @ ab / l2)
        u = min(max(u_raw, 0.0), 1.0)
        dist = float(np.linalg.norm(p - (a + u * ab)))
        if best is None or dist < best[0]:
            best = (dist, ia, ib, u, 0.0 < u_raw < 1.0 and l2 > 0.0)
    dist, ia, ib, u, interior = best  # type: ignore[misc]
    if dist <= margin:
        return zero
    a, b = pts[ia], pts[ib]
    ab = b - a
    v = p - (a + u * ab)
    eye = np.eye(2)
    if interior:  # u = (p - a).ab / |ab|^2 moves with p, a and b
        l2 = float(ab @ ab)
        n_ = float((p - a) @ ab)
        du_dp = ab / l2
        du_da = (-ab - (p - a)) / l2 + 2 * n_ * ab / l2**2
        du_db = (p - a) / l2 - 2 * n_ * ab / l2**2
        dv_dp = eye - np.outer(ab, du_dp)
        dv_da = -(1 - u) * eye - np.outer(ab, du_da)
        dv_db = -u * eye - np.outer(ab, du_db)
    else:
        dv_dp, dv_da, dv_db = eye, -(1 - u) * eye, -u * eye
    shrink = 1.0 - margin / dist
    dgap_dv = shrink * eye + margin * np.outer(v, v) / dist**3
    g_pts = np.zeros((k, 2, 2))
    g_pts[ia] += dgap_dv @ dv_da
    g_pts[ib] += dgap_dv @ dv_db
    return v * shrink, dgap_dv @ dv_dp, g_pts


def _initial_guess(prob: _Problem) -> np.ndarray:
    """Templates, with the pelvis height shifted so the lowest stance point touches the floor and
    a ballistic arc across flight phases; anchors at the mean stance positions."""
    T, n = prob.T, prob.n
    x = np.concatenate([prob.q_ref_full[:, prob.solved].ravel(), np.zeros(2 * len(prob.layout.anchors))])
    out, _ = prob.evaluate(x, jacobian=False)
    pts = out[:, :12].reshape(T, 4, 3)
    shift = np.full(T, np.nan)
    for t in range(T):
        c = prob.contact[t]
        if c.any():
            shift[t] = -pts[t, c, 1].min()
    ty = prob.plan.solved.index("pelvis_ty")
    known = np.flatnonzero(~np.isnan(shift))
    if len(known) == 0:
        raise SolverError(f"motion '{prob.plan.name}' has no foot contact at all")
    # flight: ballistic arc between the neighbouring stance shifts
    for a, b in _runs(np.isnan(shift)):
        if a == 0 or b == T - 1:
            shift[a: b + 1] = shift[b + 1] if a == 0 else shift[a - 1]
            continue
        t0, t1 = a - 1, b + 1
        y0, y1 = shift[t0], shift[t1]
        dur = (t1 - t0) * prob.dt
        v0 = (y1 - y0 + 0.5 * GRAVITY * dur ** 2) / dur
        tau = (np.arange(a, b + 1) - t0) * prob.dt
        shift[a: b + 1] = y0 + v0 * tau - 0.5 * GRAVITY * tau ** 2
    x[ty: T * n: n] += shift
    out, _ = prob.evaluate(x, jacobian=False)
    pts = out[:, :12].reshape(T, 4, 3)
    anchors = np.array([[pts[a: b + 1, p, 0].mean(), pts[a: b + 1, p, 2].mean()] for p, a, b in prob.layout.anchors])
    if len(anchors):
        x[T * n:] = anchors.ravel()
    return x


def _levenberg_marquardt(prob: _Problem, x: np.ndarray, max_iterations: int, tol: float,
                         bar=None) -> tuple[np.ndarray, int, float]:  # noqa: ANN001
    """Minimise the problem's sum of squares from x; returns (x, iterations, cost)."""
    lam = 1e-3
    out, jac = prob.evaluate(x, jacobian=True)
    r, J = prob.residuals(x, out, jac)
    cost = float(r @ r)
    it = 0
    for it in range(1, max_iterations + 1):
        JtJ = (J.T @ J).tocsc()
        g = J.T @ r
        diag = JtJ.diagonal()
        improved = False
        for _ in range(8):
            A = JtJ + sp.diags(lam * np.maximum(diag, 1e-9), format="csc")
            x_new = x - spla.spsolve(A, g)
            out_new, _ = prob.evaluate(x_new, jacobian=False)
            r_new, _ = prob.residuals(x_new, out_new, None)
            cost_new = float(r_new @ r_new)
            if cost_new < cost:
                improved = True
                break
            lam *= 4.0
        if bar is not None:
            bar.update(1)
        if not improved:
            break
        rel = (cost - cost_new) / max(cost, 1e-12)
        x, cost = x_new, cost_new
        lam = max(lam / 3.0, 1e-9)
        if rel < tol:
            break
        out, jac = prob.evaluate(x, jacobian=True)
        r, J = prob.residuals(x, out, jac)
    return x, it, cost


def contact_points(model_path: str | Path | None) -> list[tuple[str, tuple[float, float, float]]]:
    """(body, location) of each point in CONTACT_POINTS order (heel, toe of each foot), scaled
    with the model's feet."""
    feet = foot_geometry(model_path)
    points = []
    for name in CONTACT_POINTS:
        kind, side = name.split("_")
        fg = feet[side]
        points.append((fg.heel_body, fg.heel) if kind == "heel" else (fg.toe_body, fg.toe))
    return points


def synthesize(
    model_path: str | Path | None,
    plan: MotionPlan,
    *,
    max_iterations: int = 40,
    tol: float = 1e-6,
    sd: dict[str, float] | None = None,
    progress: bool = False,
) -> Synthesis:
    """Solve for kinematics that follow `plan` on the given (scaled) model.

    Returns the coordinates of every model coordinate over the plan's time base and the
    diagnostics `max_slide_m`, `max_sink_m`, `flight_com_accel_err`, `template_rms_deg`,
    `iterations`, `cost`. Raises SolverError if the optimiser cannot meet the contact
    constraints (slide > 5 mm or sink > 5 mm).
    """
    kin = ModelKinematics(model_path, contact_points(model_path))
    sd_all = {**DEFAULT_SD, **plan.sd, **(sd or {})}
    prob = _Problem(kin, plan, {**sd_all, "angular_rate": np.inf})
    x = _initial_guess(prob)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=(3 if plan.trunk_balance else 2) * max_iterations, desc=f"synthesise {plan.name}", leave=False)
    # continuation: first the kinematic and ballistic terms, then dynamic balance (the implied
    # centre of pressure) from that feasible start; the CoP term alone is too non-convex.
    cop_sd = prob.sd["cop"]
    prob.sd["cop"] = np.inf
    x, it1, _ = _levenberg_marquardt(prob, x, max_iterations, tol, bar)
    prob.sd["cop"] = cop_sd
    x, it2, cost = _levenberg_marquardt(prob, x, max_iterations, tol, bar)
    it = it1 + it2
    if plan.trunk_balance:
        # then the trunk joins the balance: pelvis / lumbar rotations solved too, and the whole
        # body's angular-momentum rate penalised (solved from the start, they end in a worse
        # local minimum)
        q_legs, anchors = prob.full(x), x[prob.T * prob.n:]
        prob = _Problem(kin, replace(plan, solved=tuple(plan.solved) + tuple(plan.trunk_balance)), sd_all)
        x = np.concatenate([q_legs[:, prob.solved].ravel(), anchors])
        x, it3, cost = _levenberg_marquardt(prob, x, max_iterations, tol, bar)
        it += it3
    if bar is not None:
        bar.close()
    out, _ = prob.evaluate(x, jacobian=False)
    q = prob.full(x)
    T = prob.T
    pts = out[:, :12].reshape(T, 4, 3)
    com = out[:, 12:15]
    diag = diagnostics(plan, pts, com, prob.contact)
    diag["iterations"] = float(it)
    diag["cost"] = cost
    ref = prob.q_ref_full[:, prob.solved]
    ang = [k for k, c in enumerate(prob.plan.solved) if c not in PELVIS_TRANSLATIONS]
    diag["template_rms_deg"] = float(np.sqrt(np.mean((q[:, prob.solved][:, ang] - ref[:, ang]) ** 2)) / DEG)
    if diag["max_slide_m"] > 0.005 or diag["max_sink_m"] > 0.005:
        raise SolverError(
            f"motion '{plan.name}': contact constraints not met (slide {diag['max_slide_m'] * 100:.1f} cm, "
            f"sink {diag['max_sink_m'] * 100:.1f} cm)"
        )
    df = pd.DataFrame(q, index=pd.Index(plan.time, name="time"), columns=kin.names)
    return Synthesis(df, prob.contact, pts, com, diag)


def diagnostics(plan: MotionPlan, pts: np.ndarray, com: np.ndarray, contact: np.ndarray) -> dict[str, float]:
    """Physical plausibility figures of a synthesised motion.

    max_slide_m: largest horizontal excursion of a contact point from where it touched down,
    over its stance. max_sink_m: deepest a stance point goes below y = 0 (positive = below).
    min_swing_height_m: lowest a swing point gets (negative = through the floor).
    flight_com_accel_err: max |a_com - g| (m/s^2) over flight frames (second differences).
    """
    slide, sink = 0.0, 0.0
    for p in range(4):
        for a, b in _runs(contact[:, p]):
            d = np.linalg.norm(pts[a: b + 1, p, [0, 2]] - pts[a, p, [0, 2]], axis=1)
            slide = max(slide, float(d.max()))
            sink = max(sink, float(-pts[a: b + 1, p, 1].min()))
    swing = np.where(~contact, pts[:, :, 1], np.inf)
    dt = float(plan.time[1] - plan.time[0])
    acc = (com[2:] - 2 * com[1:-1] + com[:-2]) / dt ** 2
    fl = ~contact.any(axis=1)
    flm = fl[1:-1] & fl[:-2] & fl[2:]
    err = np.linalg.norm(acc[flm] - np.array([0, -GRAVITY, 0]), axis=1) if flm.any() else np.zeros(1)
    stance_acc = acc[~fl[1:-1], 1]
    return {
        "max_slide_m": slide,
        "max_sink_m": sink,
        "min_swing_height_m": float(swing.min()) if np.isfinite(swing).any() else 0.0,
        "flight_com_accel_err": float(err.max()),
        "flight_frames": float(fl.sum()),
        "min_stance_com_accel_y": float(stance_acc.min()) if len(stance_acc) else 0.0,
        "speed_m_s": float((com[-1, 0] - com[0, 0]) / (plan.time[-1] - plan.time[0])),
    }
