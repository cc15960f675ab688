"""Synthetic motion library: biomechanical plausibility of every motion on the generic model.

Ranges and timings come from the literature cited in biohuman.motion.library; contact, floor
and flight figures are the acceptance of the embedded default data (slide < 2 cm, sink < 1 cm,
ballistic centre of mass in flight).
"""

from __future__ import annotations

import numpy as np
import pytest

from biohuman.motion.library import DEG, MOTIONS, build_plan
from biohuman.motion.subjects import SEGMENTS, sample_subjects
from biohuman.motion.synth import GRAVITY, synthesize

RATE = 100.0


@pytest.fixture(scope="module")
def motions() -> dict:
    """Every motion of the library synthesised once on the generic model (1.70 m)."""
    out = {}
    for name in MOTIONS:
        plan = build_plan(name, 1.70, RATE)
        out[name] = (plan, synthesize(None, plan))
    return out


def angle(res, name: str) -> np.ndarray:
    return res.coordinates[name].to_numpy() / DEG


@pytest.mark.parametrize("name", list(MOTIONS))
def test_feet_do_not_slide_or_sink(motions, name):
    plan, res = motions[name]
    d = res.diagnostics
    assert d["max_slide_m"] < 0.02, f"{name}: stance foot slides {d['max_slide_m'] * 100:.2f} cm"
    assert d["max_sink_m"] < 0.01, f"{name}: stance foot sinks {d['max_sink_m'] * 100:.2f} cm"
    assert d["min_swing_height_m"] > -0.01, f"{name}: swing foot goes {d['min_swing_height_m'] * 100:.2f} cm into the floor"
    # independent check from the returned points: every contact point in stance is on y = 0
    stance_y = res.points[:, :, 1][res.contact]
    assert np.all(np.abs(stance_y) < 0.01)


@pytest.mark.parametrize("name", ["run", "cmj"])
def test_flight_is_ballistic(motions, name):
    plan, res = motions[name]
    fl = ~res.contact.any(axis=1)
    assert fl.sum() >= 5, f"{name} must have flight phases"
    acc = (res.com[2:] - 2 * res.com[1:-1] + res.com[:-2]) * RATE**2
    inner = fl[1:-1] & fl[:-2] & fl[2:]
    # vertical COM acceleration equals -g and horizontal is zero, within 0.5 m/s^2
    assert np.all(np.abs(acc[inner, 1] + GRAVITY) < 0.5)
    assert np.all(np.abs(acc[inner][:, [0, 2]]) < 0.5)
    # a parabola fitted to the flight COM height has curvature -g/2
    t = plan.time[fl]
    first_run = np.flatnonzero(np.diff(np.concatenate([[0], fl.astype(int)])) == 1)[0]
    run_len = np.argmax(~fl[first_run:]) if (~fl[first_run:]).any() else len(fl) - first_run
    sl = slice(first_run, first_run + run_len)
    coef = np.polyfit(plan.time[sl], res.com[sl, 1], 2)
    assert coef[0] == pytest.approx(-GRAVITY / 2, rel=0.05)
    assert len(t) > 0


def test_floor_at_zero_in_quiet_stance(motions):
    plan, res = motions["arm_raise"]
    assert np.abs(res.points[:, :, 1]).max() < 0.005


def test_walking_matches_gait_literature(motions):
    plan, res = motions["walk"]
    cycle = plan.cycle_s
    knee, hip, ankle = angle(res, "knee_angle_r"), angle(res, "hip_flexion_r"), angle(res, "ankle_angle_r")
    # Perry & Burnfield / Winter: knee ~60 deg peak in swing at ~70 % of the cycle
    assert 50 <= knee.max() <= 70
    assert 0.6 <= plan.time[np.argmax(knee)] / cycle <= 0.8
    # hip: 20-35 deg flexion at heel strike, 5-20 deg extension in late stance
    assert 18 <= hip[0] <= 36 and -22 <= hip.min() <= -5
    # ankle: plantarflexion peak of 10-20 deg around toe-off (55-70 % of the cycle)
    assert -22 <= ankle.min() <= -10
    assert 0.5 <= plan.time[np.argmin(ankle)] / cycle <= 0.72
    # stance ~60 % of the cycle; walking speed near the target
    one = plan.time < cycle
    stance = np.mean((plan.contact["heel_r"] | plan.contact["toe_r"])[one])
    assert 0.55 <= stance <= 0.65
    assert res.diagnostics["speed_m_s"] == pytest.approx(plan.speed_m_s, rel=0.2)


def test_running_matches_literature(motions):
    plan, res = motions["run"]
    knee = angle(res, "knee_angle_r")
    assert 85 <= knee.max() <= 120  # Novacheck 1998: ~100 deg in swing
    one = plan.time < plan.cycle_s
    stance = np.mean((plan.contact["heel_r"] | plan.contact["toe_r"])[one])
    assert 0.25 <= stance <= 0.45
    assert res.diagnostics["speed_m_s"] == pytest.approx(plan.speed_m_s, rel=0.2)


def test_squat_and_jump_depths(motions):
    _, squat = motions["squat"]
    assert angle(squat, "knee_angle_r").max() >= 90
    assert angle(squat, "hip_flexion_r").max() >= 75
    plan, cmj = motions["cmj"]
    rise = cmj.com[:, 1].max() - cmj.com[0, 1]
    assert 0.15 <= rise <= 0.45, f"jump height {rise:.2f} m"


def test_lunge_and_sit_to_stand(motions):
    _, lunge = motions["lunge"]
    assert angle(lunge, "knee_angle_r").max() >= 80 and angle(lunge, "knee_angle_l").max() >= 80
    _, sts = motions["sit_to_stand"]
    assert angle(sts, "knee_angle_r")[0] >= 80 and angle(sts, "knee_angle_r")[-1] <= 10


def test_subjects_are_reproducible_and_non_uniform():
    a = sample_subjects(5, 7)
    b = sample_subjects(5, 7)
    assert a == b
    assert sample_subjects(5, 8) != a
    for s in a:
        f = np.array([s.segment_scales[k] for k in SEGMENTS])
        assert set(s.segment_scales) == set(SEGMENTS)
        assert f.std() / f.mean() > 0.005, "segments must differ, not one global factor"
        assert np.all(np.abs(np.log(f / (s.height_m / 1.70))) <= 0.08 + 1e-3)  # clipped in log space
    heights = sorted(s.height_m for s in a)
    assert heights[0] < 1.65 and heights[-1] > 1.85


def test_unknown_motion_is_a_config_error():
    from biohuman.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown motion"):
        build_plan("moonwalk", 1.7, 100.0)


# ------------------------------------------------------------------------------------------
# Per-trial style (synthetic.variation)
# ------------------------------------------------------------------------------------------

RANGES = {"speed": (0.85, 1.15), "cadence": (0.95, 1.05), "start_phase": (0.0, 1.0),
          "amplitude": (0.8, 1.05), "tempo": (0.85, 1.2), "onset_s": (0.0, 0.4)}


def test_style_is_reproducible_and_applies_per_motion_kind():
    from biohuman.motion.library import NOMINAL, sample_style

    a = sample_style("walk", RANGES, np.random.default_rng([7, 1]))
    assert a == sample_style("walk", RANGES, np.random.default_rng([7, 1]))
    assert a != sample_style("walk", RANGES, np.random.default_rng([7, 2]))
    # cyclic motions vary speed/cadence/start phase only; discrete ones amplitude/tempo/onset only
    assert (a.amplitude, a.tempo, a.onset_s) == (NOMINAL.amplitude, NOMINAL.tempo, NOMINAL.onset_s)
    b = sample_style("squat", RANGES, np.random.default_rng([7, 1]))
    assert (b.speed, b.cadence, b.start_phase) == (NOMINAL.speed, NOMINAL.cadence, NOMINAL.start_phase)
    for key, (lo, hi) in RANGES.items():
        value = getattr(a if key in ("speed", "cadence", "start_phase") else b, key)
        assert lo <= value <= hi
    # degenerate ranges give the textbook motion
    flat = {k: (getattr(NOMINAL, k),) * 2 for k in RANGES}
    assert sample_style("cmj", flat, np.random.default_rng(0)) == NOMINAL


def test_style_errors_are_config_errors():
    from biohuman.errors import ConfigError
    from biohuman.motion.library import Style, sample_style

    with pytest.raises(ConfigError, match="unknown variation"):
        sample_style("walk", {"sped": (0.9, 1.1)}, np.random.default_rng(0))
    with pytest.raises(ConfigError, match="low"):
        sample_style("walk", {"speed": (1.1, 0.9)}, np.random.default_rng(0))
    with pytest.raises(ConfigError, match="invalid style"):
        build_plan("squat", 1.7, RATE, Style(tempo=0.0))


def test_cyclic_style_shifts_the_gait_clock():
    from biohuman.motion.library import Style

    nominal = build_plan("walk", 1.70, RATE)
    styled = build_plan("walk", 1.70, RATE, Style(speed=1.1, cadence=1.0, start_phase=0.25))
    # the clip starts a quarter cycle in: at the first frame the left toe (down from 58 % to
    # 12 % of the cycle) has left the floor, while it is down at a right heel strike
    assert nominal.contact["toe_l"][0] and not styled.contact["toe_l"][0]
    # every contact phase is the same fraction of the (shorter) stride, counted from 25 %
    ph = (styled.time / styled.cycle_s + 0.25) % 1.0
    assert np.array_equal(styled.contact["toe_l"], (ph >= 0.58) | (ph < 0.12))
    assert np.array_equal(styled.contact["heel_r"], ph < 0.42)
    assert styled.speed_m_s == pytest.approx(1.4 * 1.1)
    assert styled.cycle_s < nominal.cycle_s  # faster walking, higher cadence


def test_discrete_style_warps_time_and_scales_depth():
    from biohuman.motion.library import Style

    nominal = build_plan("squat", 1.70, RATE)
    st = Style(amplitude=0.8, tempo=1.2, onset_s=0.3)
    styled = build_plan("squat", 1.70, RATE, st)
    assert styled.time[-1] == pytest.approx(0.3 + 1.2 * nominal.time[-1], abs=1.0 / RATE)
    knee_n, knee_s = nominal.q_ref["knee_angle_r"], styled.q_ref["knee_angle_r"]
    # depth: the excursion from standing shrinks by the amplitude factor
    assert knee_s.max() - knee_s[0] == pytest.approx(0.8 * (knee_n.max() - knee_n[0]), rel=1e-3)
    # tempo and onset: the deepest point moves from t_n to 0.3 + 1.2 t_n
    t_deep_n = nominal.time[np.argmax(knee_n)]
    t_deep_s = styled.time[np.argmax(knee_s)]
    lo, hi = 0.3 + 1.2 * 1.5, 0.3 + 1.2 * 1.7  # the hold between 1.5 and 1.7 s nominal
    assert lo - 0.02 <= t_deep_s <= hi + 0.02 and 1.5 - 0.02 <= t_deep_n <= 1.7 + 0.02
    # quiet standing during the onset
    assert np.ptp(knee_s[styled.time < 0.3]) < 1e-9
    # sit-to-stand scales from its standing end posture, so it still ends standing
    sts = build_plan("sit_to_stand", 1.70, RATE, st)
    base = build_plan("sit_to_stand", 1.70, RATE)
    assert sts.q_ref["knee_angle_r"][-1] == pytest.approx(base.q_ref["knee_angle_r"][-1], abs=1e-6)
    assert sts.q_ref["knee_angle_r"][0] < base.q_ref["knee_angle_r"][0]


def test_styled_jump_stays_ballistic():
    from biohuman.motion.library import Style

    plan = build_plan("cmj", 1.70, RATE, Style(amplitude=0.85, tempo=1.2, onset_s=0.2))
    res = synthesize(None, plan)
    fl = ~res.contact.any(axis=1)
    # the flight keeps its physical length under tempo: 0.44 s x sqrt(amplitude)
    assert fl.sum() / RATE == pytest.approx(0.44 * np.sqrt(0.85), abs=0.03)
    acc = (res.com[2:] - 2 * res.com[1:-1] + res.com[:-2]) * RATE**2
    inner = fl[1:-1] & fl[:-2] & fl[2:]
    assert np.all(np.abs(acc[inner, 1] + GRAVITY) < 0.5)
    assert res.diagnostics["max_slide_m"] < 0.02 and res.diagnostics["max_sink_m"] < 0.01


def _short_problem(motion: str, frames: int):  # noqa: ANN202 - private synth types
    """The synthesis problem of the first `frames` frames of a library motion (generic model),
    after the kinematic stage, so that accelerations are those of a feasible motion."""
    from biohuman.motion import synth

    plan = build_plan(motion, 1.70, RATE)
    plan.time = plan.time[:frames]
    plan.q_ref = {k: v[:frames] for k, v in plan.q_ref.items()}
    plan.contact = {k: v[:frames] for k, v in plan.contact.items()}
    if plan.stance_accel is not None:
        plan.stance_accel = plan.stance_accel[:frames]
    plan.solved = tuple(plan.solved) + tuple(plan.trunk_balance)  # the last stage's variables
    prob = synth._Problem(synth.ModelKinematics(None, synth.contact_points(None)), plan, {**synth.DEFAULT_SD, **plan.sd})
    x = synth._initial_guess(prob)
    cop = prob.sd["cop"]
    prob.sd["cop"] = np.inf
    x, _, _ = synth._levenberg_marquardt(prob, x, 40, 1e-6)
    prob.sd["cop"] = cop
    return prob, x


@pytest.mark.parametrize("motion", ["walk", "run"])
def test_synthesis_jacobian_is_exact(motion: str) -> None:
    """The sparse Jacobian the Levenberg-Marquardt solver uses equals central differences of
    the residuals, including the dynamic-balance rows (multi-body centre of pressure projected
    on the support area, which moves with the foot anchors), the walk's angular-momentum rate with
    its trunk coordinates solved, and the run's conservation of angular momentum in flight. A
    wrong Jacobian there stalls the solver with the centre of pressure decimetres outside the feet."""
    prob, x = _short_problem(motion, 40)
    assert prob.angular
    out, jac = prob.evaluate(x, jacobian=True)
    r, J = prob.residuals(x, out, jac)
    step = np.random.default_rng(0).normal(0.0, 1e-7, x.shape)
    r_hi, _ = prob.residuals(x + step, prob.evaluate(x + step, jacobian=False)[0], None)
    r_lo, _ = prob.residuals(x - step, prob.evaluate(x - step, jacobian=False)[0], None)
    numeric = (r_hi - r_lo) / 2
    blocks = [slice(None), prob.blocks["balance"]]
    assert np.any(numeric[blocks[1]] != 0), "some frames must be outside the support area to test the projection"
    blocks.append(prob.blocks["flight_angular" if motion == "run" else "angular_rate"])
    assert np.any(numeric[blocks[2]] != 0)
    for rows in blocks:
        err = np.linalg.norm(numeric[rows] - (J @ step)[rows]) / np.linalg.norm(numeric[rows])
        assert err < 1e-4, f"{motion}: Jacobian off by {err:.1e} (rows {rows})"
