"""Inverse dynamics against OpenSim's reference ID of example3DWalking."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

from biohuman.errors import InputFormatError
from biohuman.osim._tools import load_osim, read_storage, write_storage
from biohuman.osim.id import generalized_force_columns, prepare_coordinates, run_id
from biohuman.osim.model import rajagopal_path

WALK = Path("opensim-core") / "OpenSim" / "Examples" / "Moco" / "example3DWalking"
MAJOR = [f"{j}_{s}" for s in "rl" for j in ("hip_flexion", "hip_adduction", "knee_angle", "ankle_angle")]


@pytest.fixture(scope="module")
def walk(external_dir: Path) -> Path:
    d = external_dir / WALK
    if not (d / "id_walk.sto").is_file():
        pytest.skip(f"example3DWalking not found under {d}")
    return d


def test_generalized_force_columns() -> None:
    model = load_osim(rajagopal_path())
    m = generalized_force_columns(["hip_flexion_r_moment", "pelvis_tx_force", "knee_angle_r_beta_force", "x_y"], model)
    assert m == {"hip_flexion_r_moment": "hip_flexion_r", "pelvis_tx_force": "pelvis_tx",
                 "knee_angle_r_beta_force": "knee_angle_r_beta", "x_y": "x_y"}


def test_prepare_coordinates_fixes_state_paths_and_beta(walk: Path, tmp_path: Path) -> None:
    """coordinates.sto has state-path labels and beta in degrees under inDegrees=no."""
    model = load_osim(walk / "subject_walk_scaled.osim")
    raw, header = read_storage(walk / "coordinates.sto")
    assert header["inDegrees"] == "no" and raw["/jointset/patellofemoral_r/knee_angle_r_beta/value"].abs().max() > 10
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        q, (t0, t1) = prepare_coordinates(model, walk / "coordinates.sto", tmp_path / "q.mot", (0.6, 0.8))
    assert (t0, t1) == (0.6, 0.8)
    assert q.index[0] == pytest.approx(0.45) and q.index[-1] == pytest.approx(1.05)  # data start; end + margin
    assert np.allclose(q["knee_angle_r_beta"], q["knee_angle_r"], atol=1e-9)  # coupler: beta == knee (rad)
    assert q.attrs["defaulted"] == ["mtp_angle_r", "mtp_angle_l"]
    back, header = read_storage(tmp_path / "q.mot")
    assert header["inDegrees"] == "no" and list(back.columns) == list(q.columns)
    with pytest.raises(InputFormatError, match="mtp_angle_r"):
        prepare_coordinates(model, walk / "coordinates.sto", tmp_path / "q2.mot", strict=True)


def test_id_matches_reference(walk: Path, tmp_path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # mtp coordinates absent from coordinates.sto
        df = run_id(walk / "subject_walk_scaled.osim", walk / "coordinates.sto", tmp_path / "id.sto",
                    external_loads_xml=walk / "grf_walk.xml", lowpass_hz=6.0, time_range=(0.6, 0.8))
    ref, _ = read_storage(walk / "id_walk.sto")
    ref = ref.rename(columns=generalized_force_columns(ref.columns, load_osim(walk / "subject_walk_scaled.osim")))
    assert len(df) == 201 and df.index[0] == pytest.approx(0.6) and df.index[-1] == pytest.approx(0.8)
    r = ref.reindex(df.index, method="nearest", tolerance=1e-6)
    for c in MAJOR:
        rmse = float(np.sqrt(np.mean((df[c] - r[c]) ** 2)))
        peak = float(ref[c].abs().max())
        assert rmse < 0.05 * peak, (c, rmse, peak)
        assert rmse < 1.0, (c, rmse)  # measured: <= 0.15 N m with the reference's 6 Hz filter
    assert df.attrs["units"]["pelvis_ty"] == "N" and df.attrs["units"]["knee_angle_r"] == "N m"
    assert df.attrs["labels"]["hip_flexion_r"] == "hip_flexion_r_moment"
    assert (tmp_path / "id_id_setup.xml").is_file() and (tmp_path / "id_coordinates.mot").is_file()
    sto, header = read_storage(tmp_path / "id.sto")
    assert "hip_flexion_r_moment" in sto.columns


def test_id_without_external_loads_and_bad_input(walk: Path, tmp_path: Path) -> None:
    model_path = walk / "subject_walk_scaled.osim"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        q, _ = prepare_coordinates(load_osim(model_path), walk / "coordinates.sto", tmp_path / "q.mot", (1.0, 1.02))
    df = run_id(model_path, tmp_path / "q.mot", tmp_path / "free.sto", time_range=(1.0, 1.02))
    assert np.isfinite(df.to_numpy()).all() and df["pelvis_ty"].abs().max() > 100  # body weight unsupported
    with pytest.raises(InputFormatError):
        run_id(model_path, tmp_path / "q.mot", tmp_path / "x.sto", external_loads_xml=tmp_path / "none.xml")
    write_storage(tmp_path / "short.mot", q.iloc[:1])
    with pytest.raises(InputFormatError):
        run_id(model_path, tmp_path / "short.mot", tmp_path / "x.sto")
