"""Reference solvers (CMC, MocoInverse) in the workflow: configuration, the window and agreement
helpers, the dry-run DAG (the rule appears only for the configured trials) and one slow run of
CMC on a short window of a synthetic walk."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from _snakemake import REDUCED_SURROGATE, snakemake

from biohuman.config import validate_config
from biohuman.errors import ConfigError
from biohuman.reference import agreement, choose_window, solver_options

ROOT = Path(__file__).resolve().parents[1]


def _config(results: Path, *, motions: list[str], reference: dict | None) -> dict:
    cfg = yaml.safe_load((ROOT / "config.yaml").read_text())
    cfg["results"] = str(results)
    cfg["synthetic"]["subjects"]["count"] = 1
    cfg["synthetic"]["motions"] = motions
    cfg["render"]["enabled"] = False
    if reference is not None:
        cfg["reference_solvers"] = reference
    return cfg


def _write(tmp_path: Path, cfg: dict) -> Path:
    p = tmp_path / "config.yaml"
    p.write_text(yaml.safe_dump(cfg))
    return p


# --------------------------------------------------------------------------------------------- config


def test_config_default_runs_no_reference_solver(tmp_path: Path) -> None:
    cfg = validate_config(_config(tmp_path, motions=["walk"], reference=None))
    ref = cfg["reference_solvers"]
    assert ref["solvers"] == [] and ref["trials"] == []
    assert ref["window_s"] > 0 and ref["cmc"]["time_window"] > 0 and ref["moco_inverse"]["mesh_interval"] > 0


def test_config_rejects_unknown_trial_and_solver(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"unknown trial id.*syn01/jump.*syn01/walk"):
        validate_config(_config(tmp_path, motions=["walk"], reference={"solvers": ["cmc"], "trials": ["syn01/jump"]}))
    with pytest.raises(ConfigError, match=r"reference_solvers/solvers/0: 'static_opt' is not one of"):
        validate_config(_config(tmp_path, motions=["walk"],
                                reference={"solvers": ["static_opt"], "trials": ["syn01/walk"]}))
    with pytest.raises(ConfigError, match="unknown option"):
        solver_options("cmc", {"cmc": {"mesh_interval": 0.02}})
    assert solver_options("moco_inverse", {"moco_inverse": {"mesh_interval": 0.05}}) == {"mesh_interval": 0.05}


# --------------------------------------------------------------------------------------------- helpers


def test_choose_window_starts_at_a_foot_strike_with_room() -> None:
    t = np.round(np.arange(0, 1.34, 0.01), 10)
    contact = np.zeros((len(t), 2), dtype=bool)
    contact[:70, 0] = True            # right foot in stance from the start (no strike seen)
    contact[112:, 0] = True           # right strike at 1.12 s: no room for 0.3 s before the end
    contact[57:125, 1] = True         # left strike at 0.57 s
    a, b = choose_window(t, contact, 0.3, None)
    assert (a, b) == pytest.approx((0.57, 0.87))
    assert choose_window(t, None, 0.3, None) == pytest.approx((0.515, 0.815))  # centred without contacts
    assert choose_window(t, contact, 0.2, 0.4) == pytest.approx((0.4, 0.6))   # explicit start
    a, b = choose_window(t, None, 5.0, None)                                 # shortened to the trial
    assert a == pytest.approx(0.05) and b == pytest.approx(1.28)
    with pytest.raises(ConfigError, match="outside the trial"):
        choose_window(t, contact, 0.3, 1.2)


def test_agreement_hand_computed() -> None:
    t = np.arange(5) * 0.01
    main = pd.DataFrame({"a": [0.1, 0.2, 0.3, 0.4, 0.5], "b": [0.2] * 5, "c": [0.5, 0.4, 0.3, 0.2, 0.1]},
                        index=pd.Index(t, name="time"))
    ref = main.copy()
    ref["a"] = ref["a"] + 0.1                    # offset: r = 1, error 0.1 everywhere
    ref["c"] = [0.1, 0.2, 0.3, 0.4, 0.5]         # reversed: r = -1, errors 0.4, 0.2, 0, 0.2, 0.4
    out = agreement(ref.iloc[1:4], main)         # main interpolated onto the reference frames
    err = np.r_[[0.1] * 3, [0.0] * 3, [0.2, 0.0, 0.2]]
    assert out["rmse"] == pytest.approx(np.sqrt(np.mean(err**2)))
    assert out["max_abs_error"] == pytest.approx(0.2) and out["max_abs_error_muscle"] == "c"
    assert out["muscles_varying"] == 2                          # "b" is constant in the main solver
    assert out["r_median"] == pytest.approx(0.0) and out["r_min"] == pytest.approx(-1.0)
    assert out["r_min_muscle"] == "c" and out["frames"] == 3


# --------------------------------------------------------------------------------------------- dry run


def _jobs(text: str) -> list[tuple[str, str]]:
    """(rule, output) of the jobs of a `snakemake -n` listing."""
    out, rule = [], None
    for line in text.splitlines():
        s = line.strip()
        if s.startswith(("rule ", "localrule ")):
            rule = s.split()[1].rstrip(":")
        elif s.startswith("output:") and rule:
            out.append((rule, s.split(":", 1)[1].strip()))
    return out


def test_dry_run_reference_only_for_configured_trials(tmp_path: Path) -> None:
    results = tmp_path / "results"
    cfg = _config(results, motions=["walk", "run"],
                  reference={"solvers": ["cmc", "moco_inverse"], "trials": ["syn01/walk"], "window_s": 0.2})
    r = snakemake("-n", "reference", "--configfile", str(_write(tmp_path, cfg)))
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    ref = sorted(o for rule, o in _jobs(r.stdout + r.stderr) if rule == "reference_activations")
    assert ref == [f"{results}/reference/cmc/syn01/walk.status.json",
                   f"{results}/reference/moco_inverse/syn01/walk.status.json"]
    # the default target and an unconfigured run have no reference job
    r = snakemake("-n", "all", "--configfile", str(_write(tmp_path, cfg)))
    assert r.returncode == 0 and "reference_activations" not in r.stdout + r.stderr
    cfg["reference_solvers"] = {}
    r = snakemake("-n", "reference", "--configfile", str(_write(tmp_path, cfg)))
    assert r.returncode == 0 and "reference_activations" not in r.stdout + r.stderr


def test_dry_run_unknown_reference_trial_fails_clearly(tmp_path: Path) -> None:
    cfg = _config(tmp_path / "results", motions=["walk"], reference={"solvers": ["cmc"], "trials": ["syn01/run"]})
    r = snakemake("-n", "reference", "--configfile", str(_write(tmp_path, cfg)))
    assert r.returncode != 0
    assert "unknown trial id(s) ['syn01/run']" in r.stdout + r.stderr


# --------------------------------------------------------------------------------------------- slow run


@pytest.mark.slow
def test_workflow_cmc_window_in_dataset_format(tmp_path: Path, reduced: bool) -> None:
    """The workflow up to rule reference_activations for CMC on a short window of a synthetic walk."""
    import biohuman.io as bio
    from biohuman.io.storage import read_storage

    window = 0.05 if reduced else 0.1
    results = tmp_path / "results"
    cfg = _config(results, motions=["walk"],
                  reference={"solvers": ["cmc"], "trials": ["syn01/walk"], "window_s": window})
    if reduced:
        cfg["batched_so"].update(REDUCED_SURROGATE)
    r = snakemake("--cores", "1", "reference", "--configfile", str(_write(tmp_path, cfg)), timeout=1500)
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    out = results / "reference" / "cmc" / "syn01"
    st = bio.read_status(out / "walk.status.json")
    log = (results / "logs" / "reference_activations" / "cmc" / "syn01" / "walk.log").read_text()
    assert st["status"] in ("ok", "flagged"), st["message"] + "\n" + log[-3000:]

    ds = bio.open_trial(st["outputs"]["netcdf"])  # validates the dataset spec
    assert ds.attrs["activation_solver"] == "cmc" and ds.sizes["muscle"] == 80
    act = ds["activation"].to_numpy()
    assert np.isfinite(act).all() and act.min() >= 0.0 and act.max() <= 1.0
    t = ds["time"].to_numpy()
    a, b = ds.attrs["reference_window_start_s"], ds.attrs["reference_window_end_s"]
    assert t[0] == pytest.approx(a, abs=1e-6) and t[-1] == pytest.approx(b, abs=0.011)
    assert b - a == pytest.approx(window, abs=0.011)
    # the stored raw activations are CMC's, frame for frame
    sto = read_storage(st["outputs"]["activation_sto"]).table
    np.testing.assert_allclose(ds["activation_raw"].to_numpy(), np.clip(sto[list(ds.muscle.values)].to_numpy(), 0, 1),
                               atol=1e-6)
    assert "so_constraint_violation_max" not in [str(c) for c in ds["check"].values]

    agree = json.loads(Path(st["outputs"]["agreement"]).read_text())
    for key in ("rmse", "max_abs_error", "r_median", "r_min", "s_per_s", "wall_s"):
        assert isinstance(agree[key], float) and np.isfinite(agree[key]), (key, agree[key])
    assert agree["frames"] == len(t) and agree["solver"] == "cmc" and agree["muscles_varying"] > 0
    assert 0.0 <= agree["rmse"] <= agree["max_abs_error"] <= 1.0
    print(f"CMC window {a:.2f}-{b:.2f} s: {agree['s_per_s']:.0f} s per s, RMSE {agree['rmse']:.3f} "
          f"vs {agree['main_solver']}, r median {agree['r_median']:.2f}")
