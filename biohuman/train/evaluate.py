"""Held-out evaluation of every method on both splits -> metrics.json (+ CIs) and plots.

Methods: `end_to_end` (BioHumanNet, both heads), `two_stage` (video -> pose model, then the
pose -> activation model reading the predicted coordinates), `motion_mean` (phase-aligned mean
trajectory of the training split; activation only). One evaluated sample = one (trial, camera)
of the test part; metrics and per-subject bootstrap CIs are in biohuman.train.metrics.

Output `metrics.json`: {split: {method: {metric: value, "<metric>_ci95": [lo, hi], n_samples,
n_subjects}}}; `per_muscle.json`: per-muscle PCC per split and method; figures under `plots/`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from biohuman.io.atomic import atomic_path, atomic_write_text
from biohuman.train.baselines import MotionMean
from biohuman.train.metrics import metrics_with_ci, pcc_per_muscle

EVAL_METHODS: tuple[str, ...] = ("end_to_end", "two_stage", "motion_mean")


def _sample(seq: Mapping[str, Any], out: Mapping[str, np.ndarray]) -> dict[str, Any]:
    s: dict[str, Any] = {"subject": seq["subject"], "trial_id": seq["trial_id"], "camera": seq["camera"],
                         "motion": seq["motion"]}
    if "activation" in out:
        s["pred_activation"], s["label_activation"] = out["activation"], seq["y_activation"]
    if "coords" in out:
        s["pred_coords_deg"], s["label_coords_deg"] = np.rad2deg(out["coords"]), np.rad2deg(seq["y_coords"])
    if "joints" in out:
        s["pred_joints"], s["label_joints"] = out["joints"], seq["y_joints"]
    return s


def predict_methods(test: Sequence[Mapping[str, Any]], train: Sequence[Mapping[str, Any]],
                    checkpoints: Mapping[str, str | Path], device: str = "cpu") -> dict[str, list[dict[str, Any]]]:
    """Samples of every method on the test sequences. checkpoints: end_to_end, pose_stage,
    pose_to_activation paths; `train`: the training sequences (for the motion mean)."""
    from biohuman.train.run import build_model
    from biohuman.train.trainer import load_model, predict_sequence

    models = {k: load_model(p, build_model) for k, p in checkpoints.items()}
    mm = MotionMean().fit(train)
    out: dict[str, list[dict[str, Any]]] = {m: [] for m in EVAL_METHODS}
    for seq in test:
        for name in ("end_to_end",):
            model, ck = models[name]
            o = predict_sequence(model.to(device), seq, ck["norm"], int(ck["train_cfg"]["window"]),
                                 max(1, int(ck["train_cfg"]["window"]) // 2), device)
            out[name].append(_sample(seq, o))
        pm, pck = models["pose_stage"]
        pose = predict_sequence(pm.to(device), seq, pck["norm"], int(pck["train_cfg"]["window"]),
                                max(1, int(pck["train_cfg"]["window"]) // 2), device)
        am, ack = models["pose_to_activation"]
        act = predict_sequence(am.to(device), seq, ack["norm"], int(ack["train_cfg"]["window"]),
                               max(1, int(ack["train_cfg"]["window"]) // 2), device,
                               extra={"pose_coords": pose["coords"]})
        out["two_stage"].append(_sample(seq, {**{k: pose[k] for k in ("coords", "joints") if k in pose},
                                              "activation": act["activation"]}))
        out["motion_mean"].append(_sample(seq, {"activation": mm.predict(seq["motion"], seq["phase"])}))
    return out


def summarise(samples: Mapping[str, Sequence[Mapping[str, Any]]], *, n_boot: int, seed: int) -> dict[str, Any]:
    """{method: metrics_with_ci} for one split."""
    return {m: metrics_with_ci(s, n_boot=n_boot, seed=seed) for m, s in samples.items() if s}


def summarise_by_motion(samples: Mapping[str, Sequence[Mapping[str, Any]]], *, n_boot: int, seed: int
                        ) -> dict[str, dict[str, Any]]:
    """{motion: {method: metrics_with_ci}}: the split's figures per motion type, so a reader
    sees where a method wins or loses (a pooled number can hide a motion it fails on)."""
    motions = sorted({str(s["motion"]) for ss in samples.values() for s in ss})
    return {mo: summarise({m: [s for s in ss if s["motion"] == mo] for m, ss in samples.items()},
                          n_boot=n_boot, seed=seed)
            for mo in motions}


def _json_safe(obj: Any) -> Any:
    """NaN / inf -> None (strict JSON), recursively; numpy scalars -> float."""
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, (float, np.floating)):
        return float(obj) if np.isfinite(obj) else None
    return obj


def _savefig(fig: Any, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=90, bbox_inches="tight", format="png")


def plot_split(split: str, samples: Mapping[str, Sequence[Mapping[str, Any]]], muscles: Sequence[str],
               trace_muscles: Sequence[str], out_dir: Path) -> list[Path]:
    """Per-muscle PCC bar chart (every method), predicted-vs-label traces for a few muscles on the
    first test sample, and label / end-to-end activation heatmaps of that sample."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    fig, ax = plt.subplots(figsize=(max(8, len(muscles) * 0.16), 4))
    methods = [m for m in EVAL_METHODS if samples.get(m)]
    w = 0.8 / max(len(methods), 1)
    for i, m in enumerate(methods):
        v = pcc_per_muscle([s["pred_activation"] for s in samples[m]], [s["label_activation"] for s in samples[m]])
        ax.bar(np.arange(len(muscles)) + i * w, np.nan_to_num(v), w, label=m)
    ax.set_xticks(np.arange(len(muscles)) + 0.4, muscles, rotation=90, fontsize=6)
    ax.set_ylabel("PCC")
    ax.set_title(f"{split}: per-muscle PCC")
    ax.legend(fontsize=8)
    paths.append(out_dir / f"{split}_pcc_per_muscle.png")
    _savefig(fig, paths[-1])
    plt.close(fig)

    first = {m: samples[m][0] for m in methods}
    ref = first[methods[0]]
    idx = [muscles.index(m) for m in trace_muscles if m in muscles] or list(range(min(4, len(muscles))))
    fig, axes = plt.subplots(len(idx), 1, figsize=(8, 2 * len(idx)), sharex=True, squeeze=False)
    for a, k in zip(axes[:, 0], idx):
        a.plot(ref["label_activation"][:, k], "k", lw=2, label="label")
        for m in methods:
            a.plot(first[m]["pred_activation"][:, k], label=m)
        a.set_ylabel(muscles[k], fontsize=8)
    axes[0, 0].legend(fontsize=7)
    axes[0, 0].set_title(f"{split}: {ref['trial_id']} {ref['camera']}")
    axes[-1, 0].set_xlabel("video frame")
    paths.append(out_dir / f"{split}_traces.png")
    _savefig(fig, paths[-1])
    plt.close(fig)

    fig, axes = plt.subplots(1, 2, figsize=(10, 6), sharey=True)
    for a, (title, arr) in zip(axes, (("label", ref["label_activation"]),
                                       ("end_to_end", first.get("end_to_end", ref)["pred_activation"]))):
        im = a.imshow(np.asarray(arr).T, aspect="auto", origin="lower", vmin=0, vmax=1, cmap="magma")
        a.set_title(title)
        a.set_xlabel("video frame")
    axes[0].set_ylabel("muscle index")
    fig.colorbar(im, ax=axes, label="activation")
    paths.append(out_dir / f"{split}_heatmap.png")
    _savefig(fig, paths[-1])
    plt.close(fig)
    return paths


def evaluate(config: Mapping[str, Any], splits_json: str | Path, train_dir: str | Path, out_json: str | Path
             ) -> dict[str, Any]:
    """Evaluate every method on both splits; writes metrics.json, per_muscle.json, per_motion.json
    (the same metrics per motion type) and plots next to out_json."""
    from biohuman.train.run import dataset_trials, read_splits, sequences, train_seed

    ec = config["train"]["eval"]
    out_json = Path(out_json)
    trials = dataset_trials(config)
    result: dict[str, Any] = {}
    per_muscle: dict[str, Any] = {}
    per_motion: dict[str, Any] = {}
    for name, sp in read_splits(splits_json).items():
        d = Path(train_dir) / name
        ck = {m: d / m / "model.pt" for m in ("end_to_end", "pose_stage", "pose_to_activation")}
        test = sequences(config, list(sp.test), trials)
        train = sequences(config, list(sp.train), trials)
        samples = predict_methods(test, train, ck)
        result[name] = summarise(samples, n_boot=int(ec["n_boot"]), seed=train_seed(config))
        per_motion[name] = summarise_by_motion(samples, n_boot=int(ec["n_boot"]), seed=train_seed(config))
        muscles = list(test[0]["muscles"])
        per_muscle[name] = {"muscles": muscles, **{
            m: pcc_per_muscle([s["pred_activation"] for s in ss], [s["label_activation"] for s in ss]).tolist()
            for m, ss in samples.items()}}
        plot_split(name, samples, muscles, list(ec["trace_muscles"]), out_json.parent / "plots")
    atomic_write_text(out_json.parent / "per_muscle.json", json.dumps(_json_safe(per_muscle), indent=1, allow_nan=False))
    atomic_write_text(out_json.parent / "per_motion.json", json.dumps(_json_safe(per_motion), indent=1, allow_nan=False))
    atomic_write_text(out_json, json.dumps(_json_safe(result), indent=1, allow_nan=False))
    return result


def check_targets(metrics: Mapping[str, Any], targets: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Each target of a targets file (configs/targets.yaml) against a metrics.json dict: a list of
    {check, value, target, passed}. Absolute targets: `{split: {method: {metric: {min|max: x}}}}`;
    `beats_baselines`: end_to_end against each baseline on each split and metric (higher/lower)."""
    rows: list[dict[str, Any]] = []
    for split, methods in targets.items():
        if split == "beats_baselines" or not isinstance(methods, Mapping):
            continue
        for method, mets in methods.items():
            for metric, bound in mets.items():
                v = metrics.get(split, {}).get(method, {}).get(metric)
                for kind, x in bound.items():
                    ok = v is not None and (v >= x if kind == "min" else v <= x)
                    rows.append({"check": f"{split}/{method}/{metric} {'>=' if kind == 'min' else '<='} {x}",
                                 "value": v, "target": x, "passed": bool(ok)})
    bb = targets.get("beats_baselines")
    if bb:
        for split in bb["splits"]:
            for base in bb["baselines"]:
                for metric, better in bb["metrics"].items():
                    e = metrics.get(split, {}).get("end_to_end", {}).get(metric)
                    b = metrics.get(split, {}).get(base, {}).get(metric)
                    ok = e is not None and b is not None and (e > b if better == "higher" else e < b)
                    rows.append({"check": f"{split}: end_to_end {metric} {'>' if better == 'higher' else '<'} {base}",
                                 "value": e, "target": b, "passed": bool(ok)})
    return rows


def format_table(metrics: Mapping[str, Any]) -> str:
    """Markdown table of every split, method and metric with its 95 % CI."""
    from biohuman.train.metrics import METRICS

    lines = ["| split | method | " + " | ".join(METRICS) + " |", "|---|---|" + "---|" * len(METRICS)]
    for split, methods in metrics.items():
        for method, m in methods.items():
            cells = []
            for k in METRICS:
                if m.get(k) is None:
                    cells.append("-")
                else:
                    lo, hi = m.get(f"{k}_ci95") or (None, None)
                    ci = f" [{lo:.3g}, {hi:.3g}]" if lo is not None and hi is not None else ""
                    cells.append(f"{m[k]:.3g}{ci}")
            lines.append(f"| {split} | {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m biohuman.train.evaluate METRICS_JSON [--targets TARGETS_YAML]`: the table and the
    target checks (exit status 1 when a target fails)."""
    import argparse

    import yaml

    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("metrics", type=Path)
    ap.add_argument("--targets", type=Path)
    a = ap.parse_args(argv)
    metrics = json.loads(a.metrics.read_text())
    print(format_table(metrics))
    if a.targets is None:
        return 0
    rows = check_targets(metrics, yaml.safe_load(a.targets.read_text()))
    for r in rows:
        print(f"{'PASS' if r['passed'] else 'FAIL'}  {r['check']}: {r['value']} (target {r['target']})")
    return 0 if all(r["passed"] for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
