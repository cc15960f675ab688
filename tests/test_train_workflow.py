"""`snakemake train`: the DAG (dry run) and, slow, the whole target on the default config (reduced:
3 subjects x 2 motions, one camera, 2 epochs), with training + evaluation repeated to show the
same seed gives the same metrics."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from _snakemake import REDUCED_SURROGATE, snakemake

ROOT = Path(__file__).resolve().parents[1]


def test_dry_run_train(tmp_path: Path) -> None:
    r = snakemake("-n", "train", "--config", f"results={tmp_path / 'results'}")
    assert r.returncode == 0, r.stderr[-3000:]
    out = r.stdout + r.stderr
    for rule in ("features", "train_splits", "train_method", "evaluate"):
        assert rule in out


@pytest.mark.slow
def test_snakemake_train(tmp_path: Path, reduced: bool) -> None:
    results = tmp_path / "results"
    cfg = yaml.safe_load((ROOT / "config.yaml").read_text())
    cfg["results"] = str(results)
    cfg["activation_solver"] = "batched_so"
    if reduced:
        cfg["synthetic"]["motions"] = ["walk", "squat"]
        cfg["train"].update({"epochs": 2, "pose_to_activation_epochs": 2, "cameras": ["cam0"]})
        cfg["train"]["eval"]["n_boot"] = 100
        cfg["batched_so"].update(REDUCED_SURROGATE)  # a coarser muscle fit: this test is about training
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    r = snakemake("--cores", "2", "train", "--configfile", str(path), timeout=3000, render=True)
    assert r.returncode == 0, (r.stdout + r.stderr)[-5000:]
    metrics = json.loads((results / "eval" / "metrics.json").read_text())
    assert set(metrics) == {"held_out_subjects", "held_out_motions"}
    for split in metrics.values():
        assert set(split) == {"end_to_end", "two_stage", "motion_mean"}
        for k in ("pcc", "rmse", "nrmse", "active_mae", "joint_angle_rmse_deg", "mpjpe_mm", "pa_mpjpe_mm"):
            assert k in split["end_to_end"] and f"{k}_ci95" in split["end_to_end"]
    for f in ("held_out_subjects_pcc_per_muscle.png", "held_out_motions_heatmap.png"):
        assert (results / "eval" / "plots" / f).is_file()
    # the same seed from scratch (features kept): the same metrics
    shutil.rmtree(results / "train")
    shutil.rmtree(results / "eval")
    r = snakemake("--cores", "2", "train", "--configfile", str(path), timeout=3000, render=True)
    assert r.returncode == 0, (r.stdout + r.stderr)[-5000:]
    assert json.loads((results / "eval" / "metrics.json").read_text()) == metrics
