"""Splits (no subject / motion leakage, subject-disjoint validation, deterministic), labels
resampled to video frames, and normalisation statistics from the training split only."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from biohuman.train import data as D
from biohuman.train.splits import SplitError, check_split, held_out_motions, held_out_subjects, make_splits

from _train_data import COORDS, make_dataset


def _table(n_subjects: int = 6, motions: tuple[str, ...] = ("walk", "run", "squat", "cmj")) -> pd.DataFrame:
    return pd.DataFrame([{"trial_id": f"S{s}/{m}", "subject_id": f"S{s}", "motion_type": m}
                         for s in range(n_subjects) for m in motions])


def _parts(split, t: pd.DataFrame, col: str) -> dict[str, set]:
    t = t.set_index("trial_id")
    return {p: set(t.loc[list(getattr(split, p)), col]) for p in ("train", "val", "test")}


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_no_subject_or_motion_leaks_and_validation_is_subject_disjoint(seed: int) -> None:
    t = _table()
    splits = make_splits(t, {"n_test_subjects": 2, "n_val_subjects": 1, "test_motions": []}, seed)
    s = splits["held_out_subjects"]
    subj = _parts(s, t, "subject_id")
    assert not (subj["train"] & subj["test"]) and not (subj["val"] & subj["test"]) and not (subj["train"] & subj["val"])
    assert len(subj["test"]) == 2 and len(subj["val"]) == 1
    assert set(s.train) | set(s.val) | set(s.test) == set(t.trial_id)  # nothing dropped
    m = splits["held_out_motions"]
    mot = _parts(m, t, "motion_type")
    subj_m = _parts(m, t, "subject_id")
    assert not (mot["train"] & mot["test"]) and not (mot["val"] & mot["test"])
    assert not (subj_m["train"] & subj_m["val"])
    assert mot["test"] == set(m.test_motions) and len(m.test_motions) == 1


def test_splits_are_deterministic_and_depend_on_the_seed() -> None:
    t = _table(8)
    a = held_out_subjects(t, 5, 2, 1)
    assert a == held_out_subjects(t.sample(frac=1.0, random_state=3), 5, 2, 1)  # row order does not matter
    assert any(held_out_subjects(t, k, 2, 1).test_subjects != a.test_subjects for k in range(6, 12))
    assert held_out_motions(t, 1, ["squat"]).test_motions == ("squat",)


def test_leak_checks_fire() -> None:
    t = _table()
    s = held_out_subjects(t, 0)
    leak = dataclasses.replace(s, train=s.train + (s.test[0],), test=s.test[1:])
    with pytest.raises(SplitError, match="test subjects also in train"):
        check_split(leak, t)
    m = held_out_motions(t, 0, ["run"])
    moved = next(i for i in m.test if i.startswith(m.val_subjects[0]))
    with pytest.raises(SplitError, match="held-out motions also in val"):
        check_split(dataclasses.replace(m, val=m.val + (moved,), test=tuple(i for i in m.test if i != moved)), t)
    val_in_train = next(i for i in m.train)
    with pytest.raises(SplitError, match="trials in both train and val"):
        check_split(dataclasses.replace(m, val=m.val + (val_in_train,)), t)
    with pytest.raises(SplitError, match="needs >= 3 subjects"):
        held_out_subjects(_table(2), 0)
    with pytest.raises(SplitError, match="not in the dataset"):
        held_out_motions(t, 0, ["swim"])


def test_labels_resampled_to_video_frames(tmp_path: Path) -> None:
    root = make_dataset(tmp_path, n_subjects=1, motions=("walk",))
    lab = D.load_labels(root / "dataset" / "S0" / "walk.nc")
    import xarray as xr

    ds = xr.load_dataset(root / "dataset" / "S0" / "walk.nc")
    vt = ds.video_time.values
    assert lab["coordinates"] == [c for c in COORDS if not c.startswith("pelvis_") and not c.endswith("_beta")]
    k = COORDS.index("knee_angle_r")
    want = np.deg2rad(np.interp(vt, ds.time.values, ds.joint_angle.values[:, k]))
    assert np.allclose(lab["y_coords"][:, lab["coordinates"].index("knee_angle_r")], want, atol=1e-6)
    assert lab["y_activation"].shape == (len(vt), ds.sizes["muscle"])
    assert np.allclose(lab["y_root"][0], 0.0)
    R6 = lab["y_pelvis_rot6d"]
    assert np.allclose(np.linalg.norm(R6[:, :3], axis=1), 1.0, atol=1e-6)
    assert np.allclose((R6[:, :3] * R6[:, 3:]).sum(1), 0.0, atol=1e-6)
    # camera frame: cam1's ground -> camera rotation is -I and its translation (0, 1, 4), so by
    # hand x_c = -x_g, y_c = -y_g + 1, z_c = -z_g + 4
    cam = D.camera_frame_labels(lab, "cam1")
    j = ds.joint_position.values
    jg = np.stack([np.interp(vt, ds.time.values, j[:, 2, a]) for a in range(3)], 1)  # joint 2 in ground
    assert np.allclose(cam["y_joints"][:, 2], np.stack([-jg[:, 0], -jg[:, 1] + 1.0, -jg[:, 2] + 4.0], 1), atol=1e-5)
    assert np.allclose(cam["y_root"][0], 0.0)
    R6 = cam["y_pelvis_rot6d"]
    assert np.allclose(R6[:, :3], -lab["y_pelvis_rot6d"][:, :3], atol=1e-6)  # -I times the pelvis axes
    # pelvis rotation convention: pure tilt is a rotation about z
    R = D.pelvis_rotation_matrix(np.array([0.3]), np.array([0.0]), np.array([0.0]))[0]
    assert np.allclose(R @ [1, 0, 0], [np.cos(0.3), np.sin(0.3), 0])


def test_norm_statistics_come_from_the_training_split_only(tmp_path: Path) -> None:
    from biohuman.train.run import sequences

    root = make_dataset(tmp_path, n_subjects=4, motions=("walk", "run"))
    config = {"results": str(root), "seed": 0,
              "train": {"cameras": None, "seed": None, "splits": {"n_test_subjects": 1, "n_val_subjects": 1}}}
    t = D.trial_table(root / "dataset" / "manifest.csv")
    sp = make_splits(t, config["train"]["splits"], 0)["held_out_subjects"]
    tr = sequences(config, list(sp.train), t)
    allseq = sequences(config, list(t.trial_id), t)
    norm = D.compute_norm(tr)
    x = np.concatenate([s["cnn"] for s in tr])
    assert np.allclose(norm["cnn"][0], x.mean(0), atol=1e-5) and np.allclose(norm["cnn"][1], x.std(0), atol=1e-5)
    assert not np.allclose(norm["cnn"][0], D.compute_norm(allseq)["cnn"][0], atol=1e-3)
    assert {s["subject"] for s in tr}.isdisjoint(sp.test_subjects)
    # windows: padded, masked, every frame covered
    ds = D.WindowedSequences(tr, norm, window=16, stride=8)
    item = ds[len(ds) - 1]
    assert str(item["mask"].dtype) == "torch.bool" and item["cnn"].shape == (16, 1280)
    short = D.WindowedSequences(tr[:1], norm, window=64, stride=8)
    it = short[0]
    n = len(tr[0]["time"])
    assert int(it["mask"].sum()) == n and float(it["cnn"][n:].abs().sum()) == 0.0
    assert D.windows(40, 16, 8) == [0, 8, 16, 24]
    assert D.windows(41, 16, 8) == [0, 8, 16, 24, 25]
