"""Trainer: losses, determinism (same seed -> same metrics), exact resume, DDP with two gloo CPU
processes, and the whole train -> evaluate path on a tiny synthetic dataset with a
contract-shaped model (biohuman.nn's BioHumanNet is exercised by the workflow test)."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import numpy as np
import pytest
import torch

from biohuman.train import data as D
from biohuman.train.losses import CompositeLoss, PearsonLoss, VelocityMSE
from biohuman.train.trainer import load_checkpoint, train_model

from _train_data import make_dataset, tiny_build

CFG = {"epochs": 3, "batch_size": 4, "lr": 3e-3, "window": 16, "stride": 8, "seed": 11, "device": "cpu",
       "num_threads": 1, "progress": False, "warmup_steps": 2}
WEIGHTS = {"coords": 1.0, "coords_vel": 1.0, "joints": 1.0, "activation": 1.0, "activation_vel": 1.0,
           "activation_pcc": 0.1, "pelvis_rot6d": 0.1, "root": 0.1}


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = make_dataset(tmp_path_factory.mktemp("ds"), n_subjects=3, motions=("walk", "run"))
    t = D.trial_table(root / "dataset" / "manifest.csv")
    seqs = []
    for row in t.itertuples():
        lab = D.load_labels(row.path)
        for cam in lab["cameras"]:
            seqs.append({**lab, **D.load_features(D.features_path(root, row.trial_id, cam)), "camera": cam})
    tr = [s for s in seqs if s["subject"] != "S2"]
    va = [s for s in seqs if s["subject"] == "S2"]
    s0 = tr[0]
    mcfg = {"arch": "tiny", "coordinates": s0["coordinates"], "muscles": s0["muscles"], "joints": s0["joints"],
            "hidden": 16, "heads": {"pose": True, "activation": True}}
    return {"root": root, "train": tr, "val": va, "norm": D.compute_norm(tr), "mcfg": mcfg}


def test_losses_hand_cases() -> None:
    mask = torch.tensor([[True, True, True, False]])
    y = torch.tensor([[[0.0], [1.0], [0.0], [9.0]]])
    p = torch.tensor([[[1.0], [1.0], [2.0], [-9.0]]])
    total, parts = CompositeLoss({"activation": 2.0})({"activation": p}, {"y_activation": y, "mask": mask})
    assert parts["activation"] == pytest.approx((1 + 0 + 4) / 3)  # the padded frame is ignored
    assert float(total) == pytest.approx(2 * 5 / 3)
    # differences: pred [0, 1], label [1, -1] over the two real pairs -> ((0-1)^2 + (1+1)^2) / 2
    v = VelocityMSE("activation")({"activation": p}, {"y_activation": y, "mask": mask})
    assert float(v) == pytest.approx(2.5)
    # Pearson: a scaled, shifted copy -> loss 0; a reversed one -> 2; a constant label is skipped
    t = torch.linspace(0, 1, 10).view(1, 10, 1)
    m = torch.ones(1, 10, dtype=torch.bool)
    lab = torch.cat([t, torch.full_like(t, 0.3)], -1)
    assert float(PearsonLoss()({"activation": torch.cat([3 * t + 1, t], -1)}, {"y_activation": lab, "mask": m})) \
        == pytest.approx(0.0, abs=1e-5)
    assert float(PearsonLoss()({"activation": torch.cat([-t, t], -1)}, {"y_activation": lab, "mask": m})) \
        == pytest.approx(2.0, abs=1e-5)
    # joints are compared relative to the root joint: a global shift costs nothing
    yj = torch.randn(1, 4, 3, 3)
    _, pj = CompositeLoss({"joints": 1.0})({"joints": yj + 5.0}, {"y_joints": yj, "mask": mask})
    assert pj["joints"] == pytest.approx(0.0, abs=1e-10)
    # log errors: 0.03 vs 0.01 -> log(0.04 / 0.02)^2 = ln(2)^2; the padded frame is ignored
    a = torch.tensor([[[0.03], [0.5], [0.01], [1.0]]])
    b = torch.tensor([[[0.01], [0.5], [0.01], [0.0]]])
    _, pl = CompositeLoss({"activation_log": 1.0})({"activation": a}, {"y_activation": b, "mask": mask})
    assert pl["activation_log"] == pytest.approx(np.log(2.0) ** 2 / 3)


def _run(data: dict, out: Path, **kw) -> dict:
    return train_model(tiny_build, data["mcfg"], data["train"], data["val"], data["norm"], {**CFG, **kw.pop("cfg", {})},
                       WEIGHTS, out, kind="test", **kw)


def test_same_seed_same_metrics_and_training_learns(data: dict, tmp_path: Path) -> None:
    a = _run(data, tmp_path / "a")
    b = _run(data, tmp_path / "b")
    assert a["history"] == [{**r, "time_s": a["history"][i]["time_s"]} for i, r in enumerate(b["history"])]
    sa = load_checkpoint(tmp_path / "a" / "model.pt")["model_state"]
    sb = load_checkpoint(tmp_path / "b" / "model.pt")["model_state"]
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    h = a["history"]
    assert h[-1]["train"]["loss"] < h[0]["train"]["loss"]
    ck = load_checkpoint(tmp_path / "a" / "model.pt")
    assert set(ck) >= {"model_state", "model_cfg", "norm", "train_cfg", "epoch", "optimizer_state", "metrics"}
    assert np.allclose(ck["norm"]["cnn"][0], data["norm"]["cnn"][0])
    lines = (tmp_path / "a" / "history.jsonl").read_text().splitlines()
    assert len(lines) == CFG["epochs"] and "val" in json.loads(lines[0])
    c = _run(data, tmp_path / "c", cfg={"seed": 12})
    assert c["history"][-1]["train"]["loss"] != h[-1]["train"]["loss"]


def test_resume_gives_the_uninterrupted_result(data: dict, tmp_path: Path) -> None:
    full = _run(data, tmp_path / "full")
    part = _run(data, tmp_path / "resumed", stop_after=1)
    assert len(part["history"]) == 1 and not (tmp_path / "resumed" / "model.pt").exists()
    rest = _run(data, tmp_path / "resumed")
    assert [r["train"] for r in rest["history"]] == [r["train"] for r in full["history"]]
    sa = load_checkpoint(tmp_path / "full" / "last.pt")["model_state"]
    sb = load_checkpoint(tmp_path / "resumed" / "last.pt")["model_state"]
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_resume_refuses_a_run_of_another_configuration(data: dict, tmp_path: Path,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    """A finished last.pt of other loss weights is not taken as this run's result: training starts
    afresh (same history as a fresh run); settings that do not change the result may differ."""
    fresh = _run(data, tmp_path / "fresh", cfg={"lr": 1e-3})
    _run(data, tmp_path / "reused")
    again = _run(data, tmp_path / "reused", cfg={"lr": 1e-3})
    assert "different trainer config" in caplog.text
    assert [r["train"] for r in again["history"]] == [r["train"] for r in fresh["history"]]
    caplog.clear()
    same = _run(data, tmp_path / "reused", cfg={"lr": 1e-3, "progress": True})
    assert "not resuming" not in caplog.text
    assert [r["train"] for r in same["history"]] == [r["train"] for r in fresh["history"]]
    # relabelled data (same inputs, hence the same normalisation statistics): trained afresh
    relabelled = [{**s, "y_activation": np.clip(s["y_activation"] + 0.01, 0, 1)} for s in data["train"]]
    train_model(tiny_build, data["mcfg"], relabelled, data["val"], data["norm"], {**CFG, "lr": 1e-3}, WEIGHTS,
                tmp_path / "reused", kind="test")
    assert "different training or validation data" in caplog.text


def _ddp_worker(rank: int, world: int, port: int, data: dict, out: str) -> None:
    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "WORLD_SIZE": str(world),
                       "RANK": str(rank), "LOCAL_RANK": str(rank)})
    res = _run(data, Path(out), cfg={"epochs": 2})
    torch.save({"rank": rank, "history": res["history"]}, Path(out) / f"rank{rank}.pt")
    torch.distributed.destroy_process_group()


def test_ddp_two_gloo_processes(data: dict, tmp_path: Path) -> None:
    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    small = {**data, "train": data["train"][:4], "val": data["val"][:2]}
    mp.spawn(_ddp_worker, args=(2, port, small, str(tmp_path)), nprocs=2, join=True)
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=False)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=False)
    assert len(r0["history"]) == 2
    # the logged (all-reduced) training loss and the validation loss agree across ranks
    for a, b in zip(r0["history"], r1["history"]):
        assert a["train"] == pytest.approx(b["train"]) and a["val"] == pytest.approx(b["val"])
    assert (tmp_path / "model.pt").is_file()


def test_train_and_evaluate_all_methods(tmp_path: Path) -> None:
    """train_method for the three methods on both splits with the real BioHumanNet (tiny
    settings), then evaluate -> metrics.json + plots."""
    import biohuman.train.run as R
    from biohuman.config import validate_config
    from biohuman.train.evaluate import evaluate

    root = make_dataset(tmp_path / "res", n_subjects=4, motions=("walk", "run", "squat"))
    config = validate_config({"results": str(root), "seed": 3, "train": {
        "epochs": 4, "pose_to_activation_epochs": 4, "window": 16, "stride": 8, "device": "cpu", "num_threads": 1,
        "progress": False, "batch_size": 8, "model": {"d_model": 16, "n_layers": 1, "n_heads": 2},
        "eval": {"n_boot": 50}, "pose_to_activation": {"hidden": 16, "layers": 2},
        "splits": {"test_motions": ["squat"]}}})
    R.write_splits(config, root / "train" / "splits.json")
    for split in ("held_out_subjects", "held_out_motions"):
        for m in R.METHODS:
            R.train_method(config, root / "train" / "splits.json", split, m, root / "train" / split / m)
    res = evaluate(config, root / "train" / "splits.json", root / "train", root / "eval" / "metrics.json")
    on_disk = json.loads((root / "eval" / "metrics.json").read_text())
    assert set(on_disk) == {"held_out_subjects", "held_out_motions"}
    for split in on_disk.values():
        assert set(split) == {"end_to_end", "two_stage", "motion_mean"}
        assert {"pcc", "rmse", "nrmse", "active_mae", "joint_angle_rmse_deg", "mpjpe_mm", "pa_mpjpe_mm"} <= set(
            split["end_to_end"])
        assert "mpjpe_mm" not in split["motion_mean"] and "pcc_ci95" in split["motion_mean"]
        lo, hi = split["end_to_end"]["rmse_ci95"]
        assert lo <= split["end_to_end"]["rmse"] <= hi or split["end_to_end"]["n_subjects"] == 1
    assert res["held_out_subjects"]["end_to_end"]["n_subjects"] == 1
    # per motion type: every test motion of each split, sample counts adding up to the pooled ones
    per_motion = json.loads((root / "eval" / "per_motion.json").read_text())
    assert set(per_motion["held_out_motions"]) == {"squat"}
    for split, by_motion in per_motion.items():
        for method, pooled in on_disk[split].items():
            assert sum(m[method]["n_samples"] for m in by_motion.values()) == pooled["n_samples"]
    only = per_motion["held_out_motions"]["squat"]["end_to_end"]
    assert only["pcc"] == pytest.approx(on_disk["held_out_motions"]["end_to_end"]["pcc"])
    for name in ("pcc_per_muscle", "traces", "heatmap"):
        assert (root / "eval" / "plots" / f"held_out_motions_{name}.png").is_file()
    # the pose-stage checkpoint has no activation head; the second stage has only activation terms
    ck = load_checkpoint(root / "train" / "held_out_subjects" / "pose_stage" / "model.pt")
    assert ck["model_cfg"]["heads"] == {"pose": True, "activation": False}
    # the checkpoint restores through the "nn" side of the contract
    from biohuman.nn.model import BioHumanNet

    net = BioHumanNet.from_checkpoint(root / "train" / "held_out_subjects" / "end_to_end" / "model.pt")
    assert set(net.heads) == {"pose", "activation"}
    # normalisation statistics of the checkpoint: from the training part of its split only
    from biohuman.nn.model import input_norm_stats

    sp = R.read_splits(root / "train" / "splits.json")["held_out_subjects"]
    ck = load_checkpoint(root / "train" / "held_out_subjects" / "end_to_end" / "model.pt")
    want = input_norm_stats(R.sequences(config, list(sp.train)), "mediapipe_effnet")
    every = input_norm_stats(R.sequences(config, list(sp.train + sp.val + sp.test)), "mediapipe_effnet")
    assert np.allclose(ck["norm"]["cnn"][0], want["cnn"][0]) and not np.allclose(ck["norm"]["cnn"][0], every["cnn"][0])
    assert set(load_checkpoint(root / "train" / "held_out_subjects" / "pose_to_activation" / "model.pt")
               ["loss_weights"]) <= {"activation", "activation_vel", "activation_pcc"}
