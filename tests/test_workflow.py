"""The Snakemake workflow: dry run, lint, the ground-truth firewall, and a tiny end-to-end run
with a corrupt trial beside a good one, run twice for reproducibility."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from _snakemake import REDUCED_SURROGATE, snakemake

ROOT = Path(__file__).resolve().parents[1]
LABEL_RULES = {"scale", "ik", "ground_forces", "inverse_dynamics", "activations", "trial_dataset", "manifest",
               "external_subject", "render", "anny_cache"}


def test_dry_run_all_and_label():
    for target in ("all", "label"):
        r = snakemake("-n", target, "--quiet", "rules")
        assert r.returncode == 0, r.stderr[-2000:]


def test_lint_is_clean():
    r = snakemake("--lint")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    assert "Congratulations" in r.stdout + r.stderr


def _jobs(dry_run_text: str) -> list[dict]:
    """Parse `snakemake -n` job blocks: rule name, input and output paths."""
    jobs, cur, key = [], None, None
    for line in dry_run_text.splitlines():
        m = re.match(r"^(?:local)?rule (\w+):", line.strip())
        if m:
            cur = {"rule": m.group(1), "input": [], "output": []}
            jobs.append(cur)
            key = None
            continue
        if cur is None:
            continue
        m = re.match(r"^\s+(input|output|log|jobid|wildcards|reason|resources|params):\s*(.*)$", line)
        if m:
            key = m.group(1)
            if key in ("input", "output"):
                cur[key] += [p.strip() for p in m.group(2).split(",") if p.strip()]
        elif not line.strip():
            cur, key = None, None
    return jobs


def test_no_labelling_rule_takes_ground_truth_as_input():
    r = snakemake("-n", "all", "--forceall")  # the whole DAG, even where results exist
    assert r.returncode == 0, r.stderr[-2000:]
    jobs = _jobs(r.stdout + r.stderr)
    rules = {j["rule"] for j in jobs}
    assert {"synth_subject", "synth_trial", "scale", "ik", "activations", "trial_dataset"} <= rules
    gt_made = [p for j in jobs if j["rule"].startswith("synth") for p in j["output"] if "/ground_truth/" in p]
    assert gt_made, "the synthetic rules should write ground truth (the parse found none)"
    label_inputs = [(j["rule"], p) for j in jobs if j["rule"] in LABEL_RULES for p in j["input"]]
    assert len(label_inputs) > 20
    leaks = [(rule, p) for rule, p in label_inputs if "ground_truth" in p]
    assert not leaks, f"labelling rules read ground truth: {leaks[:5]}"


def _write_config(tmp: Path, results: Path, corrupt_trc: Path, reduced: bool) -> Path:  # noqa: D103
    cfg = yaml.safe_load((ROOT / "config.yaml").read_text())
    cfg["results"] = str(results)
    if reduced:
        cfg["batched_so"].update(REDUCED_SURROGATE)
    cfg["synthetic"]["subjects"]["count"] = 1
    cfg["synthetic"]["motions"] = ["run"]
    cfg["trials"] = [{"subject": "lab01", "trial": "broken", "trc": str(corrupt_trc),
                      "static_trc": str(results / "synthetic" / "syn01" / "static.trc"),
                      "mass_kg": 70.0, "height_m": 1.75, "motion_type": "walk"}]
    path = tmp / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _corrupt_trc(path: Path) -> Path:
    path.write_text(
        "PathFileType\t4\t(X/Y/Z)\tbroken.trc\n"
        "DataRate\tCameraRate\tNumFrames\tNumMarkers\tUnits\tOrigDataRate\tOrigDataStartFrame\tOrigNumFrames\n"
        "100\t100\t50\t1\tmm\t100\t1\t50\n"
        "Frame#\tTime\tRASI\t\t\n\t\tX1\tY1\tZ1\n\n"
        "1\t0.00\t1.0\t900.0\t100.0\n2\t0.01\t1.0\tabc\t100.0\n"
    )
    return path


@pytest.mark.slow
def test_end_to_end_with_a_corrupt_trial_and_reproducible(tmp_path, reduced):
    import biohuman.io as bio

    bad = _corrupt_trc(tmp_path / "broken.trc")
    results = tmp_path / "results"
    cfg = _write_config(tmp_path, results, bad, reduced)
    kept = []
    for run in (1, 2):  # the same config twice, from scratch each time
        shutil.rmtree(results, ignore_errors=True)
        r = snakemake("--cores", "2", "all", "--configfile", str(cfg), timeout=1500, render=True)
        assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
        kept.append(tmp_path / f"run{run}")
        shutil.copytree(results / "dataset", kept[-1])
    runs = kept
    man = bio.read_manifest(runs[0] / "manifest.csv")
    by_id = {row.trial_id: row for row in man.itertuples()}
    assert set(by_id) == {"syn01/run", "lab01/broken"}
    assert by_id["lab01/broken"].status == "failed"
    assert "broken.trc" in by_id["lab01/broken"].message and "non-numeric" in by_id["lab01/broken"].message
    assert by_id["syn01/run"].status in ("ok", "flagged")
    sur = bio.read_status(results / "surrogate" / "syn01" / "surrogate.status.json")["extra"]
    if reduced:  # the config's sample counts reached the fit
        assert sur["n_samples"] == REDUCED_SURROGATE["surrogate_samples"]
        assert sur["summary_mm"]["n_visited"] == REDUCED_SURROGATE["surrogate_visited"]
    else:  # the automatic count: at least 600 uniform poses
        assert sur["n_samples"] >= 600 and sur["summary_mm"]["n_visited"] == 800
    # off-chain moment arms (docs/activations.md): only the gastrocnemii, only about the hip
    assert set(sur["off_chain"]) <= {"gasmed_r", "gasmed_l", "gaslat_r", "gaslat_l"}
    assert all(c.startswith("hip_") for cs in sur["off_chain"].values() for c in cs)

    assert [tid for tid, _ in bio.open_dataset(results / "dataset" / "manifest.csv")] == ["syn01/run"]
    a = bio.open_trial(runs[0] / "syn01" / "run.nc")
    b = bio.open_trial(runs[1] / "syn01" / "run.nc")
    assert a.sizes["muscle"] == 80
    from test_nn_fk import assert_fk_reproduces_dataset

    assert_fk_reproduces_dataset(a)  # the model's FK layer reproduces the labelled joint positions
    act = a["activation"].to_numpy()
    assert np.all(np.isfinite(act)) and act.max() <= 1
    from biohuman.osim.model import model_info

    lo, _ = model_info(None).activation_bounds()  # smoothing never leaves a muscle's control bounds
    assert np.all(act >= lo[None, :] - 1e-7), float((act - lo).min())
    assert np.all(np.isfinite(a["joint_moment"].to_numpy()))
    # the trial carries its synchronized video: frame i at t0 + i / fps, cameras and projections
    frames, times, _ = bio.open_video(results / "dataset" / "syn01" / "run.nc", 0)  # run 2, in place
    fps = a.attrs["video_fps"]
    assert len(frames) == len(times) and frames.shape[1:] == (256, 256, 3)
    np.testing.assert_allclose(times, float(a.time[0]) + np.arange(len(times)) / fps, atol=1e-6)
    assert a["joint_projection"].dims == ("camera", "frame", "projected_joint", "uv")
    # same config, same code -> identical values (only the creation time may differ)
    for var in a.data_vars:
        np.testing.assert_array_equal(a[var].to_numpy(), b[var].to_numpy(), err_msg=var)
    skip = {"created"}
    assert {k: v for k, v in a.attrs.items() if k not in skip} == {k: v for k, v in b.attrs.items() if k not in skip}
    for d in (*runs, results):
        shutil.rmtree(d, ignore_errors=True)


def test_labelling_rules_do_not_see_training_settings() -> None:
    """Editing `train` or `reference_solvers` must not change what the labelling rules get (their
    params and provenance hash), or Snakemake would re-label every trial; CMC / MocoInverse as the
    activation solver keep their options."""
    from biohuman.config import config_hash, labelling_config, validate_config

    base = validate_config(yaml.safe_load((ROOT / "config.yaml").read_text()))
    edited = {**base, "train": {**base["train"], "epochs": base["train"]["epochs"] + 7},
              "reference_solvers": {**base["reference_solvers"], "window_s": 0.123}}
    assert "train" not in labelling_config(base) and "reference_solvers" not in labelling_config(base)
    assert config_hash(labelling_config(edited)) == config_hash(labelling_config(base))
    changed = {**base, "ik": {**base["ik"], "solver": "opensim" if base["ik"]["solver"] == "nimble" else "nimble"}}
    assert config_hash(labelling_config(changed)) != config_hash(labelling_config(base))
    cmc = {**edited, "activation_solver": "cmc"}
    assert labelling_config(cmc)["reference_solvers"]["window_s"] == 0.123
    rules = "".join(p.read_text() for p in (ROOT / "workflow" / "rules").glob("*.smk")
                    if p.stem not in ("train", "reference"))
    assert "config=config," not in rules  # every labelling rule passes LABEL_CONFIG
