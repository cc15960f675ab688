"""Batched static optimization in torch: all frames of a trial (or many trials) in one solve.

Problem per frame (what OpenSim's StaticOptimization solves, as a moment balance):

    minimise   sum_i |x_i|^p                       (p = activation_exponent, default 2)
    subject to sum_m r_mc F_m x_m + sum_r e_rc F_r x_r = tau_c   for every constrained coordinate c
               lo_i <= x_i <= hi_i                 (min_control / max_control of each actuator)

x_m: muscle activation, F_m its force capacity with a rigid tendon (below), r_mc its moment arm;
x_r: control of a coordinate actuator (the model's own CoordinateActuators plus reserves /
residuals) with optimal force F_r; tau_c: the inverse-dynamics generalized force. Constrained
coordinates are the unlocked, independent ones (OpenSim constrains their accelerations); the
generalized force of a coupled coordinate (knee_angle_*_beta) is added to its independent one
through the coupler slope, as the constrained forward dynamics of OpenSim's SO does.

Force capacity (rigid tendon, passive fibre force excluded, as OpenSim's
`calcInextensibleTendonActiveFiberForce` with activation 1, which OpenSim SO uses with
use_muscle_physiology). The muscle class comes from the .osim, each with its own relations
(`MUSCLE_CLASSES`; any other class raises ModelFileError naming it):
* Thelen2003Muscle: same fibre kinematics as below; f_AL = exp(-(l_f/l_opt - 1)^2 / KshapeActive)
  and f_V the inverse of Thelen's force-velocity relation at activation 1 (Af, Flen, linear
  extrapolation beyond fv_linear_extrap_threshold x Flen, zero below zero force and where the
  path is shorter than the tendon slack length, as OpenSim), analytic;
  F = F_iso f_AL f_V cos(phi) with the true pennation angle (OpenSim's Thelen uses it; the
  pennation modes coincide). Measured against OpenSim: 3e-8 N.
* DeGrooteFregly2016Muscle: l_f as below, v_f = dL/dt (L - l_ts) / l_f (its signed
  cos(phi); no pennation clamp, no minimum fibre length), f_AL / f_V the muscle's own
  `calcActiveForceLengthMultiplier` / `calcForceVelocityMultiplier` (active_force_width_scale
  included), tabulated like Millard's (f_V held constant beyond |v| = 1.5 v_max); OpenSim
  returns the active fibre force itself, F = F_iso f_AL f_V (no cos(phi)), for
  pennation="opensim"; "physical" multiplies by cos(phi).
* Millard2012EquilibriumMuscle:
    l_f = sqrt(h^2 + (L - l_ts)^2), h = l_opt sin(alpha_opt); phi = asin(h / l_f);
    v_f = dL/dt cos(phi); F = F_iso f_AL(l_f / l_opt) f_V(v_f / (l_opt v_max)) cos(phi_eff)
    (zero below the muscle's minimum fibre length). `pennation`:
    * "opensim": phi_eff = asin(h / (l_f / l_opt)): OpenSim 4.x feeds the *normalised* fibre
      length to the pennation model in calcActiveFiberForceAlongTendon, so cos(phi_eff) ~ 1
      (pennation effectively ignored). Reproduces OpenSim SO.
    * "physical": phi_eff = phi, the physically consistent force along the tendon.
Millard's f_AL and f_V are OpenSim's own curve objects of each muscle, tabulated (4001 points,
values and slopes) and interpolated by cubic Hermite splines. Measured: all three classes equal
OpenSim's `calcInextensibleTendonActiveFiberForce` to 1e-5 N (tests/test_batched_so.py,
tests/test_validate_gait2392.py).

Actuators besides muscles: the model's CoordinateActuators (plus reserves), and any other
non-muscle ScalarActuator (PointActuator / TorqueActuator residuals of gait2392-style setups,
from the model or from `force_set_files`), whose generalized force per unit control depends on
the pose and is computed with OpenSim per frame (`body_actuator_generalized_forces`).

Solver: the dual of the (strictly convex, box-constrained) problem is smooth enough for a
semismooth Newton method on the multipliers lambda (one per constrained coordinate):
x(lambda) = clip(argmin |x|^p - (A^T lambda) x, lo, hi), Newton on A x(lambda) = tau,
batched over frames with torch (float64). For p = 2 the dual is piecewise quadratic and each
step is maximised exactly along its direction (`_exact_step_length`, closed form after one
sort); Armijo backtracking remains for p != 2 and as a safeguard. With unbounded reserves on
every constrained coordinate the Newton matrix A D A^T is positive definite and 5-10
iterations reach 1e-9 N m; frames where muscles saturate take 10-25 (backtracking needed
20-100, each with 7-14 trial evaluations).

Moment arms and lengths come from `biohuman.dynamics.muscles.MuscleSurrogate`; `moment_arms`
"opensim" (computeMomentArm, what OpenSim SO applies) or "dLdq" (-dL/dq). The muscle
lengthening speed entering f_V is -(moment arms) . qdot with the same definition (OpenSim's path
speed follows computeMomentArm; see the surrogate's docstring). Both choices and all settings
are returned in `BatchedSOResult.settings` for provenance.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from biohuman.dynamics.kinematics import coordinate_name
from biohuman.dynamics.muscles import MuscleSurrogate, coordinate_ranges, fit_muscle_surrogate
from biohuman.dynamics.nimble_id import coordinate_derivatives
from biohuman.errors import ConfigError, InputFormatError, ModelFileError, SolverError
from biohuman.osim.model import load_model, opensim

PENNATION_MODES = ("opensim", "physical")
MUSCLE_CLASSES = ("Millard2012EquilibriumMuscle", "Thelen2003Muscle", "DeGrooteFregly2016Muscle")
"""Muscle classes whose SO force capacity batched SO computes (index = `MuscleParameters.kind`)."""
MOMENT_ARM_MODES = ("opensim", "dLdq")
_CURVE_POINTS = 4001


# --------------------------------------------------------------------------------------------
# muscle parameters and curves


@dataclass
class CurveTable:
    """A 1-D curve sampled on a uniform grid (values and slopes) for cubic Hermite evaluation;
    constant extrapolation of the end values (Millard's curves are flat beyond their ends)."""

    x0: float
    dx: float
    y: np.ndarray  # (n,)
    dy: np.ndarray  # (n,)

    def __call__(self, x):  # noqa: ANN001, ANN204 - torch tensor in and out
        import torch

        n = self.y.shape[0]
        y = torch.as_tensor(self.y, dtype=x.dtype, device=x.device)
        dy = torch.as_tensor(self.dy, dtype=x.dtype, device=x.device)
        u = (x - self.x0) / self.dx
        u = torch.clamp(u, 0.0, n - 1.0)
        i = torch.clamp(torch.floor(u).long(), 0, n - 2)
        t = u - i
        t2, t3 = t * t, t * t * t
        h00 = 2 * t3 - 3 * t2 + 1
        h10 = t3 - 2 * t2 + t
        h01 = -2 * t3 + 3 * t2
        h11 = t3 - t2
        return h00 * y[i] + h10 * self.dx * dy[i] + h01 * y[i + 1] + h11 * self.dx * dy[i + 1]


def _tabulate(curve, lo: float, hi: float) -> CurveTable:  # noqa: ANN001 - OpenSim curve object
    xs = np.linspace(lo, hi, _CURVE_POINTS)
    y = np.array([curve.calcValue(float(v)) for v in xs])
    dy = np.array([curve.calcDerivative(float(v), 1) for v in xs])
    return CurveTable(x0=lo, dx=(hi - lo) / (_CURVE_POINTS - 1), y=y, dy=dy)


class _FunctionCurve:
    """A scalar function exposed like an OpenSim curve (calcValue / calcDerivative), slope by
    central differences (for smooth functions such as DeGrooteFregly2016's curves)."""

    def __init__(self, fn, step: float = 1e-6) -> None:  # noqa: ANN001 - callable float -> float
        self.fn, self.step = fn, step

    def calcValue(self, x: float) -> float:  # noqa: N802 - OpenSim naming
        return float(self.fn(x))

    def calcDerivative(self, x: float, order: int) -> float:  # noqa: N802, ARG002 - OpenSim naming
        return (float(self.fn(x + self.step)) - float(self.fn(x - self.step))) / (2 * self.step)


def _thelen_fv(v, af, flen, threshold):  # noqa: ANN001, ANN202 - torch tensors
    """Thelen2003Muscle's force-velocity multiplier at activation 1 from the normalised fibre
    velocity v (l_opt/s / v_max, lengthening positive): the inverse of Thelen 2003 eqs. 6-7 as
    OpenSim implements them (`calcdlceN` with a = 1), linearly extrapolated below zero force
    (v < -1) and above `threshold` x Flen, as OpenSim does."""
    import torch

    # concentric (v <= 0): v = (f - 1) / (1 + f / Af)
    conc = (1.0 + v) / torch.clamp(1.0 - v / af, min=1e-12)
    conc_lin = (v + 1.0) / (1.0 + 1.0 / af)  # slope of the curve at f = 0, continued
    # eccentric: v = (f - 1) / (c (Flen - f)), c = (2 + 2/Af) / (Flen - 1)
    c = (2.0 + 2.0 / af) / (flen - 1.0)
    ecc = (1.0 + v * c * flen) / torch.clamp(1.0 + v * c, min=1e-12)
    f0 = threshold * flen
    b0 = c * (flen - f0)
    v0 = (f0 - 1.0) / b0
    slope = 1.0 / b0 + (f0 - 1.0) * c / (b0 * b0)  # dv/df at f0
    ecc_lin = f0 + (v - v0) / slope
    return torch.where(v <= 0, torch.where(v > -1.0, conc, conc_lin), torch.where(v < v0, ecc, ecc_lin))


@dataclass
class MuscleParameters:
    """Muscle parameters of a model's muscles (arrays (M,), SI units).

    fiso N; l_opt, l_ts, height (pennation parallelogram height), min_fiber_length m;
    alpha_opt, max_pennation rad; v_max optimal lengths per s; min_control, max_control;
    fal / fv: per muscle index into `curves` (identical curves share a table; -1 for analytic
    Thelen curves). kind: index into MUSCLE_CLASSES (default all Millard); thelen: (M, 4)
    KshapeActive, Af, Flen, fv_linear_extrap_threshold (NaN for other classes).
    """

    names: tuple[str, ...]
    fiso: np.ndarray
    l_opt: np.ndarray
    l_ts: np.ndarray
    alpha_opt: np.ndarray
    v_max: np.ndarray
    height: np.ndarray
    max_pennation: np.ndarray
    min_fiber_length: np.ndarray
    min_control: np.ndarray
    max_control: np.ndarray
    fal: np.ndarray
    fv: np.ndarray
    curves: list[CurveTable] = field(default_factory=list)
    kind: np.ndarray | None = None
    thelen: np.ndarray | None = None


def muscle_parameters(model_osim: str | Path, muscles: Sequence[str] | None = None) -> MuscleParameters:
    """Read each muscle's parameters and force-length / force-velocity relations from the
    .osim (classes in MUSCLE_CLASSES; any other raises ModelFileError naming the class)."""
    osim = opensim()
    model = load_model(model_osim)
    ms = model.getMuscles()
    names = list(muscles) if muscles is not None else [ms.get(i).getName() for i in range(ms.getSize())]
    cols: dict[str, list] = {k: [] for k in ("fiso", "l_opt", "l_ts", "alpha_opt", "v_max", "height", "max_pennation",
                                             "min_fiber_length", "min_control", "max_control", "fal", "fv", "kind",
                                             "thelen")}
    curves: list[CurveTable] = []
    signature: dict[tuple, int] = {}

    def table(curve, lo: float, hi: float) -> int:  # noqa: ANN001
        probe = np.linspace(lo, hi, 97)
        key = (lo, hi) + tuple(np.round([curve.calcValue(float(v)) for v in probe], 12))
        if key not in signature:
            signature[key] = len(curves)
            curves.append(_tabulate(curve, lo, hi))
        return signature[key]

    for n in names:
        if not ms.contains(n):
            raise ModelFileError(f"model has no muscle named {n}", model_osim)
        base = ms.get(n)
        cls = base.getConcreteClassName()
        if cls not in MUSCLE_CLASSES:
            raise ModelFileError(f"muscle {n} is a {cls}; batched SO supports {', '.join(MUSCLE_CLASSES)}",
                                 model_osim)
        mu = getattr(osim, cls).safeDownCast(base)
        l_opt, alpha = mu.getOptimalFiberLength(), mu.getPennationAngleAtOptimalFiberLength()
        cols["fiso"].append(mu.getMaxIsometricForce())
        cols["l_opt"].append(l_opt)
        cols["l_ts"].append(mu.getTendonSlackLength())
        cols["alpha_opt"].append(alpha)
        cols["v_max"].append(mu.getMaxContractionVelocity())
        cols["min_control"].append(mu.getMinControl())
        cols["max_control"].append(mu.getMaxControl())
        cols["kind"].append(MUSCLE_CLASSES.index(cls))
        if cls == "Millard2012EquilibriumMuscle":
            cols["height"].append(mu.getPennationModel().getParallelogramHeight())
            cols["max_pennation"].append(mu.get_maximum_pennation_angle())
            cols["min_fiber_length"].append(mu.getMinimumFiberLength())
            cols["fal"].append(table(mu.get_ActiveForceLengthCurve(), 0.0, 3.0))
            cols["fv"].append(table(mu.get_ForceVelocityCurve(), -1.5, 1.5))
            cols["thelen"].append([np.nan] * 4)
        elif cls == "Thelen2003Muscle":
            cols["height"].append(l_opt * math.sin(alpha))
            cols["max_pennation"].append(mu.get_maximum_pennation_angle())
            cols["min_fiber_length"].append(mu.getMinimumFiberLength())
            cols["fal"].append(-1)
            cols["fv"].append(-1)
            cols["thelen"].append([mu.get_KshapeActive(), mu.get_Af(), mu.get_Flen(),
                                   mu.get_fv_linear_extrap_threshold()])
        else:  # DeGrooteFregly2016Muscle: rigid-tendon fibre kinematics, no clamps
            cols["height"].append(l_opt * math.sin(alpha))
            cols["max_pennation"].append(math.pi / 2)
            cols["min_fiber_length"].append(0.0)
            cols["fal"].append(table(_FunctionCurve(mu.calcActiveForceLengthMultiplier), 0.0, 3.0))
            cols["fv"].append(table(_FunctionCurve(mu.calcForceVelocityMultiplier), -1.5, 1.5))
            cols["thelen"].append([np.nan] * 4)
    ints = ("fal", "fv", "kind")
    arr = {k: np.asarray(v, dtype=int if k in ints else float) for k, v in cols.items()}
    arr["thelen"] = arr["thelen"].reshape(-1, 4)
    return MuscleParameters(names=tuple(names), curves=curves, **arr)


def force_capacity(params: MuscleParameters, length, speed, pennation: str = "opensim"):  # noqa: ANN001, ANN201
    """Rigid-tendon active force capacity at activation 1 (N), torch (T, M) from muscle-tendon
    length (T, M) m and lengthening speed (T, M) m/s; see the module docstring."""
    import torch

    if pennation not in PENNATION_MODES:
        raise ConfigError(f"pennation must be one of {PENNATION_MODES}, got {pennation!r}")
    kw = {"dtype": length.dtype, "device": length.device}
    t = {k: torch.as_tensor(getattr(params, k), **kw) for k in
         ("fiso", "l_opt", "l_ts", "v_max", "height", "max_pennation", "min_fiber_length")}
    h = t["height"]
    lf = torch.sqrt(h * h + (length - t["l_ts"]) ** 2)
    ratio = torch.clamp(h / lf, max=1.0)
    phi = torch.where(lf > h, torch.asin(ratio), t["max_pennation"].expand_as(lf))
    phi = torch.minimum(phi, t["max_pennation"])
    vf = speed * torch.cos(phi)
    kind = np.zeros(len(params.names), dtype=int) if params.kind is None else np.asarray(params.kind)
    dg = np.flatnonzero(kind == MUSCLE_CLASSES.index("DeGrooteFregly2016Muscle"))
    if dg.size:  # DeGrooteFregly2016: cos(phi) = (L - l_ts) / l_f, signed (negative below slack)
        vf[:, dg] = speed[:, dg] * (length[:, dg] - t["l_ts"][dg]) / lf[:, dg]
    lfn = lf / t["l_opt"]
    vfn = vf / (t["l_opt"] * t["v_max"])
    fal = torch.ones_like(lfn)
    fv = torch.ones_like(vfn)
    for k, curve in enumerate(params.curves):
        sel = np.flatnonzero(params.fal == k)
        if sel.size:
            fal[:, sel] = curve(lfn[:, sel])
        sel = np.flatnonzero(params.fv == k)
        if sel.size:
            fv[:, sel] = curve(vfn[:, sel])
    th = np.flatnonzero(kind == MUSCLE_CLASSES.index("Thelen2003Muscle"))
    if th.size:
        tp = torch.as_tensor(params.thelen[th], **kw)  # (Mt, 4)
        fal[:, th] = torch.exp(-((lfn[:, th] - 1.0) ** 2) / tp[:, 0])
        # OpenSim returns no force below zero force-velocity multiplier (shortening faster
        # than v_max) and when the path is shorter than the tendon (fibre along tendon <= 0)
        fv[:, th] = torch.clamp(_thelen_fv(vfn[:, th], tp[:, 1], tp[:, 2], tp[:, 3]), min=0.0)
        fal[:, th] = torch.where(length[:, th] > t["l_ts"][th], fal[:, th], torch.zeros_like(fal[:, th]))
    if pennation == "opensim":
        ratio_n = torch.clamp(h / lfn, max=1.0)
        phi_eff = torch.where(lfn > h, torch.asin(ratio_n), t["max_pennation"].expand_as(lfn))
        phi_eff = torch.minimum(phi_eff, t["max_pennation"])
        cos_eff = torch.cos(phi_eff)
        if th.size:  # Thelen's calcActiveFiberForceAlongTendon uses the true pennation angle
            cos_eff[:, th] = torch.cos(phi[:, th])
        if dg.size:  # DeGrooteFregly2016 returns the active fibre force itself
            cos_eff[:, dg] = 1.0
    else:
        cos_eff = torch.cos(phi)
    cap = t["fiso"] * fal * fv * cos_eff
    return torch.where(lf > t["min_fiber_length"], cap, torch.zeros_like(cap))


# --------------------------------------------------------------------------------------------
# actuators


@dataclass(frozen=True)
class CoordinateActuatorSpec:
    """A coordinate actuator SO may use: generalized force = control x optimal_force."""

    name: str
    coordinate: str
    optimal_force: float
    min_control: float
    max_control: float
    reserve: bool  # added by biohuman (True) or part of the model (False)


def actuator_specs(model, reserves: Mapping[str, float] | str | None = "auto", *,  # noqa: ANN001
                   reserve_max_control: float = math.inf) -> list[CoordinateActuatorSpec]:
    """The model's enabled CoordinateActuators plus reserves ('auto': see
    `biohuman.osim.so.auto_reserves`; a mapping coordinate -> optimal force; None: none)."""
    osim = opensim()
    from biohuman.osim.so import RESERVE_PREFIX, resolve_reserves

    specs = []
    fs = model.getForceSet()
    for i in range(fs.getSize()):
        ca = osim.CoordinateActuator.safeDownCast(fs.get(i))
        if ca is not None and ca.get_appliesForce():
            specs.append(CoordinateActuatorSpec(ca.getName(), ca.get_coordinate(), float(ca.getOptimalForce()),
                                                float(ca.getMinControl()), float(ca.getMaxControl()), False))
    res = resolve_reserves(model, reserves)
    cs = model.getCoordinateSet()
    for c, f in res.items():
        if not cs.contains(c):
            raise ConfigError(f"reserve names a coordinate the model lacks: {c}")
        if not (f > 0 and math.isfinite(f)):
            raise ConfigError(f"reserve optimal force must be positive and finite: {c}={f}")
        specs.append(CoordinateActuatorSpec(f"{RESERVE_PREFIX}{c}", c, f, -reserve_max_control,
                                            reserve_max_control, True))
    return specs


@dataclass(frozen=True)
class BodyActuatorSpec:
    """A non-muscle, non-coordinate ScalarActuator of the model (PointActuator, TorqueActuator,
    PathActuator, ...): generalized force = control x optimal_force x (its pose-dependent
    generalized force per unit actuation, computed with OpenSim per frame)."""

    name: str
    kind: str
    optimal_force: float
    min_control: float
    max_control: float


def model_with_force_sets(model_osim: str | Path, force_set_files: Sequence[str | Path] = ()):  # noqa: ANN201
    """The model, with the forces of each ForceSet XML appended (what OpenSim's AnalyzeTool does
    with `force_set_files` and replace_force_set = false), system built. Raises
    InputFormatError naming a file OpenSim cannot read."""
    osim = opensim()
    if not force_set_files:
        return load_model(model_osim)
    model = osim.Model(str(model_osim))
    for f in force_set_files:
        f = Path(f)
        try:
            fs = osim.ForceSet(str(f))
        except Exception as exc:  # OpenSim raises RuntimeError with its own message
            raise InputFormatError(f"OpenSim could not read the force set: {exc}", f) from exc
        for i in range(fs.getSize()):
            model.addForce(fs.get(i).clone())
    model.finalizeConnections()
    model.initSystem()
    return model


def body_actuator_specs(model) -> list[BodyActuatorSpec]:  # noqa: ANN001
    """Enabled ScalarActuators of the model that are neither muscles nor CoordinateActuators."""
    osim = opensim()
    out = []
    fs = model.getForceSet()
    for i in range(fs.getSize()):
        f = fs.get(i)
        act = osim.ScalarActuator.safeDownCast(f)
        if (act is None or not act.get_appliesForce() or osim.Muscle.safeDownCast(f) is not None
                or osim.CoordinateActuator.safeDownCast(f) is not None):
            continue
        out.append(BodyActuatorSpec(act.getName(), act.getConcreteClassName(), float(act.getOptimalForce()),
                                    float(act.getMinControl()), float(act.getMaxControl())))
    return out


def body_actuator_generalized_forces(model, specs: Sequence[BodyActuatorSpec],  # noqa: ANN001 - opensim.Model
                                     coordinates: pd.DataFrame, constrained: Sequence[str]) -> np.ndarray:
    """(T, C, G) generalized force on each constrained coordinate per unit control of each body
    actuator at each frame of `coordinates` (rad / m; columns names or state paths; missing
    coordinates at their defaults). Computed with OpenSim's InverseDynamicsSolver as the
    difference of the generalized forces with and without the actuator applying an actuation of
    optimal_force (all other forces off, zero speeds and accelerations), so any actuator whose
    force depends on the pose only is exact. Cost ~1 ms per frame and actuator."""
    osim = opensim()
    from biohuman.osim._tools import set_pose

    out = np.zeros((len(coordinates), len(constrained), len(specs)))
    if not specs:
        return out
    m = osim.Model(model)
    state = m.initSystem()
    fs = m.getForceSet()
    for i in range(fs.getSize()):
        fs.get(i).setAppliesForce(state, False)
    acts = [osim.ScalarActuator.safeDownCast(fs.get(s.name)) for s in specs]
    for a in acts:
        a.overrideActuation(state, True)
    cs = m.getCoordinateSet()
    cols = []  # mobility (u) index of each constrained coordinate: the u a unit speed sets
    for c in constrained:
        for i in range(cs.getSize()):
            cs.get(i).setSpeedValue(state, 0.0)
        cs.get(c).setSpeedValue(state, 1.0)
        cols.append(int(np.argmax(np.abs(state.getU().to_numpy()))))
    solver = osim.InverseDynamicsSolver(m)
    udot = osim.Vector(state.getNU(), 0.0)
    qcols = {coordinate_name(str(c)) or str(c): c for c in coordinates.columns}
    for k in range(len(coordinates)):
        row = coordinates.iloc[k]
        set_pose(m, state, {c: float(row[qcols[c]]) for c in qcols if cs.contains(c)})
        for c in range(cs.getSize()):
            cs.get(c).setSpeedValue(state, 0.0)
        base = solver.solve(state, udot).to_numpy()
        for g, (a, s) in enumerate(zip(acts, specs)):
            a.setAppliesForce(state, True)
            a.setOverrideActuation(state, s.optimal_force)
            out[k, :, g] = (base - solver.solve(state, udot).to_numpy())[cols]
            a.setAppliesForce(state, False)
    return out


# --------------------------------------------------------------------------------------------
# solver


@dataclass
class SolveInfo:
    """Diagnostics of `solve_static_optimization`: iterations (int), converged (T,) bool,
    residual (T,) max |A x - tau| (same units as tau)."""

    iterations: int
    converged: np.ndarray
    residual: np.ndarray


def _primal(s, lo, hi, p: float):  # noqa: ANN001, ANN202
    """x(s) = clip(argmin_x |x|^p - s x, lo, hi) and dx/ds (0 where clipped)."""
    import torch

    if p == 2.0:
        x = 0.5 * s
        dx = torch.full_like(s, 0.5)
    else:
        a = torch.abs(s) / p
        x = torch.sign(s) * a ** (1.0 / (p - 1.0))
        dx = (1.0 / (p * (p - 1.0))) * torch.clamp(a, min=1e-12) ** ((2.0 - p) / (p - 1.0))
    inside = (x > lo) & (x < hi)
    return torch.clamp(x, lo, hi), torch.where(inside, dx, torch.zeros_like(dx))


@dataclass
class SOProblem:
    """A batch of SO problems in the sparse layout the solver uses (torch tensors).

    a_mus (T, Cm, M): muscle generalized force per unit activation (moment arm x capacity) on
    the Cm constrained coordinates that muscles span, `rows` (Cm,) their indices among all C
    constrained coordinates; act_coord (R,) index of each coordinate actuator's coordinate,
    act_force (R,) its optimal force; tau (T, C) required generalized forces; lo / hi (M + R,)
    bounds of [muscle activations, actuator controls].
    """

    a_mus: object
    rows: object
    act_coord: object
    act_force: object
    tau: object
    lo: object
    hi: object

    def transposed_product(self, lam):  # noqa: ANN001, ANN201
        """A^T lambda, (T, M + R)."""
        import torch

        # row-vector form (T, 1, Cm) @ (T, Cm, M): about 2x faster on CPU than (T, M, Cm) @ (T, Cm, 1)
        sm = torch.bmm(lam[:, self.rows].unsqueeze(1), self.a_mus).squeeze(1)
        return torch.cat([sm, lam[:, self.act_coord] * self.act_force], dim=1)

    def product(self, x):  # noqa: ANN001, ANN201
        """A x, (T, C)."""
        m = self.a_mus.shape[2]
        out = torch_zeros_like(self.tau)
        out[:, self.rows] = torch_bmv(self.a_mus_t, x[:, :m])
        return out.index_add(1, self.act_coord, x[:, m:] * self.act_force)

    def newton_step(self, dx, g):  # noqa: ANN001, ANN201
        """Solve (A diag(dx) A^T) step = -g, (T, C). The matrix is block diagonal: a dense
        (Cm x Cm) block on the muscle-spanned coordinates (Cholesky, least squares where that
        fails) and a diagonal of actuator terms elsewhere (zero step where no actuator is free).
        """
        import torch

        m = self.a_mus.shape[2]
        diag = torch.zeros_like(self.tau).index_add(1, self.act_coord, dx[:, m:] * self.act_force**2)
        step = torch.where(diag > 0, -g / torch.where(diag > 0, diag, torch.ones_like(diag)), torch.zeros_like(g))
        if self.rows.numel():
            jm = (self.a_mus * dx[:, None, :m]) @ self.a_mus_t + torch.diag_embed(diag[:, self.rows])
            scale = jm.diagonal(dim1=1, dim2=2).abs().amax(-1).clamp(min=1e-30)
            jm = jm + 1e-12 * scale[:, None, None] * torch.eye(len(self.rows), dtype=jm.dtype, device=jm.device)
            rhs = g[:, self.rows].unsqueeze(-1)
            chol, info = torch.linalg.cholesky_ex(jm)
            sm = -torch.cholesky_solve(rhs, chol).squeeze(-1)
            bad = info != 0
            if bool(bad.any()):
                sm[bad] = -torch.linalg.lstsq(jm[bad], rhs[bad]).solution.squeeze(-1)
            step[:, self.rows] = sm
        return step

    def __post_init__(self) -> None:
        self.a_mus_t = self.a_mus.transpose(1, 2).contiguous()

    def subset(self, idx):  # noqa: ANN001, ANN201
        """The problems of frames `idx` (a 1-D index tensor) only."""
        return SOProblem(a_mus=self.a_mus[idx], rows=self.rows, act_coord=self.act_coord,
                         act_force=self.act_force, tau=self.tau[idx], lo=self.lo, hi=self.hi)


def torch_zeros_like(t):  # noqa: ANN001, ANN201
    import torch

    return torch.zeros_like(t)


def torch_bmv(m_t, v):  # noqa: ANN001, ANN201
    """Batched matrix-vector product M v, (T, r, c) @ (T, c) -> (T, r), given M's transpose
    m_t (T, c, r) contiguous: computed as the row vector v^T M^T, which CPU bmm does about 2x
    faster than the column form."""
    import torch

    return torch.bmm(v.unsqueeze(1), m_t).squeeze(1)


def _exact_step_length(s0, u, slope, lo, hi):  # noqa: ANN001, ANN202 - torch tensors
    """Exact maximiser t >= 0 of the dual along a Newton direction, for p = 2.

    Along lambda + t d the primal is x(t) = clip((s0 + t u) / 2, lo, hi) with s0 = A^T lambda,
    u = A^T d, so the dual's derivative phi'(t) = d.tau - u.x(t) is piecewise linear and
    non-increasing: variable i adds slope -u_i^2 / 2 on the interval of t where it is free.
    Sorting those 2 (M + R) interval ends per frame gives phi' at every breakpoint by cumulative
    sums, and its root in closed form: no matrix product, one sort. slope = phi'(0) (T,).
    Returns t (T,); 1 where phi' never reaches zero (unbounded dual: an infeasible frame).
    """
    import torch

    big = 1e200  # stands for +inf without producing inf - inf
    nz = u != 0
    safe = torch.where(nz, u, torch.ones_like(u))
    ta, tb = (2.0 * lo - s0) / safe, (2.0 * hi - s0) / safe
    a = torch.where(nz, torch.minimum(ta, tb), torch.zeros_like(u)).clamp(0.0, big)
    b = torch.where(nz, torch.maximum(ta, tb), torch.zeros_like(u)).clamp(0.0, big)
    w = 0.5 * u * u
    ends, order = torch.sort(torch.cat([a, b], 1), dim=1)
    s_k = torch.cumsum(torch.gather(torch.cat([-w, w], 1), 1, order), 1)  # slope on [E_k, E_k+1]
    width = torch.cat([ends[:, 1:] - ends[:, :-1], torch.full_like(ends[:, :1], big)], 1)
    f_end = slope[:, None] + torch.cumsum(s_k * width, 1)  # phi'(E_k+1)
    f_start = torch.cat([slope[:, None], f_end[:, :-1]], 1)  # phi'(E_k)
    hit = f_end <= 0
    k = torch.argmax(hit.to(torch.int8), 1, keepdim=True)  # first interval holding the root
    sk, fk, ek = (torch.gather(v, 1, k).squeeze(1) for v in (s_k, f_start, ends))
    t = torch.where(sk < 0, ek + fk / (-sk).clamp(min=1e-300), ek)
    return torch.where(hit.any(1), t.clamp(min=0.0), torch.ones_like(t))


def solve_static_optimization(problem: SOProblem, *, p: float = 2.0, max_iterations: int = 200,  # noqa: ANN201
                              tolerance: float = 1e-9):
    """Batched box-constrained minimum-sum-|x|^p solve of A x = tau (semismooth Newton on the
    dual; exact line search for p = 2, Armijo backtracking otherwise and as its safeguard; see
    the module docstring).

    Returns (x (T, M + R), SolveInfo). Frames whose residual stays above `tolerance` x
    (1 + max |tau|) after `max_iterations` are reported as not converged (e.g. an infeasible,
    too weak model without reserves).
    """
    import torch

    if p <= 1.0:
        raise ConfigError(f"activation_exponent must be > 1, got {p}")
    pr = problem
    tau = pr.tau
    t_n, c_n = tau.shape
    lo, hi = pr.lo.expand(t_n, -1), pr.hi.expand(t_n, -1)
    # start from the bound-free minimum-norm solution (all x free, p = 2): A (A^T lam / 2) = tau.
    # Starting from lam = 0 instead leaves every muscle at its lower bound, where the Newton
    # matrix only sees the weak reserves and the first steps overshoot (measured: frames stalled).
    lam = pr.newton_step(torch.full((t_n, lo.shape[1]), 0.5, dtype=tau.dtype, device=tau.device), -tau)
    scale = 1.0 + tau.abs().amax(-1)

    def evaluate(pb, lam_, lo_, hi_, s_=None):  # noqa: ANN001, ANN202 - a (sub)problem, its multipliers
        s_ = pb.transposed_product(lam_) if s_ is None else s_  # A^T lambda
        x_, dx_ = _primal(s_, lo_, hi_, p)
        g_ = pb.product(x_) - pb.tau
        psi_ = (x_.abs() ** p).sum(-1) - (lam_ * g_).sum(-1)  # dual function (concave)
        return lam_, s_, x_, dx_, g_, psi_

    lam_i, s_i, x_i, dx_i, g_i, psi_i = range(6)  # positions in `evaluate`'s result
    state = list(evaluate(pr, lam, lo, hi))  # over all frames
    it = 0
    for it in range(1, max_iterations + 1):
        res = state[g_i].abs().amax(-1)
        todo = res > tolerance * scale
        if not bool(todo.any()):
            it -= 1
            break
        # only the frames not yet converged take part (most converge in 5-9 iterations; the
        # few hard ones of a running or jumping trial need more)
        idx = torch.nonzero(todo).squeeze(1)
        sub = pr if len(idx) == t_n else pr.subset(idx)
        lo_s, hi_s = lo[idx], hi[idx]
        cur = [v[idx] for v in state]
        step = sub.newton_step(cur[dx_i], cur[g_i])
        slope = -(cur[g_i] * step).sum(-1)  # directional derivative of psi (>= 0)
        n_s = len(idx)
        pending = torch.arange(n_s, device=tau.device)  # frames whose step is not yet taken
        if p == 2.0:
            # exact line search: piecewise-quadratic dual, maximised along the step in closed form.
            # Backtracking from the full step needed 7-14 trial evaluations per iteration on
            # saturated frames (the Newton matrix sees only the muscles free at the current point).
            u = sub.transposed_product(step)
            t_ex = _exact_step_length(cur[s_i], u, slope, lo_s, hi_s)
            trial = evaluate(sub, cur[lam_i] + t_ex[:, None] * step, lo_s, hi_s, cur[s_i] + t_ex[:, None] * u)
            ok = trial[psi_i] >= cur[psi_i] - 1e-12 * (1.0 + cur[psi_i].abs())  # no loss beyond rounding
            for v, nv in zip(cur, trial):
                v[ok] = nv[ok]
            pending = pending[~ok]
        t_step = torch.ones(n_s, dtype=tau.dtype, device=tau.device)
        for _ in range(40 if len(pending) else 0):  # Armijo backtracking from the full step
            # only the frames still backtracking are evaluated (a subproblem copy pays off
            # once they are under half of the batch)
            n_p = len(pending)
            pb = sub if n_p == n_s else sub.subset(pending) if 2 * n_p < n_s else None
            rows_p = slice(None) if pb is sub else pending
            new = cur[lam_i][rows_p] + t_step[rows_p, None] * step[rows_p]
            if pb is None:  # most frames pending: evaluate all, keep the pending ones
                full = cur[lam_i].clone()
                full[pending] = new
                trial = [v[pending] for v in evaluate(sub, full, lo_s, hi_s)]
            else:
                trial = evaluate(pb, new, lo_s[rows_p], hi_s[rows_p])
            psi_p = cur[psi_i][pending]
            ok = trial[psi_i] >= psi_p + 1e-4 * t_step[pending] * slope[pending] - 1e-13 * psi_p.abs()
            acc = pending[ok]
            for v, nv in zip(cur, trial):
                v[acc] = nv[ok]
            pending = pending[~ok]
            if not len(pending):
                break
            t_step[pending] *= 0.5
        for v, nv in zip(state, cur):
            v[idx] = nv
    x, g = state[x_i], state[g_i]
    res = g.abs().amax(-1)
    conv = res <= tolerance * scale
    return x, SolveInfo(iterations=it, converged=conv.cpu().numpy(), residual=res.cpu().numpy())


# --------------------------------------------------------------------------------------------
# problem assembly


@dataclass
class BatchedSOResult:
    """Result of `batched_static_optimization`.

    activation (T x muscles); muscle_force (T x muscles) N (= activation x capacity, active
    force along the tendon; no passive force, as OpenSim SO); capacity (T x muscles) N;
    actuator_controls (T x coordinate actuators, model's and reserves); reserve_actuation
    (T x coordinates with an added reserve) generalized force N m / N; constraint_violation
    (T,) N m (N for translations): max |muscle + actuator - ID| over constrained coordinates;
    converged (T,); extrapolated (T,) True where the pose leaves the surrogate's sampled box;
    iterations; timing_s: "geometry" (surrogate + capacity), "solve", "total"
    (seconds, excluding the surrogate fit); settings: provenance (moment-arm and pennation
    definitions, exponent, reserves, surrogate metadata summary, device).
    """

    activation: pd.DataFrame
    muscle_force: pd.DataFrame
    capacity: pd.DataFrame
    actuator_controls: pd.DataFrame
    reserve_actuation: pd.DataFrame
    constraint_violation: np.ndarray
    converged: np.ndarray
    iterations: int
    timing_s: dict
    settings: dict
    extrapolated: np.ndarray | None = None

    def write(self, out_dir: str | Path, name: str) -> dict[str, Path]:
        """Write `<name>_activation.sto`, `<name>_force.sto` (muscles + reserve generalized
        forces) and `<name>_so_violation.csv` (constraint_violation, converged, extrapolated per
        frame) into out_dir (atomic); returns the paths."""
        from biohuman.io.atomic import atomic_path
        from biohuman.io.storage import write_storage

        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        paths = {"activation_sto": out_dir / f"{name}_activation.sto", "force_sto": out_dir / f"{name}_force.sto",
                 "violation": out_dir / f"{name}_so_violation.csv"}
        write_storage(paths["activation_sto"], self.activation, in_degrees=False, name=f"{name}_batched_so_activation")
        forces = pd.concat([self.muscle_force, self.reserve_actuation.add_prefix("reserve_")], axis=1)
        write_storage(paths["force_sto"], forces, in_degrees=False, name=f"{name}_batched_so_force")
        viol = pd.DataFrame({"constraint_violation": self.constraint_violation, "converged": self.converged},
                            index=self.activation.index)
        if self.extrapolated is not None:
            viol["extrapolated"] = self.extrapolated
        with atomic_path(paths["violation"]) as tmp:
            viol.to_csv(tmp, index_label="time")
        return paths


def constrained_coordinates(model) -> tuple[list[str], dict[str, tuple[str, object]]]:  # noqa: ANN001
    """(unlocked independent coordinates in model order, {coupled: (independent, function)})."""
    from biohuman.dynamics.muscles import _independent_free

    return _independent_free(model)


def required_generalized_forces(model, joint_moments: pd.DataFrame, coordinates: pd.DataFrame,  # noqa: ANN001
                                constrained: Sequence[str], couplers: Mapping[str, tuple[str, object]]) -> np.ndarray:
    """(T, C) generalized forces the actuators must supply: ID moments of the constrained
    coordinates plus coupled-coordinate moments times their coupler slope."""
    osim = opensim()
    cols = {coordinate_name(str(c)) or str(c): c for c in joint_moments.columns}
    for suffix in ("_moment", "_force"):  # OpenSim ID labels
        cols.update({str(c)[: -len(suffix)]: c for c in joint_moments.columns if str(c).endswith(suffix)})
    missing = [c for c in constrained if c not in cols]
    if missing:
        raise InputFormatError(f"joint moments lack constrained coordinates {missing}")
    tau = np.column_stack([joint_moments[cols[c]].to_numpy(dtype=float) for c in constrained])
    qcols = {coordinate_name(str(c)): c for c in coordinates.columns}
    x = osim.Vector(1, 0.0)
    d1 = osim.StdVectorInt([0])
    for dep, (ind, fn) in couplers.items():
        if dep not in cols or ind not in constrained:
            continue
        if ind in qcols:
            th = coordinates[qcols[ind]].to_numpy(dtype=float)
        else:  # absent from the frame: held at its default, as the inverse dynamics did
            th = np.full(len(coordinates), model.getCoordinateSet().get(ind).getDefaultValue())
        slope = np.empty(len(th))
        for k, v in enumerate(th):
            x.set(0, float(v))
            slope[k] = fn.calcDerivative(d1, x)
        tau[:, constrained.index(ind)] += slope * joint_moments[cols[dep]].to_numpy(dtype=float)
    return tau


def _align(coordinates: pd.DataFrame, times: np.ndarray) -> np.ndarray:
    """Row indices of `coordinates` at `times` (within 1e-6 s); InputFormatError otherwise."""
    t = coordinates.index.to_numpy(dtype=float)
    k = np.searchsorted(t, times)
    k = np.clip(k, 1, len(t) - 1)
    k = np.where(np.abs(t[k - 1] - times) <= np.abs(t[k] - times), k - 1, k)
    if np.any(np.abs(t[k] - times) > 1e-6):
        raise InputFormatError("joint-moment times must be rows of the coordinates frame")
    return k


def batched_static_optimization(
    model_osim: str | Path,
    coordinates: pd.DataFrame,
    joint_moments: pd.DataFrame,
    *,
    surrogate: MuscleSurrogate | None = None,
    speeds: pd.DataFrame | None = None,
    **options,  # noqa: ANN003 - see batched_static_optimization_trials
) -> BatchedSOResult:
    """Static optimization of all frames of one trial at once (see the module docstring).

    model_osim: scaled .osim (Millard2012EquilibriumMuscle muscles). coordinates: DataFrame,
    index time (s), coordinate columns (names or state paths) in rad / m, covering the
    joint-moment times (velocities come from natural quintic splines of these coordinates, as
    OpenSim's tools do, unless `speeds` (same layout, rad/s, m/s) is given). joint_moments:
    inverse dynamics (T x coordinates, N m / N; biohuman or OpenSim labels), muscles excluded;
    its rows are the frames solved. surrogate: fitted MuscleSurrogate (default: fitted and
    cached beside the model over this trial's coordinate ranges; see
    `biohuman.dynamics.muscles.fit_muscle_surrogate`). Other options (reserves,
    reserve_max_control, activation_exponent, pennation, moment_arms, device, max_iterations,
    tolerance, force_set_files): see `batched_static_optimization_trials`.
    """
    if surrogate is None:
        surrogate = fit_muscle_surrogate(model_osim, coordinate_ranges(coordinates),
                                         moment_arms=options.get("moment_arms", "opensim"), poses=coordinates)
    return batched_static_optimization_trials(model_osim, [(coordinates, joint_moments, speeds)],
                                              surrogate=surrogate, **options)[0]


def batched_static_optimization_trials(
    model_osim: str | Path,
    trials: Sequence[tuple[pd.DataFrame, pd.DataFrame] | tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame | None]],
    *,
    surrogate: MuscleSurrogate,
    reserves: Mapping[str, float] | str | None = "auto",
    reserve_max_control: float = math.inf,
    activation_exponent: float = 2.0,
    pennation: str = "opensim",
    moment_arms: str = "opensim",
    device: str = "cpu",
    max_iterations: int = 200,
    tolerance: float = 1e-9,
    force_set_files: Sequence[str | Path] = (),
) -> list[BatchedSOResult]:
    """Static optimization of the frames of several trials of one scaled model in one solve.

    trials: (coordinates, joint_moments[, speeds]) per trial, as for
    `batched_static_optimization`. surrogate: the model's MuscleSurrogate, fitted over all the
    trials' coordinate ranges. reserves: 'auto' (pelvis residuals 100, other free rotational
    coordinates without a model actuator 1; see `biohuman.osim.so.auto_reserves`) | mapping
    coordinate -> optimal force | None, controls bounded by +-reserve_max_control.
    activation_exponent: p > 1. pennation: "opensim" | "physical". moment_arms: "opensim" (needs
    a surrogate fitted with moment_arms="opensim") | "dLdq". device: torch device ("cpu",
    "cuda"); float64 throughout. Returns one BatchedSOResult per trial (timing_s and iterations
    are those of the joint solve). force_set_files: ForceSet XMLs appended to the model (an
    SO setup's `force_set_files`, e.g. residual actuators); their CoordinateActuators join the
    model's, and every other non-muscle ScalarActuator of the model (PointActuator,
    TorqueActuator, ...) enters with its pose-dependent generalized forces
    (`body_actuator_generalized_forces`, OpenSim per frame) and its control bounds; their
    controls come first in `actuator_controls`. Raises ConfigError for bad settings,
    InputFormatError for misaligned inputs and SolverError when no frame converges.
    """
    import torch

    t_start = time.perf_counter()
    if pennation not in PENNATION_MODES:
        raise ConfigError(f"pennation must be one of {PENNATION_MODES}, got {pennation!r}")
    if moment_arms not in MOMENT_ARM_MODES:
        raise ConfigError(f"moment_arms must be one of {MOMENT_ARM_MODES}, got {moment_arms!r}")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} requested but CUDA is not available")
    if moment_arms == "opensim" and surrogate.moment_arms != "opensim":
        raise ConfigError("moment_arms='opensim' needs a surrogate fitted with moment_arms='opensim'")
    if not trials:
        raise ConfigError("no trials given")
    model_osim = Path(model_osim)
    model = model_with_force_sets(model_osim, force_set_files)
    params = muscle_parameters(model_osim, surrogate.muscles)
    constrained, couplers = constrained_coordinates(model)
    specs = actuator_specs(model, reserves, reserve_max_control=reserve_max_control)
    body_specs = body_actuator_specs(model)
    ignored = [s.name for s in specs if s.coordinate not in constrained]
    specs = [s for s in specs if s.coordinate in constrained]

    per_trial = []
    for trial in trials:
        coordinates, joint_moments = trial[0], trial[1]
        speeds = trial[2] if len(trial) > 2 else None
        times = joint_moments.index.to_numpy(dtype=float)
        rows = _align(coordinates, times)
        q_all = surrogate.coordinate_matrix(coordinates)
        if speeds is not None:
            qd = surrogate.coordinate_matrix(speeds.iloc[_align(speeds, times)])
        else:
            qd_all, _ = coordinate_derivatives(coordinates.index.to_numpy(dtype=float), q_all, "spline")
            qd = qd_all[rows]
        tau = required_generalized_forces(model, joint_moments, coordinates.iloc[rows], constrained, couplers)
        per_trial.append({"times": times, "q": q_all[rows], "qd": qd, "tau": tau,
                          "body": body_actuator_generalized_forces(model, body_specs, coordinates.iloc[rows],
                                                                   constrained),
                          "outside": surrogate.outside_box(q_all[rows]).any(axis=1)})
    sizes = [len(t["times"]) for t in per_trial]

    t_geo = time.perf_counter()
    kw = {"dtype": torch.float64, "device": torch.device(device)}
    qt = torch.as_tensor(np.concatenate([t["q"] for t in per_trial]), **kw)
    qdt = torch.as_tensor(np.concatenate([t["qd"] for t in per_trial]), **kw)
    geo = surrogate.evaluate(qt, dldq=moment_arms != "opensim")
    arms = geo["moment_arm"] if moment_arms == "opensim" else -geo["dldq"]  # (T, M, K)
    speed = -(arms * qdt[:, None, :]).sum(-1)  # path lengthening speed consistent with the arms
    cap = force_capacity(params, geo["length"], speed, pennation)  # (T, M)
    spanned = [ci for ci, c in enumerate(constrained) if c in surrogate.coordinates]
    k_index = [surrogate.coordinates.index(constrained[ci]) for ci in spanned]
    a_mus = (arms[:, :, k_index] * cap[:, :, None]).transpose(1, 2).contiguous()  # (T, Cm, M)
    if body_specs:  # body actuators join the dense block: columns after the muscles
        body = np.concatenate([t["body"] for t in per_trial])  # (T, C, G)
        body_rows = np.flatnonzero(np.abs(body).max(axis=(0, 2)) > 0)
        dense = sorted(set(spanned) | {int(r) for r in body_rows})
        a_all = torch.zeros((body.shape[0], len(dense), a_mus.shape[2] + len(body_specs)), **kw)
        a_all[:, [dense.index(r) for r in spanned], : a_mus.shape[2]] = a_mus
        a_all[:, :, a_mus.shape[2]:] = torch.as_tensor(body[:, dense, :], **kw)
        a_mus, spanned = a_all, dense
    problem = SOProblem(
        a_mus=a_mus,
        rows=torch.as_tensor(spanned, dtype=torch.long, device=kw["device"]),
        act_coord=torch.as_tensor([constrained.index(s.coordinate) for s in specs], dtype=torch.long,
                                  device=kw["device"]),
        act_force=torch.as_tensor([s.optimal_force for s in specs], **kw),
        tau=torch.as_tensor(np.concatenate([t["tau"] for t in per_trial]), **kw),
        lo=torch.as_tensor(np.concatenate([params.min_control, [s.min_control for s in body_specs],
                                           [s.min_control for s in specs]]), **kw),
        hi=torch.as_tensor(np.concatenate([params.max_control, [s.max_control for s in body_specs],
                                           [s.max_control for s in specs]]), **kw),
    )
    m_n = cap.shape[1]
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    t_solve = time.perf_counter()
    x, info = solve_static_optimization(problem, p=float(activation_exponent), max_iterations=max_iterations,
                                        tolerance=tolerance)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    t_end = time.perf_counter()
    if not info.converged.any():
        raise SolverError(f"batched static optimization converged at no frame (max residual "
                          f"{float(np.max(info.residual)):.3g}); the model is too weak or lacks reserves", model_osim)
    x_all = x.cpu().numpy()
    cap_all = cap.cpu().numpy()
    muscles = list(surrogate.muscles)
    settings = {
        "solver": "batched_so", "activation_exponent": float(activation_exponent), "pennation": pennation,
        "moment_arms": moment_arms,
        "moment_arm_definition": surrogate.metadata.get("moment_arm_definition_doc", moment_arms)
        if moment_arms == "opensim" else "-dL/dq of the length surrogate",
        "reserves": {s.coordinate: s.optimal_force for s in specs if s.reserve},
        "model_actuators": [s.name for s in body_specs] + [s.name for s in specs if not s.reserve],
        "force_set_files": [str(f) for f in force_set_files], "reserve_max_control": reserve_max_control,
        "ignored_actuators_on_unconstrained_coordinates": ignored,
        "constrained_coordinates": list(constrained), "device": device, "dtype": "float64",
        "tolerance": tolerance, "passive_fiber_force": "excluded (as OpenSim SO)", "tendon": "rigid",
        "surrogate": {k: surrogate.metadata.get(k) for k in ("model_sha256", "moment_arm_definition", "summary_mm")},
        "trials_in_solve": len(trials), "frames_in_solve": int(sum(sizes)),
    }
    timing = {"setup": t_geo - t_start, "geometry": t_solve - t_geo, "solve": t_end - t_solve, "total": t_end - t_geo}
    results, start = [], 0
    for tr, n in zip(per_trial, sizes):
        sl = slice(start, start + n)
        start += n
        xs, caps = x_all[sl], cap_all[sl]
        index = pd.Index(tr["times"], name="time")
        results.append(BatchedSOResult(
            activation=pd.DataFrame(xs[:, :m_n], index=index, columns=muscles),
            muscle_force=pd.DataFrame(xs[:, :m_n] * caps, index=index, columns=muscles),
            capacity=pd.DataFrame(caps, index=index, columns=muscles),
            actuator_controls=pd.DataFrame(xs[:, m_n:], index=index,
                                           columns=[s.name for s in body_specs] + [s.name for s in specs]),
            reserve_actuation=pd.DataFrame({s.coordinate: xs[:, m_n + len(body_specs) + j] * s.optimal_force
                                            for j, s in enumerate(specs) if s.reserve}, index=index),
            constraint_violation=info.residual[sl],
            converged=info.converged[sl],
            iterations=info.iterations,
            extrapolated=tr["outside"],
            timing_s=dict(timing),
            settings=settings | {"frames_outside_surrogate_box": int(tr["outside"].sum())},
        ))
    return results


def batched_so_trial(
    model_osim: str | Path,
    coordinates: pd.DataFrame,
    grf,  # noqa: ANN001 - biohuman.dynamics.grf.GroundForces | None
    *,
    time_range: Sequence[float] | None = None,
    qdd_method: str = "spline",
    surrogate: MuscleSurrogate | None = None,
    **so_options,  # noqa: ANN003 - forwarded to batched_static_optimization
) -> BatchedSOResult:
    """Nimble inverse dynamics + batched static optimization of one trial.

    coordinates: the whole (filtered) trial, rad / m; grf: its ground forces (None: no external
    loads); time_range: (s, s) frames to solve (default all; ID and velocities use every row).
    qdd_method: see `biohuman.dynamics.nimble_id.coordinate_derivatives` ("speed_spline"
    reproduces OpenSim SO's target accelerations). The result's timing_s gains "inverse_dynamics"
    and its settings "qdd_method".
    """
    from biohuman.dynamics.nimble_id import inverse_dynamics

    t0 = time.perf_counter()
    tau = inverse_dynamics(model_osim, coordinates, grf, qdd_method=qdd_method)
    t_id = time.perf_counter() - t0
    if time_range is not None:
        a, b = float(time_range[0]), float(time_range[1])
        tau = tau.loc[(tau.index >= a - 1e-9) & (tau.index <= b + 1e-9)]
        if tau.empty:
            raise InputFormatError(f"no coordinate rows in time range {a}-{b} s")
    res = batched_static_optimization(model_osim, coordinates, tau, surrogate=surrogate, **so_options)
    res.timing_s["inverse_dynamics"] = t_id
    res.settings["qdd_method"] = qdd_method
    res.settings["inverse_dynamics"] = "nimblephysics (biohuman.dynamics.nimble_id), bias=opensim"
    return res


__all__ = [
    "MOMENT_ARM_MODES", "MUSCLE_CLASSES", "PENNATION_MODES", "BatchedSOResult", "CoordinateActuatorSpec", "CurveTable",
    "BodyActuatorSpec", "MuscleParameters", "SOProblem", "SolveInfo", "actuator_specs",
    "body_actuator_generalized_forces", "body_actuator_specs", "model_with_force_sets", "batched_so_trial",
    "batched_static_optimization",
    "batched_static_optimization_trials",
    "constrained_coordinates", "force_capacity", "muscle_parameters", "required_generalized_forces",
    "solve_static_optimization",
]
