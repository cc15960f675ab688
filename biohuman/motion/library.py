"""The synthetic motion library: joint-angle templates, contact schedules and task targets.

Each motion is a `MotionPlan`: reference trajectories for every model coordinate (radians /
metres) built from keyframes that follow the gait and movement literature, a schedule telling
which foot contact points (heel, toe of each foot) are on the floor, flight phases, and which
coordinates the trajectory optimiser (`biohuman.motion.synth`) may adjust to keep stance feet
fixed on the floor, keep the body balanced and make flight ballistic.

Sources for the shapes and timings (sagittal-plane means of healthy adults):
- walking: Winter, *Biomechanics and Motor Control of Human Movement* (2009), Perry & Burnfield,
  *Gait Analysis* (2010): heel strike at 0 %, opposite toe-off ~12 %, heel-off ~40 %, toe-off
  ~62 %; hip 30 deg flexion at heel strike to ~10 deg extension at ~50 %; knee ~18 deg loading
  response, ~60 deg peak swing; ankle ~10 deg dorsiflexion late stance, ~15 deg plantarflexion at
  toe-off. Cadence-speed relation after Grieve & Gear (1966).
- running (~3 m/s): Novacheck, *Gait Posture* 7 (1998): stance ~35 % of the stride, two flight
  phases, knee ~40 deg mid-stance and ~100 deg in swing, hip ~40 deg peak flexion.
- squat: Schoenfeld, *J Strength Cond Res* 24 (2010); sit-to-stand: Schenkman et al.,
  *Phys Ther* 70 (1990) (from seat-off; the seat is not modelled); counter-movement jump: Linthorne,
  *Am J Phys* 69 (2001); forward lunge: Riemann et al., *J Strength Cond Res* 26 (2012).

Note: Rajagopal2015's 80 muscles are all in the legs and hips; its arms and trunk are driven by
torque actuators, so the arm raise gives pose labels and joint moments but no arm-muscle
activations.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from scipy.interpolate import CubicSpline

from biohuman.errors import ConfigError
from biohuman.motion.curves import Keyframes, Periodic, intervals_mask, periodic_intervals

DEG = np.pi / 180.0
GENERIC_HEIGHT_M = 1.70
"""Stature of the subject Rajagopal2015 was built from (Rajagopal et al. 2016)."""

CONTACT_POINTS = ("heel_r", "toe_r", "heel_l", "toe_l")

LEG_SOLVED = (
    "pelvis_tx", "pelvis_ty", "pelvis_tz",
    "hip_flexion_r", "hip_adduction_r", "hip_rotation_r", "knee_angle_r", "ankle_angle_r",
    "hip_flexion_l", "hip_adduction_l", "hip_rotation_l", "knee_angle_l", "ankle_angle_l",
)


@dataclass
class MotionPlan:
    """What to synthesise: references, contacts and task settings on a common time base.

    q_ref values are radians (rotational) or metres (translational), arrays of shape (T,).
    contact[p] is a (T,) bool array for each point in CONTACT_POINTS.
    """

    name: str
    motion_type: str
    time: np.ndarray
    q_ref: dict[str, np.ndarray]
    contact: dict[str, np.ndarray]
    solved: tuple[str, ...] = LEG_SOLVED
    quasi_static: bool = False
    speed_m_s: float = 0.0
    cycle_s: float = 0.0  # stride time of cyclic motions (0 for one-off motions)
    sd: dict[str, float] = field(default_factory=dict)
    description: str = ""
    stance_accel: np.ndarray | None = None
    """Optional (T, 3) target COM acceleration in stance (m/s^2); default zero."""
    angular_momentum: bool = False
    """Dynamic balance with the whole-body angular momentum about the COM (the multi-body centre
    of pressure that ground-force estimation and inverse dynamics see), not the point mass alone."""
    trunk_balance: tuple[str, ...] = ()
    """Trunk coordinates that a last synthesis stage also solves, with the whole-body angular
    momentum rate penalised (sd key `angular_rate`), so that the trunk balances the legs' swing."""

    @property
    def flight(self) -> np.ndarray:
        """(T,) True where no contact point touches the floor."""
        return ~np.any(np.stack([self.contact[p] for p in CONTACT_POINTS]), axis=0)


@dataclass(frozen=True)
class Style:
    """How one subject performed one trial: the per-trial variation of a library motion.

    Real recordings differ from trial to trial in speed, cadence, depth, tempo and where the
    clip starts; without that variation every activation pattern is a function of the motion
    type alone and a motion-type mean would predict it. The nominal style (all defaults) gives
    the library's textbook motion.
    """

    speed: float = 1.0
    """Cyclic motions: factor on the nominal speed (walking amplitudes follow speed)."""
    cadence: float = 1.0
    """Cyclic motions: factor on the stride frequency at the same speed."""
    start_phase: float = 0.0
    """Cyclic motions: fraction of the gait cycle at which the clip starts (0 = right foot strike)."""
    amplitude: float = 1.0
    """Discrete motions: factor on every joint excursion from the standing posture (squat depth,
    lunge step and depth, counter-movement depth, arm elevation)."""
    tempo: float = 1.0
    """Discrete motions: factor on the duration of the movement (> 1 slower)."""
    onset_s: float = 0.0
    """Discrete motions: extra quiet standing before the movement starts (s)."""

    def to_dict(self) -> dict[str, float]:
        """Plain-data form for the trial's ground truth and provenance."""
        return {k: float(v) for k, v in self.__dict__.items()}


NOMINAL = Style()

VARIATION_KEYS = ("speed", "cadence", "start_phase", "amplitude", "tempo", "onset_s")
"""Style fields with a configurable [low, high] range (`synthetic.variation` in config.yaml)."""

CYCLIC = frozenset({"walk", "run"})
"""Motion types built from gait cycles; the others are one repetition of a discrete movement."""


def _check_motion(motion: str) -> None:
    """ConfigError naming the known motions when `motion` is not one of them."""
    if motion not in MOTIONS:
        raise ConfigError(f"unknown motion '{motion}'; known: {', '.join(sorted(MOTIONS))}")


def sample_style(motion: str, ranges: dict[str, tuple[float, float]], rng: np.random.Generator) -> Style:
    """Draw a trial's style uniformly from `ranges` (field -> [low, high]); fields that do not
    apply to the motion (cyclic vs discrete) stay nominal. Every field is drawn, in a fixed
    order, so that the stream (and so the other fields) does not depend on which apply."""
    _check_motion(motion)
    unknown = set(ranges) - set(VARIATION_KEYS)
    if unknown:
        raise ConfigError(f"unknown variation key(s) {sorted(unknown)}; known: {', '.join(VARIATION_KEYS)}")
    values = {}
    for key in VARIATION_KEYS:
        lo, hi = ranges.get(key, (getattr(NOMINAL, key),) * 2)
        if hi < lo:
            raise ConfigError(f"synthetic.variation.{key}: low {lo} > high {hi}")
        values[key] = float(rng.uniform(lo, hi))
    cyclic = MOTION_TYPE[motion] in CYCLIC
    keep = ("speed", "cadence", "start_phase") if cyclic else ("amplitude", "tempo", "onset_s")
    return Style(**{k: (v if k in keep else getattr(NOMINAL, k)) for k, v in values.items()})


# --------------------------------------------------------------------------------------------
# Helpers to build references
# --------------------------------------------------------------------------------------------


def _deg(curve: Callable[[np.ndarray], np.ndarray], x: np.ndarray) -> np.ndarray:
    return curve(x) * DEG


def _mirror(phase: np.ndarray, curve: Periodic) -> np.ndarray:
    """Left side of a cyclic motion: the right curve half a cycle later."""
    return curve(phase + 0.5)


def _time(duration: float, rate: float) -> np.ndarray:
    n = int(round(duration * rate)) + 1
    return np.arange(n) / rate


# --------------------------------------------------------------------------------------------
# Cyclic motions
# --------------------------------------------------------------------------------------------

WALK_HIP = [(0.0, 30), (0.12, 25), (0.3, 8), (0.5, -10), (0.6, -5), (0.75, 15), (0.87, 31)]
WALK_KNEE = [(0.0, 4), (0.15, 18), (0.4, 5), (0.5, 10), (0.62, 38), (0.73, 60), (0.87, 28), (0.96, 4)]
WALK_ANKLE = [(0.0, 0), (0.07, -6), (0.25, 5), (0.45, 10), (0.62, -15), (0.72, -8), (0.85, 1)]
WALK_HIP_ADD = [(0.0, 1), (0.15, 6), (0.5, 0), (0.67, -5), (0.85, -1)]
WALK_HIP_ROT = [(0.0, 2), (0.2, 4), (0.55, -3), (0.8, -2)]


def _scaled_cycle(keys: list[tuple[float, float]], k: float) -> Periodic:
    """A cyclic curve whose excursions about the keyframes' mean are scaled by k (range grows
    with speed, mean posture kept)."""
    mean = np.mean([v for _, v in keys])
    return Periodic([(p, mean + k * (v - mean)) for p, v in keys])


def _gait_clock(stride: float, cycles: float, rate: float, start_phase: float) -> tuple[np.ndarray, np.ndarray, float]:
    """Trial time, gait phase (cycles since a right foot strike) and the clip's start time on
    the gait clock, for a clip of `cycles` strides starting `start_phase` into the cycle."""
    t = _time(cycles * stride, rate)
    t0 = start_phase * stride
    return t, (t + t0) / stride, t0


def _cyclic_contacts(t: np.ndarray, t0: float, stride: float, phases: dict[str, tuple[float, float]]) -> dict[str, np.ndarray]:
    """Contact masks from (on, off) phases of each contact point, on a clip starting at t0."""
    tc = t + t0
    t_end = float(tc[-1]) + 1e-9
    return {p: intervals_mask(tc, periodic_intervals(on, off, stride, t0, t_end)) for p, (on, off) in phases.items()}


def walking(speed: float, height: float, rate: float, cycles: float = 1.2, name: str = "walk",
            cadence_factor: float = 1.0, start_phase: float = 0.0) -> MotionPlan:
    """Level walking at `speed` m/s, the clip starting `start_phase` into the cycle (0: right
    heel strike).

    Stride time from a cadence-speed relation scaled by stature (taller people take longer,
    slower steps at the same speed): cadence [steps/min] = (64 + 37 v) * sqrt(1.70 / height),
    times `cadence_factor` (individual preference). Sagittal ranges grow mildly with speed.
    """
    cadence = (64.0 + 37.0 * speed) * np.sqrt(GENERIC_HEIGHT_M / height) * cadence_factor
    stride = 120.0 / cadence
    t, ph, t0 = _gait_clock(stride, cycles, rate, start_phase)
    amp = float(np.clip(0.75 + 0.2 * speed, 0.85, 1.1))
    hip = _scaled_cycle(WALK_HIP, amp)
    knee = _scaled_cycle(WALK_KNEE, amp)
    ankle = Periodic(WALK_ANKLE)
    hadd = Periodic(WALK_HIP_ADD)
    hrot = Periodic(WALK_HIP_ROT)
    q = {
        "pelvis_tilt": _deg(Periodic([(0.0, -2), (0.25, -4), (0.5, -2), (0.75, -4)]), ph),
        "pelvis_list": _deg(Periodic([(0.0, 0), (0.15, -4), (0.5, 0), (0.65, 4)]), ph),
        "pelvis_rotation": _deg(Periodic([(0.0, 5), (0.5, -5)]), ph),
        "pelvis_tx": speed * t,
        "pelvis_ty": np.full_like(t, 0.94 * height / GENERIC_HEIGHT_M),
        "pelvis_tz": 0.02 * np.sin(2 * np.pi * ph),
        "hip_flexion_r": _deg(hip, ph), "hip_flexion_l": _deg(hip, ph + 0.5),
        "knee_angle_r": _deg(knee, ph), "knee_angle_l": _deg(knee, ph + 0.5),
        "ankle_angle_r": _deg(ankle, ph), "ankle_angle_l": _deg(ankle, ph + 0.5),
        "hip_adduction_r": _deg(hadd, ph), "hip_adduction_l": _deg(hadd, ph + 0.5),
        "hip_rotation_r": _deg(hrot, ph), "hip_rotation_l": _deg(hrot, ph + 0.5),
        "lumbar_extension": _deg(Periodic([(0.0, -3), (0.25, -4), (0.5, -3), (0.75, -4)]), ph),
        "lumbar_bending": _deg(Periodic([(0.0, 0), (0.2, 2), (0.5, 0), (0.7, -2)]), ph),
        "lumbar_rotation": _deg(Periodic([(0.0, -3), (0.5, 3)]), ph),
        # arms swing opposite to the ipsilateral leg
        "arm_flex_r": _deg(Periodic([(0.0, -12 * amp), (0.5, 10 * amp)]), ph),
        "arm_flex_l": _deg(Periodic([(0.0, 10 * amp), (0.5, -12 * amp)]), ph),
        "arm_add_r": np.full_like(t, -8 * DEG), "arm_add_l": np.full_like(t, -8 * DEG),
        "elbow_flex_r": _deg(Periodic([(0.0, 15), (0.5, 30)]), ph),
        "elbow_flex_l": _deg(Periodic([(0.0, 30), (0.5, 15)]), ph),
        "pro_sup_r": np.full_like(t, 40 * DEG), "pro_sup_l": np.full_like(t, 40 * DEG),
    }
    contact = _cyclic_contacts(t, t0, stride, {"heel_r": (0.0, 0.42), "toe_r": (0.08, 0.62),
                                               "heel_l": (0.5, 0.92), "toe_l": (0.58, 0.12)})
    # balance with the whole body's angular momentum (the legs' swing is not free: the centre of
    # pressure it implies must stay under the feet), and a pelvis height smooth enough that the
    # vertical COM acceleration stays in the range of walking forces (+-0.2 g), not frame-to-frame
    # zig-zags that move the implied centre of pressure by decimetres
    return MotionPlan(name, "walk", t, q, contact, speed_m_s=speed, cycle_s=stride, angular_momentum=True,
                      trunk_balance=("pelvis_tilt", "lumbar_extension"),
                      sd={"smooth_translation": 0.0002, "stance_accel_v": 1.0, "angular_rate": 40.0},
                      description=f"level walking at {speed:.2f} m/s, stride {stride:.2f} s")


RUN_HIP = [(0.0, 30), (0.18, 12), (0.36, -12), (0.5, -2), (0.7, 38), (0.87, 40)]
RUN_KNEE = [(0.0, 18), (0.14, 40), (0.36, 20), (0.55, 75), (0.7, 100), (0.85, 45), (0.95, 20)]
RUN_ANKLE = [(0.0, 3), (0.12, 18), (0.36, -22), (0.5, -10), (0.7, 3), (0.9, 6)]


def running(speed: float, height: float, rate: float, cycles: float = 1.3, name: str = "run",
            cadence_factor: float = 1.0, start_phase: float = 0.0) -> MotionPlan:
    """Running at `speed` m/s: rear-foot strike, stance 36 % of the stride, two flight phases;
    the clip starts `start_phase` into the cycle (0: right foot strike). Hip and knee ranges
    grow with speed (Novacheck 1998), nominal at 3.2 m/s."""
    cadence = (150.0 + 6.0 * speed) * np.sqrt(GENERIC_HEIGHT_M / height) * cadence_factor
    stride = 120.0 / cadence
    t, ph, t0 = _gait_clock(stride, cycles, rate, start_phase)
    k = float(np.clip(1.0 + 0.1 * (speed - 3.2), 0.85, 1.15))
    hip, knee, ankle = _scaled_cycle(RUN_HIP, k), _scaled_cycle(RUN_KNEE, k), Periodic(RUN_ANKLE)
    q = {
        "pelvis_tilt": _deg(Periodic([(0.0, -6), (0.25, -9), (0.5, -6), (0.75, -9)]), ph),
        "pelvis_list": _deg(Periodic([(0.0, 0), (0.15, -5), (0.5, 0), (0.65, 5)]), ph),
        "pelvis_rotation": _deg(Periodic([(0.0, 6), (0.5, -6)]), ph),
        "pelvis_tx": speed * t,
        "pelvis_ty": np.full_like(t, 0.92 * height / GENERIC_HEIGHT_M),
        "pelvis_tz": 0.015 * np.sin(2 * np.pi * ph),
        "hip_flexion_r": _deg(hip, ph), "hip_flexion_l": _deg(hip, ph + 0.5),
        "knee_angle_r": _deg(knee, ph), "knee_angle_l": _deg(knee, ph + 0.5),
        "ankle_angle_r": _deg(ankle, ph), "ankle_angle_l": _deg(ankle, ph + 0.5),
        "hip_adduction_r": _deg(Periodic([(0.0, 2), (0.15, 8), (0.45, 0), (0.7, -4)]), ph),
        "hip_adduction_l": _deg(Periodic([(0.0, 2), (0.15, 8), (0.45, 0), (0.7, -4)]), ph + 0.5),
        "hip_rotation_r": _deg(Periodic([(0.0, 3), (0.3, 5), (0.6, -3)]), ph),
        "hip_rotation_l": _deg(Periodic([(0.0, 3), (0.3, 5), (0.6, -3)]), ph + 0.5),
        "lumbar_extension": _deg(Periodic([(0.0, -8), (0.25, -10), (0.5, -8), (0.75, -10)]), ph),
        "lumbar_rotation": _deg(Periodic([(0.0, -6), (0.5, 6)]), ph),
        "arm_flex_r": _deg(Periodic([(0.0, -25), (0.5, 25)]), ph),
        "arm_flex_l": _deg(Periodic([(0.0, 25), (0.5, -25)]), ph),
        "arm_add_r": np.full_like(t, -10 * DEG), "arm_add_l": np.full_like(t, -10 * DEG),
        "elbow_flex_r": _deg(Periodic([(0.0, 75), (0.5, 95)]), ph),
        "elbow_flex_l": _deg(Periodic([(0.0, 95), (0.5, 75)]), ph),
        "pro_sup_r": np.full_like(t, 50 * DEG), "pro_sup_l": np.full_like(t, 50 * DEG),
    }
    contact = _cyclic_contacts(t, t0, stride, {"heel_r": (0.0, 0.12), "toe_r": (0.04, 0.36),
                                               "heel_l": (0.5, 0.62), "toe_l": (0.54, 0.86)})
    # stance COM acceleration of a spring-mass runner: a half-sine vertical force whose impulse
    # carries body weight over the whole step (stance + flight), and a braking-then-propulsion
    # fore-aft force (Cavagna 1964; Novacheck 1998): a_y = -g + F/m, a_x = -A sin(2 pi tau / Ts)
    duty = 0.36
    ts = duty * stride
    tau = np.mod(ph, 0.5) * stride  # time since the last foot strike
    in_stance = tau < ts
    peak = np.pi * 9.80665 * (stride / 2) / (2 * ts)
    acc = np.zeros((len(t), 3))
    acc[:, 1] = np.where(in_stance, -9.80665 + peak * np.sin(np.pi * np.clip(tau / ts, 0, 1)), 0.0)
    acc[:, 0] = np.where(in_stance, -3.0 * np.sin(2 * np.pi * np.clip(tau / ts, 0, 1)), 0.0)
    return MotionPlan(name, "run", t, q, contact, speed_m_s=speed, cycle_s=stride, stance_accel=acc,
                      angular_momentum=True,
                      sd={"stance_accel_v": 1.5, "stance_accel_h": 1.5, "cop": 0.05, "smooth_translation": 0.0002,
                          "accel": 0.1},
                      description=f"running at {speed:.2f} m/s, stride {stride:.2f} s")


# --------------------------------------------------------------------------------------------
# Discrete motions (one repetition)
# --------------------------------------------------------------------------------------------


def _standing_refs(t: np.ndarray, height: float) -> dict[str, np.ndarray]:
    """Quiet standing references: arms relaxed at the sides."""
    z = np.zeros_like(t)
    return {
        "pelvis_ty": np.full_like(t, 0.94 * height / GENERIC_HEIGHT_M),
        "pelvis_tx": z.copy(), "pelvis_tz": z.copy(),
        "arm_add_r": np.full_like(t, -6 * DEG), "arm_add_l": np.full_like(t, -6 * DEG),
        "elbow_flex_r": np.full_like(t, 10 * DEG), "elbow_flex_l": np.full_like(t, 10 * DEG),
        "pro_sup_r": np.full_like(t, 40 * DEG), "pro_sup_l": np.full_like(t, 40 * DEG),
    }


def _both(q: dict[str, np.ndarray], name: str, values: np.ndarray) -> None:
    q[f"{name}_r"] = values
    q[f"{name}_l"] = values.copy()


def _all_down(t: np.ndarray) -> dict[str, np.ndarray]:
    return {p: np.ones_like(t, dtype=bool) for p in CONTACT_POINTS}


def squat(height: float, rate: float, depth: float = 1.0, name: str = "squat") -> MotionPlan:
    """Bodyweight squat to ~95 deg hip / ~105 deg knee flexion (scaled by `depth`), arms forward."""
    t = _time(3.2, rate)
    q = _standing_refs(t, height)
    k = [(0.0, 0.0), (0.4, 0.0), (1.5, 1.0), (1.7, 1.0), (2.8, 0.0), (3.2, 0.0)]
    s = Keyframes(k)(t) * depth
    _both(q, "hip_flexion", (95 * s + 2) * DEG)
    _both(q, "knee_angle", (105 * s + 3) * DEG)
    _both(q, "ankle_angle", (28 * s + 1) * DEG)
    q["hip_adduction_r"] = q["hip_adduction_l"] = -6 * s * DEG - 2 * DEG
    q["hip_rotation_r"] = q["hip_rotation_l"] = -6 * s * DEG
    q["pelvis_tilt"] = -8 * s * DEG
    q["lumbar_extension"] = -12 * s * DEG
    _both(q, "arm_flex", (80 * s) * DEG)
    _both(q, "elbow_flex", (10 + 5 * s) * DEG)
    return MotionPlan(name, "squat", t, q, _all_down(t), quasi_static=True,
                      description="bodyweight squat, one repetition")


def sit_to_stand(height: float, rate: float, name: str = "sit_to_stand") -> MotionPlan:
    """Rise from a chair, starting at seat-off (the chair is not modelled, so the trial begins
    when the thighs leave the seat and all weight is on the feet)."""
    t = _time(2.2, rate)
    q = _standing_refs(t, height)
    rise = Keyframes([(0.0, 1.0), (0.15, 1.0), (1.4, 0.0), (2.2, 0.0)])(t)
    _both(q, "hip_flexion", (100 * rise + 1) * DEG)
    _both(q, "knee_angle", (88 * rise + 3) * DEG)
    _both(q, "ankle_angle", (14 * rise + 1) * DEG)
    q["hip_adduction_r"] = q["hip_adduction_l"] = -4 * rise * DEG
    q["pelvis_tilt"] = -15 * rise * DEG
    q["lumbar_extension"] = -22 * rise * DEG
    _both(q, "arm_flex", 35 * rise * DEG)
    return MotionPlan(name, "sit_to_stand", t, q, _all_down(t), quasi_static=True,
                      description="sit-to-stand from seat-off")


def counter_movement_jump(height: float, rate: float, flight_s: float = 0.44,
                          name: str = "cmj") -> MotionPlan:
    """Counter-movement jump with arm swing; flight time `flight_s` (0.44 s ~ 24 cm jump)."""
    t_off = 1.12
    t_land = t_off + flight_s
    t = _time(t_land + 0.85, rate)
    q = _standing_refs(t, height)
    hip = Keyframes([(0, 2), (0.3, 2), (0.8, 75), (0.87, 75), (t_off, -6), (t_off + 0.2, 2),
                     (t_land, 14), (t_land + 0.3, 48), (t_land + 0.85, 3)])
    knee = Keyframes([(0, 3), (0.3, 3), (0.8, 88), (0.87, 88), (t_off, 4), (t_off + 0.2, 8),
                      (t_land, 16), (t_land + 0.3, 70), (t_land + 0.85, 4)])
    ankle = Keyframes([(0, 1), (0.3, 1), (0.8, 26), (0.87, 26), (1.0, 8), (t_off, -32),
                       (t_off + 0.2, -28), (t_land, -22), (t_land + 0.1, 5), (t_land + 0.3, 24),
                       (t_land + 0.85, 1)])
    _both(q, "hip_flexion", _deg(hip, t))
    _both(q, "knee_angle", _deg(knee, t))
    _both(q, "ankle_angle", _deg(ankle, t))
    trunk = Keyframes([(0, 0), (0.3, 0), (0.8, -28), (0.87, -28), (t_off, 0), (t_land, -4),
                       (t_land + 0.3, -22), (t_land + 0.85, 0)])
    q["lumbar_extension"] = _deg(trunk, t) * 0.5
    q["pelvis_tilt"] = _deg(trunk, t) * 0.4
    arms = Keyframes([(0, 0), (0.3, 0), (0.8, -45), (0.87, -45), (t_off, 80), (t_off + 0.2, 80),
                      (t_land, 30), (t_land + 0.3, 15), (t_land + 0.85, 0)])
    _both(q, "arm_flex", _deg(arms, t))
    contact = {
        "heel_r": intervals_mask(t, [(0.0, 1.0), (t_land + 0.05, t[-1] + 1)]),
        "toe_r": intervals_mask(t, [(0.0, t_off), (t_land, t[-1] + 1)]),
    }
    contact["heel_l"], contact["toe_l"] = contact["heel_r"].copy(), contact["toe_r"].copy()
    return MotionPlan(name, "cmj", t, q, contact, sd={"stance_accel_v": 10.0, "cop": 0.05},
                      description=f"counter-movement jump, {flight_s:.2f} s flight")


def lunge(height: float, rate: float, name: str = "lunge") -> MotionPlan:
    """Forward lunge with the right leg: step forward, lower until both knees reach ~90 deg,
    push back to standing."""
    t = _time(3.6, rate)
    q = _standing_refs(t, height)
    hip_r = Keyframes([(0, 2), (0.3, 2), (0.55, 45), (0.75, 30), (0.85, 28), (1.6, 85), (1.8, 85),
                       (2.5, 28), (2.6, 32), (2.8, 45), (3.05, 2), (3.6, 2)])
    knee_r = Keyframes([(0, 3), (0.3, 3), (0.55, 45), (0.75, 8), (0.85, 8), (1.6, 95), (1.8, 95),
                        (2.5, 10), (2.65, 40), (2.85, 35), (3.05, 3), (3.6, 3)])
    ankle_r = Keyframes([(0, 1), (0.25, -6), (0.4, -10), (0.6, 2), (0.75, 0), (0.85, 0), (1.6, 22),
                         (1.8, 22), (2.5, 2), (2.6, -10), (2.85, 0), (3.05, 1), (3.6, 1)])
    hip_l = Keyframes([(0, 2), (0.3, 2), (0.75, -14), (0.85, -16), (1.6, -8), (1.8, -8), (2.5, -16),
                       (3.05, 2), (3.6, 2)])
    knee_l = Keyframes([(0, 3), (0.3, 3), (0.75, 8), (0.95, 15), (1.6, 95), (1.8, 95), (2.5, 15),
                        (3.05, 3), (3.6, 3)])
    ankle_l = Keyframes([(0, 1), (0.3, 1), (0.75, 6), (0.95, -5), (1.6, -18), (1.8, -18),
                         (2.5, -5), (2.75, 6), (3.05, 1), (3.6, 1)])
    q["hip_flexion_r"], q["knee_angle_r"], q["ankle_angle_r"] = _deg(hip_r, t), _deg(knee_r, t), _deg(ankle_r, t)
    q["hip_flexion_l"], q["knee_angle_l"], q["ankle_angle_l"] = _deg(hip_l, t), _deg(knee_l, t), _deg(ankle_l, t)
    q["lumbar_extension"] = _deg(Keyframes([(0, 0), (0.85, -4), (1.6, -6), (1.8, -6), (3.05, 0)]), t)
    q["pelvis_tx"] = 0.36 * Keyframes([(0, 0), (0.3, 0), (0.9, 0.8), (1.7, 1.0), (2.6, 0.8), (3.1, 0), (3.6, 0)])(t) * height / GENERIC_HEIGHT_M
    contact = {
        "heel_r": intervals_mask(t, [(0.0, 0.25), (0.75, 2.55), (3.05, 9.0)]),
        "toe_r": intervals_mask(t, [(0.0, 0.35), (0.8, 2.62), (3.1, 9.0)]),
        "heel_l": intervals_mask(t, [(0.0, 0.95), (2.7, 9.0)]),
        "toe_l": np.ones_like(t, dtype=bool),
    }
    return MotionPlan(name, "lunge", t, q, contact, quasi_static=True,
                      description="forward lunge, right leg leading")


def arm_raise(height: float, rate: float, name: str = "arm_raise") -> MotionPlan:
    """Bilateral forward arm raise to ~85 deg followed by a right-arm forward reach with trunk
    lean (pose labels and joint moments; the arms have no muscles in Rajagopal2015)."""
    t = _time(4.0, rate)
    q = _standing_refs(t, height)
    raise_ = Keyframes([(0, 0), (0.3, 0), (1.2, 1), (1.5, 1), (2.3, 0), (4.0, 0)])(t)
    reach = Keyframes([(0, 0), (2.3, 0), (3.1, 1), (3.3, 1), (4.0, 0.3)])(t)
    q["arm_flex_r"] = (85 * raise_ + 70 * reach) * DEG
    q["arm_flex_l"] = 85 * raise_ * DEG
    q["elbow_flex_r"] = (10 - 5 * raise_ - 5 * reach) * DEG + 5 * DEG
    q["lumbar_extension"] = (3 * raise_ - 12 * reach) * DEG
    q["lumbar_rotation"] = -8 * reach * DEG
    _both(q, "hip_flexion", (2 + 12 * reach) * DEG)
    _both(q, "knee_angle", (3 + 4 * reach) * DEG)
    _both(q, "ankle_angle", (1 + 3 * reach) * DEG)
    q["pelvis_tilt"] = -6 * reach * DEG
    return MotionPlan(name, "arm_raise", t, q, _all_down(t), quasi_static=True,
                      description="bilateral arm raise then right-arm forward reach")


# --------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------

MOTIONS: dict[str, Callable[..., MotionPlan]] = {
    "walk_slow": lambda height, rate, st: walking(1.0 * st.speed, height, rate, name="walk_slow",
                                                  cadence_factor=st.cadence, start_phase=st.start_phase),
    "walk": lambda height, rate, st: walking(1.4 * st.speed, height, rate, name="walk",
                                             cadence_factor=st.cadence, start_phase=st.start_phase),
    "run": lambda height, rate, st: running(3.2 * st.speed, height, rate, name="run",
                                            cadence_factor=st.cadence, start_phase=st.start_phase),
    "squat": lambda height, rate, st: squat(height, rate),
    "sit_to_stand": lambda height, rate, st: sit_to_stand(height, rate),
    # the flight stays ballistic under tempo (its warped length is 0.44 s x sqrt(amplitude):
    # a shallower counter-movement, a lower jump)
    "cmj": lambda height, rate, st: counter_movement_jump(height, rate, flight_s=0.44 * np.sqrt(st.amplitude) / st.tempo),
    "lunge": lambda height, rate, st: lunge(height, rate),
    "arm_raise": lambda height, rate, st: arm_raise(height, rate),
}
"""Motion name -> plan builder(height_m, rate_hz, style). Names are used in config.yaml."""

MOTION_TYPE: dict[str, str] = {
    "walk_slow": "walk", "walk": "walk", "run": "run", "squat": "squat",
    "sit_to_stand": "sit_to_stand", "cmj": "jump", "lunge": "lunge", "arm_raise": "arm_raise",
}
"""Motion name -> motion type (the key for per-motion settings such as filter cut-offs)."""

_UNSCALED = ("pelvis_ty", "pelvis_tz")
"""References that amplitude leaves alone: standing pelvis height and lateral position."""

_STARTS_AWAY_FROM_STANDING = frozenset({"sit_to_stand"})
"""Discrete motions whose standing posture is their last frame rather than their first."""


def _restyle_discrete(plan: MotionPlan, style: Style, rate: float) -> MotionPlan:
    """Apply amplitude, tempo and onset to a discrete motion built at a fine time step.

    Trial time t maps to the nominal movement time (t - onset) / tempo (held at 0 during the
    onset); references are re-evaluated there with a cubic spline (smooth accelerations for the
    synthesiser) and contacts by nearest nominal sample. Amplitude scales every excursion from
    the standing posture (the first frame, or the last for a motion that starts seated).
    """
    ref_frame = -1 if plan.motion_type in _STARTS_AWAY_FROM_STANDING else 0
    duration = float(plan.time[-1])
    t = _time(style.onset_s + style.tempo * duration, rate)
    tn = np.clip((t - style.onset_s) / style.tempo, 0.0, duration)
    q = {}
    for name, ref in plan.q_ref.items():
        ref = np.asarray(ref, dtype=float)
        if name not in _UNSCALED:
            ref = ref[ref_frame] + style.amplitude * (ref - ref[ref_frame])
        q[name] = CubicSpline(plan.time, ref)(tn)
    idx = np.clip(np.rint(np.interp(tn, plan.time, np.arange(len(plan.time)))).astype(int), 0, len(plan.time) - 1)
    contact = {p: np.asarray(m)[idx] for p, m in plan.contact.items()}
    return MotionPlan(plan.name, plan.motion_type, t, q, contact, solved=plan.solved,
                      quasi_static=plan.quasi_static, sd=dict(plan.sd), angular_momentum=plan.angular_momentum,
                      trunk_balance=plan.trunk_balance,
                      description=(f"{plan.description} (amplitude x{style.amplitude:.2f}, "
                                   f"tempo x{style.tempo:.2f}, onset {style.onset_s:.2f} s)"))


def build_plan(motion: str, height: float, rate: float, style: Style = NOMINAL) -> MotionPlan:
    """Build the plan of a named motion for a subject of the given stature (m) at `rate` Hz,
    performed in `style` (the nominal style gives the library's textbook motion)."""
    _check_motion(motion)
    if style.speed <= 0 or style.cadence <= 0 or style.tempo <= 0 or style.amplitude < 0 or style.onset_s < 0:
        raise ConfigError(f"invalid style {style.to_dict()}: speed, cadence and tempo must be > 0, "
                          "amplitude and onset >= 0")
    cyclic = MOTION_TYPE[motion] in CYCLIC
    discrete_nominal = (style.amplitude, style.tempo, style.onset_s) == (1.0, 1.0, 0.0)
    if cyclic or discrete_nominal:
        plan = MOTIONS[motion](height, rate, style)
    else:
        plan = _restyle_discrete(MOTIONS[motion](height, max(4.0 * rate, 400.0), style), style, rate)
    plan.motion_type = MOTION_TYPE[motion]
    return plan
