"""Dataset spec, trial save/open, manifest, status records and open_dataset."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr

import biohuman.io as bio
from biohuman.errors import InputFormatError, SpecError
from biohuman.io import dataset as bds
from biohuman.io import spec

COORDS = ["pelvis_tilt", "hip_flexion_r", "knee_angle_r", "ankle_angle_r", "hip_flexion_l", "knee_angle_l"]
TRANS = ["pelvis_tx", "pelvis_ty", "pelvis_tz"]
MUSCLES = ["glmax1_r", "recfem_r", "vasint_r", "soleus_r", "tibant_r", "glmax1_l", "recfem_l"]
MARKERS = ["RASI", "LASI", "RKNE", "RANK"]
JOINTS = ["pelvis", "hip_r", "knee_r", "ankle_r"]
CHECKS = ["max_marker_error", "rms_residual_force", "max_reserve"]
BODIES = ["pelvis", "femur_r", "tibia_r"]


def synthetic_trial(n: int = 120, rate: float = 100.0, seed: int = 0, trial_id: str = "T01",
                    subject_id: str = "S01", motion_type: str = "walk", flagged: bool = False) -> xr.Dataset:
    """A spec-conforming trial with seeded random values (in-memory float64, like the pipeline)."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / rate
    ax, ft = list(spec.AXES), list(spec.FEET)

    def var(name: str, values: np.ndarray) -> xr.DataArray:
        return xr.DataArray(values, dims=spec.VARIABLES[name].dims, attrs=spec.attrs_for(name))

    nc, nt, nm = len(COORDS), len(TRANS), len(MUSCLES)
    reserve = rng.normal(0, 1, (n, nc))
    reserve[:, 1] = np.nan  # no reserve on this coordinate
    markers = rng.normal(0.8, 0.3, (n, len(MARKERS), 3))
    markers[5:8, 2] = np.nan
    flags = np.array([0, 1 if flagged else 0, 0], dtype=np.int8)
    ds = xr.Dataset(
        {
            "joint_angle": var("joint_angle", rng.normal(0, 30, (n, nc))),
            "translation": var("translation", rng.normal(0, 1, (n, nt))),
            "joint_moment": var("joint_moment", rng.normal(0, 50, (n, nc))),
            "residual_force": var("residual_force", rng.normal(0, 20, (n, nt))),
            "marker_position": var("marker_position", markers),
            "marker_error": var("marker_error", np.abs(rng.normal(0, 0.01, (n, len(MARKERS))))),
            "joint_position": var("joint_position", rng.normal(0.5, 0.3, (n, len(JOINTS), 3))),
            "ground_force": var("ground_force", rng.normal(300, 100, (n, 2, 3))),
            "center_of_pressure": var("center_of_pressure", rng.normal(0.5, 0.2, (n, 2, 3))),
            "ground_torque": var("ground_torque", rng.normal(0, 2, (n, 2, 3))),
            "foot_contact": var("foot_contact", rng.integers(0, 2, (n, 2)).astype(np.int8)),
            "activation": var("activation", rng.uniform(0, 1, (n, nm))),
            "activation_raw": var("activation_raw", rng.uniform(0, 1, (n, nm))),
            "reserve_actuation": var("reserve_actuation", reserve),
            "qc_value": var("qc_value", rng.uniform(0, 1, 3)),
            "qc_threshold": var("qc_threshold", np.array([0.04, 10.0, 1.0])),
            "qc_flag": var("qc_flag", flags),
            "scale_factor": var("scale_factor", rng.uniform(0.9, 1.1, (len(BODIES), 3))),
        },
        coords={
            "time": ("time", t, {"units": "s", "long_name": "time"}),
            "coordinate": COORDS, "translational_coordinate": TRANS, "muscle": MUSCLES, "marker": MARKERS,
            "joint": JOINTS, "axis": ax, "foot": ft, "check": CHECKS, "body": BODIES,
            "qc_units": ("check", ["m", "N", "N m"]),
        },
        attrs={
            "spec_version": spec.SPEC_VERSION, "trial_id": trial_id, "subject_id": subject_id,
            "motion_type": motion_type, "source": "synthetic", "model_name": "Rajagopal2015",
            "model_path": "results/scale/S01/model.osim", "subject_mass_kg": 72.5, "subject_height_m": 1.78,
            "activation_solver": "batched_so", "biohuman_version": "0.1.0", "git_sha": "abc123",
            "config_hash": "0123456789abcdef", "opensim_version": "4.6", "created": "2026-01-02T03:04:05+00:00",
            "qc_status": "flagged" if flagged else "pass", "status": "ok",
        },
    )
    return ds


def _problems(ds: xr.Dataset) -> str:
    with pytest.raises(SpecError) as exc:
        spec.validate(ds)
    return str(exc.value)


# ------------------------------------------------------------------------------------------------
# spec
# ------------------------------------------------------------------------------------------------


def test_synthetic_trial_is_valid() -> None:
    spec.validate(synthetic_trial())
    assert spec.problems_of(synthetic_trial(flagged=True)) == []


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda d: d.drop_vars("activation"), "missing required variable 'activation'"),
        (lambda d: d.drop_vars("joint_moment"), "missing required variable 'joint_moment'"),
        (lambda d: d.assign(joint_angle=d["joint_angle"].transpose("coordinate", "time")),
         "variable 'joint_angle' has dims ('coordinate', 'time')"),
        (lambda d: d.assign(activation=d["activation"].copy(data=d["activation"].values + 0.5)),
         "variable 'activation' outside [0, 1]"),
        (lambda d: d.assign(activation=d["activation"].copy(data=d["activation"].values - 0.01)),
         "variable 'activation' outside [0, 1]"),
        (lambda d: d.assign(joint_moment=d["joint_moment"].where(d["time"] != d["time"][3])),
         f"variable 'joint_moment' has {len(COORDS)} non-finite values"),
        (lambda d: d.assign_coords(time=d["time"].copy(data=d["time"].values[::-1])),
         "time is not strictly increasing"),
        (lambda d: d.assign_attrs(subject_mass_kg=-1.0), "'subject_mass_kg' must be a positive number"),
        (lambda d: d.assign_attrs(source="video"), "'source' is 'video', must be one of"),
        (lambda d: d.assign_attrs(created="yesterday"), "'created' 'yesterday' is not ISO 8601"),
        (lambda d: d.assign_attrs(created="2026-01-02T03:04:05+02:00"), "must be UTC"),
        (lambda d: d.assign_attrs(qc_status="flagged"), "qc_status is 'flagged' but qc_flag says 'pass'"),
        (lambda d: d.assign_attrs(spec_version="2.0"), "incompatible"),
        (lambda d: d.assign_coords(axis=["x", "z", "y"]), "coordinate 'axis' must be ['x', 'y', 'z']"),
        (lambda d: d.assign_coords(foot=["l", "r"]), "coordinate 'foot' must be ['r', 'l']"),
        (lambda d: d.assign_coords(coordinate=COORDS[:-1] + ["pelvis_tx"]),
         "in both 'coordinate' (angles) and 'translational_coordinate': pelvis_tx"),
        (lambda d: d.reset_coords("qc_units"), "'qc_units' must be a string coordinate"),
        (lambda d: d.assign(foot_contact=d["foot_contact"].astype(np.float32)),
         "flag variable 'foot_contact' must be integer"),
        (lambda d: d.assign(foot_contact=d["foot_contact"] * 2), "outside flag_values"),
        (lambda d: d.assign(extra_thing=(("time",), np.zeros(d.sizes["time"]))),
         "variable 'extra_thing' has no 'units' attribute"),
    ],
)
def test_spec_violation_raises_with_message(mutate, expected: str) -> None:  # noqa: ANN001
    ds = synthetic_trial()
    bad = mutate(ds)
    assert expected in _problems(bad)


def test_attribute_problems_units_and_flags() -> None:
    ds = synthetic_trial()
    ds["joint_angle"].attrs["units"] = "rad"
    del ds["translation"].attrs["long_name"]
    del ds["qc_flag"].attrs["flag_meanings"]
    del ds.attrs["git_sha"]
    msg = _problems(ds)
    assert "variable 'joint_angle' has units 'rad', must be 'degree'" in msg
    assert "variable 'translation' has no 'long_name' attribute" in msg
    assert "flag variable 'qc_flag' needs flag_meanings 'pass fail'" in msg
    assert "missing global attribute 'git_sha'" in msg


def test_validate_lists_all_problems_at_once() -> None:
    ds = synthetic_trial().drop_vars(["activation", "translation"]).assign_attrs(status="failed")
    msg = _problems(ds)
    assert "(3 problems)" in msg
    for piece in ("'activation'", "'translation'", "'status' is 'failed'"):
        assert piece in msg


def test_activation_tolerance_allows_float32_rounding() -> None:
    ds = synthetic_trial()
    a = ds["activation"].values.copy()
    a[0, 0], a[1, 1] = 1 + 0.5 * spec.ACTIVATION_TOLERANCE, -0.5 * spec.ACTIVATION_TOLERANCE
    spec.validate(ds.assign(activation=ds["activation"].copy(data=a)))


def test_unknown_variable_with_units_is_allowed() -> None:
    ds = synthetic_trial()
    ds["com_position"] = xr.DataArray(np.zeros((ds.sizes["time"], 3)), dims=("time", "axis"),
                                      attrs={"units": "m", "long_name": "centre of mass"})
    spec.validate(ds)


def test_encoding_float32_zlib_chunked_time_float64() -> None:
    ds = synthetic_trial(n=600)
    enc = spec.encoding_for(ds, time_chunk=256)
    assert enc["time"]["dtype"] == "float64"
    assert enc["activation"] == {"dtype": "float32", "zlib": True, "complevel": 4,
                                 "chunksizes": (256, len(MUSCLES))}
    assert enc["marker_position"]["chunksizes"] == (256, len(MARKERS), 3)
    assert enc["foot_contact"]["dtype"] == "int8"
    assert enc["qc_flag"]["dtype"] == "int8"
    assert "chunksizes" not in enc["joint_angle"] or enc["joint_angle"]["chunksizes"][0] == 256
    assert "muscle" not in enc  # string labels left to the backend


def test_doc_lists_every_variable_with_dims_and_units() -> None:
    """docs/dataset_spec.md mirrors VARIABLES and REQUIRED_ATTRS (table rows parsed, compared)."""
    doc = (Path(__file__).resolve().parents[1] / "docs" / "dataset_spec.md").read_text()
    rows = {}
    for line in doc.splitlines():
        m = re.match(r"\|\s*`(\w+)`\s*\|\s*`\(([^)]*)\)`\s*\|\s*`([^`]*)`\s*\|\s*(yes|no)\s*\|", line)
        if m:
            rows[m.group(1)] = (tuple(x.strip() for x in m.group(2).split(",") if x.strip()), m.group(3),
                                m.group(4) == "yes")
    for name, vs in spec.VARIABLES.items():
        assert name in rows, f"docs/dataset_spec.md has no table row for variable {name}"
        assert rows[name] == (vs.dims, vs.units, vs.required), f"doc row for {name} disagrees with VARIABLES"
    assert set(rows) == set(spec.VARIABLES), f"doc lists variables not in VARIABLES: {set(rows) - set(spec.VARIABLES)}"
    for attr in spec.REQUIRED_ATTRS:
        assert f"`{attr}`" in doc, f"docs/dataset_spec.md does not list attribute {attr}"
    for col in bds.MANIFEST_COLUMNS:
        assert f"`{col}`" in doc
    assert spec.SPEC_VERSION in doc


# ------------------------------------------------------------------------------------------------
# save / open
# ------------------------------------------------------------------------------------------------


def test_save_open_round_trip(tmp_path: Path) -> None:
    ds = synthetic_trial(n=300)
    path = bio.save_trial(ds, tmp_path / "S01" / "T01.nc")
    back = bio.open_trial(path)
    assert back["time"].dtype == np.float64
    np.testing.assert_array_equal(back["time"].values, ds["time"].values)
    for name, var in ds.data_vars.items():
        assert back[name].dims == var.dims
        if var.dtype.kind == "f":
            assert back[name].dtype == np.float32
            np.testing.assert_allclose(back[name].values, var.values, rtol=1e-6, atol=1e-30, equal_nan=True)
        else:
            assert back[name].dtype == np.int8
            np.testing.assert_array_equal(back[name].values, var.values)
        assert back[name].attrs["units"] == var.attrs["units"]
    assert np.isnan(back["reserve_actuation"].values[:, 1]).all()
    assert list(back["muscle"].values) == MUSCLES
    assert list(back["qc_units"].values) == ["m", "N", "N m"]
    assert back.attrs["trial_id"] == "T01" and float(back.attrs["subject_mass_kg"]) == 72.5
    # the file is chunked along time and compressed
    import netCDF4

    with netCDF4.Dataset(path) as nc:
        v = nc.variables["activation"]
        assert v.filters()["zlib"] and v.chunking()[0] == min(256, ds.sizes["time"])
        assert v.dtype == np.float32 and nc.variables["time"].dtype == np.float64


def test_open_then_overwrite_same_path(tmp_path: Path) -> None:
    path = bio.save_trial(synthetic_trial(seed=1), tmp_path / "t.nc")
    first = bio.open_trial(path)
    bio.save_trial(synthetic_trial(seed=2), path)  # atomic replace while `first` is in use
    second = bio.open_trial(path)
    assert not np.allclose(first["activation"].values, second["activation"].values)
    # re-saving an opened trial (which carries on-disk encodings) works too
    bio.save_trial(second, tmp_path / "t2.nc")
    np.testing.assert_array_equal(bio.open_trial(tmp_path / "t2.nc")["activation"].values, second["activation"].values)


def test_save_invalid_writes_nothing(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="bad.nc"):
        bio.save_trial(synthetic_trial().drop_vars("activation"), tmp_path / "bad.nc")
    assert list(tmp_path.iterdir()) == []


def test_save_failing_midway_leaves_no_file_and_no_temp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = xr.Dataset.to_netcdf

    def exploding(self, path, *args, **kwargs):  # noqa: ANN001, ANN202
        real(self, path, *args, **kwargs)  # the temp file is fully written ...
        assert Path(path).exists()
        raise RuntimeError("disk full")  # ... then the writer fails

    monkeypatch.setattr(xr.Dataset, "to_netcdf", exploding)
    with pytest.raises(RuntimeError, match="disk full"):
        bio.save_trial(synthetic_trial(), tmp_path / "t.nc")
    assert list(tmp_path.iterdir()) == []


def test_open_trial_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(InputFormatError, match="missing.nc: trial file does not exist"):
        bio.open_trial(tmp_path / "missing.nc")
    junk = tmp_path / "junk.nc"
    junk.write_text("not netcdf")
    with pytest.raises(InputFormatError, match="junk.nc: cannot open"):
        bio.open_trial(junk)
    # a file written outside save_trial that breaks the spec
    bad = tmp_path / "bad.nc"
    synthetic_trial().drop_vars("activation").to_netcdf(bad, engine="netcdf4")
    with pytest.raises(SpecError, match=r"(?s)bad.nc: .*missing required variable 'activation'"):
        bio.open_trial(bad)
    assert "activation" not in bio.open_trial(bad, validate=False)


def test_open_lazy(tmp_path: Path) -> None:
    ds = synthetic_trial()
    path = bio.save_trial(ds, tmp_path / "t.nc")
    lazy = bio.open_trial(path, lazy=True)
    try:
        np.testing.assert_allclose(lazy["activation"][10:20].values, ds["activation"][10:20].values, rtol=1e-6)
    finally:
        lazy.close()


# ------------------------------------------------------------------------------------------------
# manifest, status records, open_dataset
# ------------------------------------------------------------------------------------------------


def _build_dataset(root: Path) -> list[dict]:
    trials = [("T1", "S1", "walk", False, 100), ("T2", "S1", "run", True, 80), ("T3", "S2", "walk", False, 140)]
    records = []
    for i, (tid, sid, motion, flagged, n) in enumerate(trials):
        ds = synthetic_trial(n=n, seed=i, trial_id=tid, subject_id=sid, motion_type=motion, flagged=flagged)
        path = bio.save_trial(ds, root / sid / f"{tid}.nc")
        records.append(bio.manifest_record(ds, path))
    records.append({"trial_id": "T4", "subject_id": "S2", "motion_type": "run", "source": "trc",
                    "status": "failed", "path": "", "message": "IK failed: marker gap"})
    bio.write_manifest(records, root / "manifest.csv")
    return records


def test_manifest_round_trip(tmp_path: Path) -> None:
    records = _build_dataset(tmp_path)
    df = bio.read_manifest(tmp_path / "manifest.csv")
    assert list(df.columns[: len(bds.MANIFEST_COLUMNS)]) == list(bds.MANIFEST_COLUMNS)
    assert list(df["trial_id"]) == [r["trial_id"] for r in records]
    assert list(df["status"]) == ["ok", "flagged", "ok", "failed"]
    assert df.loc[0, "path"] == "S1/T1.nc"  # relative to the manifest
    assert int(df.loc[2, "n_frames"]) == records[2]["n_frames"]
    assert df.loc[2, "duration_s"] == pytest.approx(records[2]["duration_s"])
    assert pd.isna(df.loc[3, "n_frames"]) and df.loc[3, "message"] == "IK failed: marker gap"


def test_manifest_keeps_leading_zero_ids(tmp_path: Path) -> None:
    bio.write_manifest([{"trial_id": "007", "subject_id": "01", "status": "failed"}], tmp_path / "m.csv")
    df = bio.read_manifest(tmp_path / "m.csv")
    assert df.loc[0, "trial_id"] == "007" and df.loc[0, "subject_id"] == "01"


def test_manifest_errors(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="duplicate trial_id 'A'"):
        bio.write_manifest([{"trial_id": "A", "status": "ok"}, {"trial_id": "A", "status": "ok"}], tmp_path / "m.csv")
    with pytest.raises(SpecError, match="status 'done'"):
        bio.write_manifest([{"trial_id": "A", "status": "done"}], tmp_path / "m.csv")
    assert not (tmp_path / "m.csv").exists()
    (tmp_path / "m.csv").write_text("trial_id,status\nA,ok\n")
    with pytest.raises(InputFormatError, match="manifest lacks columns: subject_id"):
        bio.read_manifest(tmp_path / "m.csv")


def test_status_record_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "ik" / "S1" / "T1.status.json"
    bio.write_status(path, trial_id="T1", step="ik", status="flagged", message="max marker error 4.2 cm",
                     outputs={"mot": tmp_path / "T1.mot"}, extra={"rms_m": np.float32(0.5), "n": np.int64(3)})
    rec = bio.read_status(path)
    assert rec["trial_id"] == "T1" and rec["step"] == "ik" and rec["status"] == "flagged"
    assert rec["outputs"] == {"mot": str(tmp_path / "T1.mot")}
    assert rec["extra"] == {"rms_m": 0.5, "n": 3}
    assert rec["created"].endswith("+00:00")
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temp left behind


def test_status_record_errors(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="status 'great'"):
        bio.write_status(tmp_path / "s.json", trial_id="T", step="ik", status="great")
    (tmp_path / "s.json").write_text("{not json")
    with pytest.raises(InputFormatError, match=r"s.json: status record is not valid JSON"):
        bio.read_status(tmp_path / "s.json")
    (tmp_path / "s.json").write_text(json.dumps({"trial_id": "T", "status": "ok"}))
    with pytest.raises(InputFormatError, match="lacks keys: step"):
        bio.read_status(tmp_path / "s.json")


def test_open_dataset_filters_and_iterates(tmp_path: Path) -> None:
    _build_dataset(tmp_path)
    coll = bio.open_dataset(tmp_path)
    assert coll.trial_ids == ["T1", "T2", "T3"]  # failed excluded by default
    assert len(bio.open_dataset(tmp_path / "manifest.csv", status=None)) == 4
    assert bio.open_dataset(tmp_path, status="ok").trial_ids == ["T1", "T3"]
    assert bio.open_dataset(tmp_path, motion_type="walk", subject_id="S2").trial_ids == ["T3"]
    seen = {tid: ds.attrs["trial_id"] for tid, ds in coll}
    assert seen == {"T1": "T1", "T2": "T2", "T3": "T3"}
    assert coll["T2"].attrs["qc_status"] == "flagged"
    with pytest.raises(KeyError):
        coll["T4"]


def test_to_long_aligns_by_frame(tmp_path: Path) -> None:
    _build_dataset(tmp_path)
    coll = bio.open_dataset(tmp_path)
    long = coll.to_long("activation")
    lengths = [coll[t].sizes["time"] for t in coll.trial_ids]
    assert long.dims == ("trial", "frame", "muscle")
    assert long.sizes["frame"] == max(lengths)
    for i, tid in enumerate(coll.trial_ids):
        ds = coll[tid]
        np.testing.assert_array_equal(long.isel(trial=i, frame=slice(0, lengths[i])).values, ds["activation"].values)
        assert np.isnan(long.isel(trial=i, frame=slice(lengths[i], None)).values).all()
        np.testing.assert_array_equal(long["time"].isel(trial=i).values[: lengths[i]], ds["time"].values)
    qc = coll.to_long("qc_value")
    assert qc.dims == ("trial", "check")


def test_manifest_paths_relative_to_the_working_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A workflow passes trial paths relative to its working directory; the manifest stores them
    relative to itself, and open_dataset finds the trials again."""
    root = tmp_path / "results" / "dataset"
    ds = synthetic_trial(n=20, seed=0, trial_id="T1", subject_id="S1", motion_type="walk")
    bio.save_trial(ds, root / "S1" / "T1.nc")
    monkeypatch.chdir(tmp_path)
    bio.write_manifest([bio.manifest_record(ds, Path("results/dataset/S1/T1.nc"))], Path("results/dataset/manifest.csv"))
    assert bio.read_manifest(root / "manifest.csv").loc[0, "path"] == "S1/T1.nc"
    col = bio.open_dataset(root / "manifest.csv")
    assert [tid for tid, _ in col] == ["T1"]
