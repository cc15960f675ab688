"""Scaling: manual factors (synthetic ground truth) and recovery from a static trial."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from biohuman.errors import ConfigError, MarkerError, SolverError
from biohuman.osim._tools import load_osim, model_marker_positions, read_trc, set_pose, write_trc
from biohuman.osim.model import (
    VIRTUAL_MARKER_SUFFIXES,
    foot_geometry,
    model_info,
    opensim,
    rajagopal_path,
    skin_markers,
)
from biohuman.osim.scale import (
    LOWER_LIMB_STATIC_POSE,
    SEGMENT_BODIES,
    _fit_measurements,
    body_scale_factors,
    load_measurements,
    read_scale_set,
    scale_model,
    scale_model_manual,
)

FACTORS = {"pelvis": 1.05, "femur": 0.95, "tibia": 1.08, "foot": 1.0, "torso": 1.1, "humerus": 0.97, "forearm": 1.02}
MASS = 70.0


def standing_pose(model_path: Path) -> dict[str, float]:
    """Default pose with pelvis_ty such that the lowest foot contact point is at y = 0."""
    osim = opensim()
    model = load_osim(model_path)
    state = model.initSystem()
    set_pose(model, state, {"pelvis_ty": 0.0})
    ys = []
    for g in foot_geometry(str(model_path)).values():
        for body, pt in ((g.heel_body, g.heel), (g.toe_body, g.toe)):
            ys.append(model.getBodySet().get(body).findStationLocationInGround(state, osim.Vec3(*pt)).get(1))
    return {"pelvis_ty": -min(ys)}


def random_offsets(names, seed: int, lo: float = 0.01, hi: float = 0.02) -> dict[str, np.ndarray]:
    """Each marker displaced by lo..hi metres in a random direction (body frame)."""
    rng = np.random.default_rng(seed)
    out = {}
    for n in names:
        v = rng.normal(size=3)
        out[n] = v / np.linalg.norm(v) * rng.uniform(lo, hi)
    return out


def write_static(model_path: Path, trc: Path, offsets=None, frames: int = 5) -> list[str]:
    names = list(skin_markers(model_info(str(model_path))))
    xyz = model_marker_positions(str(model_path), standing_pose(model_path), names, offsets=offsets)
    write_trc(trc, names, np.arange(frames) / 100.0, np.repeat(xyz[None], frames, axis=0) * 1000.0, units="mm")
    return names


@pytest.fixture(scope="module")
def subject(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("subject")
    return scale_model_manual(None, FACTORS, MASS, d / "subject.osim")


def segment_errors(scale_factors: dict[str, np.ndarray]) -> dict[str, float]:
    """Relative error (%) of the recovered factor of each segment (first body, all 3 axes)."""
    out = {}
    for seg, f in FACTORS.items():
        for body in SEGMENT_BODIES[seg]:
            out[f"{seg}:{body}"] = float(np.max(np.abs(scale_factors[body] / f - 1.0)) * 100)
    for body in SEGMENT_BODIES["hand"]:  # the hand follows the forearm in both directions
        out[f"hand:{body}"] = float(np.max(np.abs(scale_factors[body] / FACTORS["forearm"] - 1.0)) * 100)
    return out


def test_body_scale_factors_expands_segments() -> None:
    f = body_scale_factors({"femur": 0.9, "forearm": 1.1, "foot_l": [1.0, 1.2, 1.3], "tibia_r": 1.05})
    assert np.allclose(f["femur_r"], 0.9) and np.allclose(f["patella_l"], 0.9)
    assert np.allclose(f["hand_r"], 1.1) and np.allclose(f["radius_l"], 1.1)  # hand follows forearm
    assert np.allclose(f["calcn_l"], [1.0, 1.2, 1.3]) and np.allclose(f["calcn_r"], 1.0)
    assert np.allclose(f["tibia_r"], 1.05) and np.allclose(f["tibia_l"], 1.0)
    assert np.allclose(f["pelvis"], 1.0)
    with pytest.raises(ConfigError):
        body_scale_factors({"shin": 1.0})
    with pytest.raises(ConfigError):
        body_scale_factors({"femur": -1.0})


def test_default_measurements_use_skin_markers_and_cover_the_model() -> None:
    meas = load_measurements()
    info = model_info()
    scaled = {b for m in meas for b in m.bodies}
    assert scaled == set(info.bodies)
    for m in meas:
        for a, b in m.pairs:
            assert a in info.markers and b in info.markers
            assert not a.endswith(VIRTUAL_MARKER_SUFFIXES) and not b.endswith(VIRTUAL_MARKER_SUFFIXES)
    with pytest.raises(ConfigError):
        load_measurements({"measurements": {"a": {"bodies": ["pelvis"], "axes": ["X"], "pairs": [["RASI", "LASI"]]},
                                            "b": {"bodies": ["pelvis"], "axes": ["X"], "pairs": [["RPSI", "LPSI"]]}}})


def test_scale_model_manual_applies_factors_and_mass(subject: Path) -> None:
    osim = opensim()
    model = osim.Model(str(subject))
    state = model.initSystem()
    assert model.getTotalMass(state) == pytest.approx(MASS, rel=1e-9)
    applied = read_scale_set(subject.with_name("subject_scale_set.xml"))
    expected = body_scale_factors(FACTORS, list(applied))
    for body, f in expected.items():
        assert np.allclose(applied[body], f), body
    gen = load_osim(rajagopal_path())
    loc = lambda m, n: np.array([m.getMarkerSet().get(n).get_location().get(k) for k in range(3)])  # noqa: E731
    assert np.allclose(loc(model, "RLMAL"), loc(gen, "RLMAL") * FACTORS["tibia"])
    # mass distribution preserved: segment mass fractions unchanged
    gm, sm = gen.getTotalMass(gen.initSystem()), MASS
    for body in ("pelvis", "femur_r", "torso"):
        assert model.getBodySet().get(body).getMass() / sm == pytest.approx(
            gen.getBodySet().get(body).getMass() / gm, rel=1e-9)
    assert subject.with_name("subject_scale_setup.xml").is_file()


def test_scale_model_recovers_nominal_factors(subject: Path, tmp_path: Path) -> None:
    trc = tmp_path / "static.trc"
    write_static(subject, trc)
    res = scale_model(None, trc, MASS, tmp_path / "fit.osim")
    errors = segment_errors(res.scale_factors)
    assert max(errors.values()) < 3.0, errors
    assert max(errors.values()) < 0.1, errors  # exact markers: exact up to the solver
    assert res.marker_rmse < 1e-4 and res.marker_max_before < 2e-3
    assert max(res.pose_deviation_deg.values()) < 0.5
    model = load_osim(res.model)
    assert model.getTotalMass(model.initSystem()) == pytest.approx(MASS, rel=1e-9)
    assert model.getMarkerSet().getSize() == load_osim(rajagopal_path()).getMarkerSet().getSize()  # none deleted
    for p in (res.setup, res.static_ik_setup, res.scale_set, res.static_pose_mot, res.report):
        assert Path(p).is_file(), p
    assert not tmp_path.joinpath("fit_unplaced.osim").exists()
    report = json.loads(res.report.read_text())
    assert set(report["segment_factors"]) == {m.name for m in load_measurements()}
    # the saved ScaleTool setup reruns in OpenSim and gives the same factors
    osim = opensim()
    assert osim.ScaleTool(str(res.setup)).run()
    assert tmp_path.joinpath("fit_unplaced.osim").is_file()


@pytest.mark.parametrize("seed", [3, 5])
def test_scale_model_with_misplaced_markers(subject: Path, tmp_path: Path, seed: int) -> None:
    trc = tmp_path / "static.trc"
    names = skin_markers(model_info(str(subject)))
    write_static(subject, trc, offsets=random_offsets(names, seed))
    res = scale_model(None, trc, MASS, tmp_path / "fit.osim")
    errors = segment_errors(res.scale_factors)
    assert max(errors.values()) < 6.0, errors
    assert np.mean(list(errors.values())) < 3.0, errors
    assert max(res.pose_deviation_deg.values()) < 1.0
    assert 0.005 < res.marker_rmse_before < 0.03  # the misplacement shows before placement
    assert res.marker_rmse < 1e-4  # ... and placement absorbs it
    moved = np.array(list(res.marker_offsets.values()))
    assert 0.005 < np.median(moved) < 0.03


def test_scale_model_pose_guard(subject: Path, tmp_path: Path) -> None:
    trc = tmp_path / "static.trc"
    write_static(subject, trc)
    pose = dict(LOWER_LIMB_STATIC_POSE, knee_angle_r=np.deg2rad(30.0))
    with pytest.raises(SolverError, match="knee_angle_r"):
        scale_model(None, trc, MASS, tmp_path / "fit.osim", static_pose=pose, pose_weight=1e-4)


def test_scale_model_missing_markers(subject: Path, tmp_path: Path) -> None:
    trc = tmp_path / "static.trc"
    names = write_static(subject, trc)
    trial = read_trc(trc)
    keep = [i for i, n in enumerate(names) if n not in ("RASI", "LASI", "RPSI", "LPSI")]
    write_trc(trc, [names[i] for i in keep], trial.time, trial.xyz[:, keep])
    with pytest.raises(MarkerError, match="pelvis"):
        scale_model(None, trc, MASS, tmp_path / "fit.osim")


@pytest.mark.slow
def test_scale_fit_statistics_with_misplaced_markers(subject: Path, reduced: bool) -> None:
    """Monte-Carlo of the measurement fit alone (no ScaleTool): 1-2 cm random marker offsets."""
    draws = 8 if reduced else 40
    names = list(skin_markers(model_info(str(subject))))
    pose = standing_pose(subject)
    gen = load_osim(rajagopal_path())
    meas = load_measurements()
    worst = []
    errs = []
    for seed in range(draws):
        xyz = model_marker_positions(str(subject), pose, names, offsets=random_offsets(names, 100 + seed))
        fit = _fit_measurements(gen, meas, dict(zip(names, xyz)), LOWER_LIMB_STATIC_POSE, Path("synthetic.trc"), 0.04)
        e = np.array([abs(fit.factors[k] / FACTORS[k] - 1) * 100 for k in FACTORS])
        errs.append(e)
        worst.append(e.max())
    errs = np.array(errs)
    assert np.sqrt(np.mean(errs**2)) < 3.0  # overall RMS error across segments and draws
    assert np.median(worst) < 4.5
    assert np.mean(np.array(worst) > 6.0) <= 0.2


def test_segments_without_markers_take_the_overall_factor(subject: Path) -> None:
    """A lab set without arm markers still scales: humerus and forearm get the geometric mean of
    the fitted factors (and are reported), the measured segments keep their own fit."""
    names = list(skin_markers(model_info(str(subject))))
    pose = standing_pose(subject)
    gen = load_osim(rajagopal_path())
    meas = load_measurements()
    arm = {x for m in meas if m.name in ("humerus", "forearm") for pair in m.pairs for x in pair}
    other = {x for m in meas if m.name not in ("humerus", "forearm") for pair in m.pairs for x in pair}
    xyz = model_marker_positions(str(subject), pose, names)
    exp = {n: p for n, p in zip(names, xyz) if n not in arm - other}
    full = _fit_measurements(gen, meas, dict(zip(names, xyz)), LOWER_LIMB_STATIC_POSE, Path("s.trc"))
    fit = _fit_measurements(gen, meas, exp, LOWER_LIMB_STATIC_POSE, Path("s.trc"))
    assert set(fit.unobserved) == {"humerus", "forearm"}
    measured = [k for k in fit.factors if k not in fit.unobserved]
    overall = float(np.exp(np.mean(np.log([fit.factors[k] for k in measured]))))
    assert fit.factors["humerus"] == pytest.approx(overall) and fit.factors["forearm"] == pytest.approx(overall)
    for k in measured:  # exact markers: the measured segments are still recovered
        assert fit.factors[k] == pytest.approx(full.factors[k], rel=2e-3), k


def _max_isometric_forces(path: Path) -> dict[str, float]:
    """Muscle name -> max_isometric_force read straight from the .osim XML (independent of OpenSim)."""
    import xml.etree.ElementTree as ET

    out = {}
    for objects in ET.parse(path).getroot().iter("objects"):  # not <defaults>: those are no muscles
        for el in objects:
            f = el.find("max_isometric_force")
            if f is not None:
                out[str(el.get("name"))] = float(f.text)
    return out


def test_scale_muscle_strength_follows_subject_mass(subject: Path, tmp_path: Path) -> None:
    """max_isometric_force x (m / m_generic)^exponent on every muscle; 'none' leaves the file alone."""
    import shutil
    import xml.etree.ElementTree as ET

    from biohuman.osim.scale import scale_muscle_strength

    generic = rajagopal_path()
    m_generic = sum(float(b.findtext("mass")) for b in ET.parse(generic).getroot().iter("Body"))
    before = _max_isometric_forces(subject)
    assert len(before) == 80

    untouched = tmp_path / "none.osim"
    shutil.copy(subject, untouched)
    rec = scale_muscle_strength(untouched, None, method="none")
    assert rec["factor"] == 1.0 and _max_isometric_forces(untouched) == before

    strong = tmp_path / "mass.osim"
    shutil.copy(subject, strong)
    rec = scale_muscle_strength(strong, None, method="mass", exponent=2.0 / 3.0)
    expected = (MASS / m_generic) ** (2.0 / 3.0)
    assert rec["subject_mass_kg"] == pytest.approx(MASS, rel=1e-9)
    assert rec["generic_mass_kg"] == pytest.approx(m_generic, rel=1e-9)
    assert rec["factor"] == pytest.approx(expected, rel=1e-12)
    after = _max_isometric_forces(strong)
    assert set(after) == set(before)
    for name, f0 in before.items():
        assert after[name] == pytest.approx(f0 * expected, rel=1e-9), name
    # the geometry is untouched: lengths and moment arms stay those of the scaled model
    assert load_osim(strong).getMuscles().getSize() == 80

    with pytest.raises(ConfigError, match="method"):
        scale_muscle_strength(strong, None, method="volume")
    with pytest.raises(ConfigError, match="exponent"):
        scale_muscle_strength(strong, None, exponent=float("nan"))
