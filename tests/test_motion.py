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
