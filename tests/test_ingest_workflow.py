"""Motion sources in the workflow (rule ingest): the trials table for trc / c3d / smpl, the plan's
checks, dry runs for each source, an AMASS-layout sequence through the whole workflow to the
dataset NetCDF, and a C3D trial through `label`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from biohuman.config import validate_config
from biohuman.errors import ConfigError
from biohuman.io.trc import MarkerData
from biohuman.workflow import plan

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _snakemake import snakemake  # noqa: E402
from smpl_fixture import build_amass_sequence, build_tiny_body_model  # noqa: E402

SHARED = "opensim-core/OpenSim/Tests/shared"
RAJ = "opensim-models/Pipelines/Rajagopal/ExpData"


def _config(tmp: Path, trials: list[dict], **extra) -> Path:
    cfg = {"results": str(tmp / "results"), "synthetic": {"subjects": {"count": 0}, "motions": ["walk"]},
           "render": {"enabled": False}, "trials": trials, **extra}
    path = tmp / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _smpl_files(tmp: Path, n_frames: int = 120, rate: float = 120.0) -> dict[str, str]:
    build_tiny_body_model(tmp / "body.npz", marker_map=tmp / "smpl_markers.yaml")
    build_amass_sequence(tmp / "walk.npz", n_frames, rate)
    return {"file": str(tmp / "walk.npz"), "body_model": str(tmp / "body.npz"),
            "marker_map": str(tmp / "smpl_markers.yaml")}


def _row(subject: str, trial: str, **kw) -> dict:
    return {"subject": subject, "trial": trial, "mass_kg": 70.0, "height_m": 1.75, "motion_type": "walk", **kw}


# ------------------------------------------------------------------------------------------------
# the plan


def test_plan_routes_sources_through_ingest(tmp_path):
    ext = "/data"
    cfg = validate_config({"synthetic": {"subjects": {"count": 0}}, "render": {"enabled": False}, "trials": [
        _row("a", "t1", trc=f"{ext}/a.trc", static_trc=f"{ext}/s.trc"),
        _row("b", "t1", source="c3d", file=f"{ext}/w.c3d", static=f"{ext}/s.c3d", frames=[10, 200]),
        _row("b", "t2", source="c3d", file=f"{ext}/w2.c3d", static=f"{ext}/s.c3d", forces=False),
        _row("c", "t1", source="smpl", file=f"{ext}/m.npz", body_model=f"{ext}/body.npz"),
        _row("d", "t1", file=f"{ext}/d.trc", static=f"{ext}/ds.trc", marker_map="cmu_vicon"),
    ]})
    p = plan(cfg)
    a, b1, b2, c, d = (p.trial(s, t) for s, t in (("a", "t1"), ("b", "t1"), ("b", "t2"), ("c", "t1"), ("d", "t1")))
    R = cfg["results"]
    assert a.source == "trc" and a.trc == f"{ext}/a.trc" and not a.ingest_status and a.marker_input == a.trc
    assert b1.trc == f"{R}/ingest/b/t1.trc" and b1.marker_input == f"{R}/ingest/b/t1.status.json"
    assert b1.grf_mot == f"{R}/ingest/b/t1_grf.mot" and b1.external_loads_xml.endswith("t1_external_loads.xml")
    assert b1.frames == (10, 200)
    assert b2.grf_mot == "" and not b2.forces  # forces: false -> estimated
    assert c.source == "smpl" and c.ingest_status and c.grf_mot == ""
    assert d.ingest_status and d.marker_map.endswith("marker_maps/cmu_vicon.yaml")
    assert p.static_input("a") == f"{ext}/s.trc"
    for s in ("b", "c", "d"):
        assert p.static_input(s) == f"{R}/ingest/{s}/static/static.status.json"
        assert p.static_trc(s) == f"{R}/ingest/{s}/static/static.trc"
    assert set(p.ingest_subjects) == {"b", "c", "d"}
    assert p.external_subjects["c"]["betas_from"] == f"{ext}/m.npz"


@pytest.mark.parametrize("row, match", [
    (_row("x", "t", source="c3d", file="w.c3d", static="s.c3d", grf_mot="g.mot", external_loads_xml="g.xml"),
     "grf_mot"),
    (_row("x", "t", source="smpl", file="m.npz"), "body_model"),
    (_row("x", "t", source="smpl", file="m.npz", body_model="b.npz", static="s.c3d"), "static"),
    (_row("x", "t", source="c3d", file="w.c3d"), "static"),
    (_row("x", "t", source="c3d", trc="w.trc", static="s.c3d"), "trc"),
    (_row("x", "t", file="w.trc", static="s.trc", marker_map="no_such_map"), "unknown marker map"),
    (_row("x", "t", file="w.trc", static="s.trc", frames=[0, 10], time_range=[0.0, 1.0]), "either"),
    (_row("x", "t", file="w.trc", static="s.trc", grf_mot="g.mot"), "together"),
    (_row("x", "t", file="w.trc", static="s.trc", forces=True), "forces"),
    (_row("x", "t", static="s.trc"), "no motion file"),
])
def test_plan_rejects_bad_rows(row, match):
    cfg = validate_config({"synthetic": {"subjects": {"count": 0}}, "trials": [row]})
    with pytest.raises(ConfigError, match=match):
        plan(cfg)


def test_one_subject_one_source():
    cfg = validate_config({"synthetic": {"subjects": {"count": 0}}, "trials": [
        _row("x", "t1", file="w.trc", static="s.trc"),
        _row("x", "t2", source="c3d", file="w.c3d", static="s.c3d")]})
    with pytest.raises(ConfigError, match="different 'source'"):
        plan(cfg)


def test_schema_rejects_unknown_source_and_keys():
    with pytest.raises(ConfigError, match="source"):
        validate_config({"trials": [_row("x", "t", source="bvh", file="a.bvh", static="s")]})
    with pytest.raises(ConfigError, match="frames"):
        validate_config({"trials": [_row("x", "t", file="a.trc", static="s", frames=[-1, 3])]})


# ------------------------------------------------------------------------------------------------
# dry runs


def _jobs(text: str) -> list[dict]:
    import re

    jobs, cur = [], None
    for line in text.splitlines():
        m = re.match(r"^(?:local)?rule (\w+):", line.strip())
        if m:
            cur = {"rule": m.group(1), "input": [], "output": []}
            jobs.append(cur)
            continue
        m = re.match(r"^\s+(input|output):\s*(.*)$", line)
        if cur is not None and m:
            cur[m.group(1)] += [p.strip() for p in m.group(2).split(",") if p.strip()]
        elif not line.strip():
            cur = None
    return jobs


def test_dry_run_each_source(external_dir, tmp_path):
    smpl = _smpl_files(tmp_path)
    cfg = _config(tmp_path, [
        _row("plain", "walk", trc=str(external_dir / RAJ / "motion_capture_run.trc"),
             static_trc=str(external_dir / RAJ / "static_run.trc")),
        _row("lab", "walk", file=str(external_dir / RAJ / "motion_capture_walk.trc"),
             static=str(external_dir / RAJ / "static_walk_1.trc"), marker_map="rajagopal_pipeline_lab",
             time_range=[0.5, 1.5]),
        _row("c3d", "walk2", source="c3d", file=str(external_dir / SHARED / "walking2.c3d"),
             static=str(external_dir / SHARED / "walking5.c3d"), frames=[450, 800]),
        _row("amass", "walk", source="smpl", **smpl),
    ])
    r = snakemake("-n", "label", "--configfile", str(cfg))
    assert r.returncode == 0, r.stderr[-3000:]
    jobs = _jobs(r.stdout + r.stderr)
    R = str(tmp_path / "results")
    ingested = {j["output"][0] for j in jobs if j["rule"] == "ingest"}
    assert ingested == {f"{R}/ingest/{s}/{t}.status.json" for s, t in (("lab", "walk"), ("c3d", "walk2"),
                                                                       ("amass", "walk"))}
    statics = {j["output"][0] for j in jobs if j["rule"] == "ingest_static"}
    assert statics == {f"{R}/ingest/{s}/static/static.status.json" for s in ("lab", "c3d", "amass")}
    ik_inputs = {j["output"][0].split("/ik/")[1]: j["input"] for j in jobs if j["rule"] == "ik"}
    assert f"{R}/ingest/c3d/walk2.status.json" in ik_inputs["c3d/walk2.status.json"]
    assert str(external_dir / RAJ / "motion_capture_run.trc") in ik_inputs["plain/walk.status.json"]
    scale_inputs = {j["output"][0].split("/scale/")[1]: j["input"] for j in jobs if j["rule"] == "scale"}
    assert f"{R}/ingest/amass/static/static.status.json" in scale_inputs["amass/scale.status.json"]
    amass_ingest = [j for j in jobs if j["rule"] == "ingest_static" and "/amass/" in j["output"][0]][0]
    assert smpl["body_model"] in amass_ingest["input"]


def test_ingest_failure_is_recorded_and_skips(tmp_path):
    """A corrupt C3D fails its ingest record; scale and IK of that subject record 'skipped'."""
    bad = tmp_path / "bad.c3d"
    bad.write_bytes(b"\x02\x50" + bytes(3000))
    cfg = _config(tmp_path, [_row("bad", "walk", source="c3d", file=str(bad), static=str(bad))])
    R = tmp_path / "results"
    r = snakemake("--configfile", str(cfg), "--cores", "1", "--keep-going", f"{R}/ik/bad/walk.status.json",
                  timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    rec = json.loads((R / "ingest/bad/walk.status.json").read_text())
    assert rec["status"] == "failed" and "bad.c3d" in rec["message"]
    for step in ("scale/bad/scale", "ik/bad/walk"):
        assert json.loads((R / f"{step}.status.json").read_text())["status"] == "skipped"


# ------------------------------------------------------------------------------------------------
# end to end


def _statuses(R: Path, subject: str, trial: str) -> dict[str, str]:
    out = {}
    for step, name in (("ingest", trial), ("ik", trial), ("grf", trial), ("id", trial), ("activations", trial),
                       ("dataset", trial)):
        p = R / step / subject / f"{name}.status.json"
        if p.is_file():
            rec = json.loads(p.read_text())
            out[step] = rec["status"] + (": " + rec["message"] if rec["status"] not in ("ok", "flagged") else "")
    return out


@pytest.mark.slow
def test_amass_sequence_through_the_whole_workflow(tmp_path, reduced):
    """An AMASS-layout sequence of the tiny synthetic body model -> ingest -> scale -> IK ->
    estimated ground forces -> ID -> activations -> the dataset NetCDF; its markers are the
    ingested virtual markers and IK fits them closely."""
    import xarray as xr

    smpl = _smpl_files(tmp_path, n_frames=120, rate=120.0)
    last = 47 if reduced else 95
    cfg = _config(tmp_path, [_row("amass01", "walk", source="smpl", frames=[0, last], **smpl)],
                  activation_solver="opensim_so")  # no per-subject muscle surrogate to build: faster here
    R = tmp_path / "results"
    r = snakemake("--configfile", str(cfg), "--cores", "2", "--keep-going", "all", timeout=1500)
    assert r.returncode == 0, r.stderr[-3000:]
    st = _statuses(R, "amass01", "walk")
    assert all(v.split(":")[0] in ("ok", "flagged") for v in st.values()) and len(st) == 6, st
    scale = json.loads((R / "scale/amass01/scale.status.json").read_text())
    assert scale["status"] in ("ok", "flagged"), scale["message"]
    nc = R / "dataset/amass01/walk.nc"
    ds = xr.open_dataset(nc, engine="netcdf4")
    assert ds.sizes["time"] == last + 1
    from biohuman.io.trc import read_trc
    from biohuman.motion.smpl import amass_markers

    ref = amass_markers(smpl["file"], smpl["body_model"], smpl["marker_map"], frames=slice(0, last + 1))
    ing = read_trc(R / "ingest/amass01/walk.trc", max_gap_s=None)
    assert np.allclose(ing.xyz, ref.subset(ing.names).xyz, atol=1e-6)  # written in mm with 10 digits
    for m in ("RASI", "RCAL", "LTOE"):
        assert np.allclose(ds["marker_position"].sel(marker=m).to_numpy(), ref.marker(m), atol=1e-4)
    assert float(ds["marker_error"].max()) < 0.03  # IK fits the virtual markers within 3 cm
    manifest = (R / "dataset/manifest.csv").read_text()
    assert "amass01" in manifest


# Type-2 plate whose corners are laid out as centre + (+a,+b), (+a,-b), (-a,-b), (-a,+b) in the lab's
# x, y: ezc3d maps its channels to lab vectors with this matrix (probed: unit channels written and
# read back), which is its own inverse.
_PLATE_AXES = np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, -1.0]])


def _int_param(c, group: str, name: str, values, dims) -> None:  # noqa: ANN001
    from ezc3d import ezc3d as sw

    p = sw.Parameter(name, "")
    p.set(sw.VecInt([int(v) for v in values]), list(dims))
    c._storage["parameters"].add_parameter(group, p)  # ezc3d's add_parameter stores ints as floats


def write_c3d(path: Path, data: MarkerData, plates: list[dict] | None = None) -> None:
    """Write the C3D of `_write_c3d_here` in a fresh interpreter: once OpenSim's SWIG module has
    run in this process (earlier tests), ezc3d's writer no longer resolves its own overloads
    (TypeError in Parameter_set; reading is unaffected)."""
    import pickle

    job = Path(path).with_suffix(".job.pkl")
    job.write_bytes(pickle.dumps((str(path), data, plates)))
    code = ("import pickle, sys; sys.path.insert(0, sys.argv[2]); import test_ingest_workflow as t; "
            "t._write_c3d_here(*pickle.loads(open(sys.argv[1], 'rb').read()))")
    subprocess.run([sys.executable, "-c", code, str(job), str(Path(__file__).parent)], check=True)
    job.unlink()


def _write_c3d_here(path: Path, data: MarkerData, plates: list[dict] | None = None) -> None:
    """A C3D (mm, Z-up lab: the inverse of read_c3d's rotation) written with ezc3d.

    plates: per plate {"centre": (3,), "half": (a, b) m, "force", "cop", "torque": (T, 3)} in the
    Y-up frame on the markers' time base (one analog sample per frame); loads are written as
    Type-2 channels Fx..Mz (N, N mm) whose ezc3d reading reproduces them.
    """
    import ezc3d

    from biohuman.io.c3d import lab_rotation

    rot = lab_rotation(np.array([0.0, 0.0, 1.0]), np.array([1.0, 0.0, 0.0]))  # y-up = rot @ lab
    c = ezc3d.c3d()
    c["parameters"]["POINT"]["RATE"]["value"] = [float(data.rate)]
    c["parameters"]["POINT"]["LABELS"]["value"] = tuple(data.names)
    c["parameters"]["POINT"]["UNITS"]["value"] = ["mm"]
    c.add_parameter("POINT", "X_SCREEN", "+X")
    c.add_parameter("POINT", "Y_SCREEN", "+Z")
    pts = np.ones((4, len(data.names), data.n_frames))
    pts[:3] = (data.xyz @ rot * 1000.0).transpose(2, 1, 0)
    c["data"]["points"] = pts
    if plates:
        channels, labels, corners = [], [], []
        for k, pl in enumerate(plates):
            centre = np.asarray(pl["centre"], float)
            moment = np.cross(pl["cop"] - centre, pl["force"]) + pl["torque"]  # about the centre, y-up
            f_lab, m_lab = pl["force"] @ rot, moment @ rot * 1000.0
            channels += [f_lab @ _PLATE_AXES.T, m_lab @ _PLATE_AXES.T]
            labels += [f"{q}{k + 1}" for q in ("Fx", "Fy", "Fz", "Mx", "My", "Mz")]
            c_lab = centre @ rot * 1000.0
            a, b = 1000.0 * pl["half"][0], 1000.0 * pl["half"][1]
            corners.append(c_lab + np.array([[a, b, 0.0], [a, -b, 0.0], [-a, -b, 0.0], [-a, b, 0.0]]))
        c["parameters"]["ANALOG"]["RATE"]["value"] = [float(data.rate)]
        c["parameters"]["ANALOG"]["LABELS"]["value"] = tuple(labels)
        c["parameters"]["ANALOG"]["UNITS"]["value"] = tuple(["N"] * 3 + ["Nmm"] * 3) * len(plates)
        c["data"]["analogs"] = np.concatenate(channels, axis=1).T[None]
        n = len(plates)
        _int_param(c, "FORCE_PLATFORM", "USED", [n], [1])
        _int_param(c, "FORCE_PLATFORM", "TYPE", [2] * n, [n])
        _int_param(c, "FORCE_PLATFORM", "ZERO", [1, 0], [2])
        c.add_parameter("FORCE_PLATFORM", "CORNERS", np.stack(corners, axis=2).transpose(1, 0, 2))  # (3, 4, n)
        c.add_parameter("FORCE_PLATFORM", "ORIGIN", np.zeros((3, n)))
        _int_param(c, "FORCE_PLATFORM", "CHANNEL", range(1, 6 * n + 1), [6, n])
    c.write(str(path))


def write_markers_c3d(path: Path, data: MarkerData) -> None:
    """A markers-only C3D (see write_c3d)."""
    write_c3d(path, data)


def test_markers_c3d_round_trip(tmp_path):
    from biohuman.io.c3d import read_c3d

    t = np.arange(20) / 100.0
    xyz = np.random.default_rng(1).uniform(0.0, 1.8, (20, 3, 3))
    write_markers_c3d(tmp_path / "m.c3d", MarkerData(t, ["A", "B", "C"], xyz, 100.0))
    d = read_c3d(tmp_path / "m.c3d")
    assert d.markers.names == ["A", "B", "C"] and np.allclose(d.markers.time, t)
    assert np.max(np.abs(d.markers.xyz - xyz)) < 1e-6  # float32 mm on disk


def test_plates_c3d_round_trip(tmp_path):
    """Loads written as Type-2 plate channels come back (force, CoP, free moment) per foot."""
    from biohuman.dynamics.grf import load_measured_grf
    from biohuman.io.c3d import c3d_to_opensim_files

    n = 60
    t = np.arange(n) / 100.0
    names = ["RCAL", "RTOE", "LCAL", "LTOE"]
    xyz = np.zeros((n, 4, 3))
    xyz[:, :, 1] = 0.05
    xyz[:, 0, [0, 2]], xyz[:, 1, [0, 2]] = [0.2, 0.15], [0.4, 0.15]
    xyz[:, 2, [0, 2]], xyz[:, 3, [0, 2]] = [0.9, -0.15], [1.1, -0.15]
    loads = []
    for i, (x0, z0) in enumerate(((0.3, 0.15), (1.0, -0.15))):
        f = np.zeros((n, 3))
        cop = np.tile([x0, 0.0, z0], (n, 1))
        on = slice(10, 40) if i == 0 else slice(25, 55)
        f[on] = [15.0 * (1 - 2 * i), 650.0, -8.0]
        cop[on, 0] += np.linspace(-0.08, 0.08, 30)
        tq = np.zeros((n, 3))
        tq[on, 1] = 3.0 * (1 - 2 * i)
        loads.append({"centre": [x0, 0.0, z0], "half": (0.3, 0.2), "force": f, "cop": cop, "torque": tq})
    write_c3d(tmp_path / "p.c3d", MarkerData(t, names, xyz, 100.0), loads)
    out = c3d_to_opensim_files(tmp_path / "p.c3d", tmp_path)
    gf = load_measured_grf(out["grf_mot"], out["external_loads"])
    for i, pl in enumerate(loads):
        on = pl["force"][:, 1] > 20.0
        assert np.max(np.abs(gf.force[:, i] - np.where(on[:, None], pl["force"], 0.0))) < 1e-3
        assert np.max(np.abs(gf.cop[on, i] - pl["cop"][on])) < 1e-6
        assert np.max(np.abs(gf.torque[on, i] - pl["torque"][on])) < 1e-3


@pytest.mark.slow
def test_c3d_trial_through_label(tmp_path, reduced):
    """A synthetic subject's static and walking trials written as C3D files (Z-up lab, mm) with two
    force plates carrying the walk's ground reactions (estimated on the true model and motion,
    one plate under each side) go through ingest -> scale -> IK -> measured ground forces -> ID
    -> activations; the ingested per-foot loads equal the plates' loads."""
    from biohuman.dynamics.grf import ContactConfig, estimate_grf, load_measured_grf
    from biohuman.io.trc import read_trc
    from biohuman.motion.generate import generate_subject, generate_trial
    from biohuman.motion.subjects import sample_subjects
    from biohuman.pipeline import read_coordinates

    gen = validate_config({"synthetic": {"subjects": {"count": 1}, "motions": ["walk"]}})
    sid = sample_subjects(1, gen["seed"])[0].subject_id
    d = tmp_path / "syn"
    model = d / "gt/model.osim"
    generate_subject(gen, sid, static_trc=d / "static.trc", sheet=d / "subject.yaml", true_model=model,
                     truth=d / "gt/subject.json")
    generate_trial(gen, sid, "walk", true_model=model, subject_truth=d / "gt/subject.json",
                   trc=d / "walk.trc", coordinates=d / "gt/walk.mot", truth=d / "gt/walk.json")
    walk = read_trc(d / "walk.trc")
    gf = estimate_grf(model, read_coordinates(d / "gt/walk.mot", model), cutoff_hz=6.0, contact=ContactConfig())
    assert np.allclose(gf.time, walk.time)
    plates = [{"centre": [1.0, 0.0, 0.3 * sign], "half": (2.5, 0.3), "force": gf.force[:, i], "cop": gf.cop[:, i],
               "torque": gf.torque[:, i]} for i, sign in ((0, 1.0), (1, -1.0))]
    write_c3d(d / "walk.c3d", walk, plates)
    write_c3d(d / "static.c3d", read_trc(d / "static.trc"))
    sheet = yaml.safe_load((d / "subject.yaml").read_text())
    last = 40 if reduced else walk.n_frames - 1
    cfg = _config(tmp_path, [{"subject": "lab01", "trial": "walk", "source": "c3d", "file": str(d / "walk.c3d"),
                              "static": str(d / "static.c3d"), "frames": [0, last],
                              "mass_kg": sheet["mass_kg"], "height_m": sheet["height_m"], "motion_type": "walk"}],
                  activation_solver="opensim_so")
    R = tmp_path / "results"
    r = snakemake("--configfile", str(cfg), "--cores", "2", "--keep-going", "label", timeout=1500)
    assert r.returncode == 0, r.stderr[-3000:]
    st = _statuses(R, "lab01", "walk")
    assert all(st.get(k, "missing").split(":")[0] in ("ok", "flagged") for k in ("ingest", "ik", "grf", "id",
                                                                                  "activations")), st
    ing = read_trc(R / "ingest/lab01/walk.trc", max_gap_s=None)
    assert ing.n_frames == last + 1
    assert np.max(np.abs(ing.xyz - walk.subset(ing.names).xyz[: last + 1])) < 1e-6  # C3D round trip, Y-up
    measured = load_measured_grf(R / "ingest/lab01/walk_grf.mot", R / "ingest/lab01/walk_external_loads.xml")
    k = slice(0, last + 1)
    on = gf.force[k, :, 1] > 20.0
    assert np.max(np.abs(measured.force[on] - gf.force[k][on])) < 1e-3
    assert np.max(np.abs(measured.cop[on] - gf.cop[k][on])) < 1e-6
    grf = json.loads((R / "grf/lab01/walk.status.json").read_text())
    assert grf["extra"]["source"] == "measured"
    ik = json.loads((R / "ik/lab01/walk.status.json").read_text())
    assert ik["extra"]["marker_rmse_mean_m"] < 0.03
