"""Scaling and IK accuracy against the synthetic ground truth, over several subjects.

Reports, per subject and condition (nominal markers; 1-2 cm misplaced markers + 5 mm noise),
the worst per-segment scale-factor error (%) and the lower-limb + pelvis IK RMSE (degrees) on a
walking trial. Usage: python benchmarks/label_accuracy.py [--subjects 5] [--frames 80]
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
from pathlib import Path

import numpy as np

from biohuman.config import validate_config
from biohuman.io.storage import read_storage
from biohuman.motion.generate import generate_subject, generate_trial
from biohuman.motion.subjects import SEGMENTS
from biohuman.osim.scale import SEGMENT_BODIES
from biohuman.pipeline import read_coordinates, step_ik, step_scale

COORDS = [f"{c}_{s}" for s in ("r", "l") for c in ("hip_flexion", "hip_adduction", "hip_rotation", "knee_angle",
                                                      "ankle_angle")] + ["pelvis_tilt", "pelvis_list", "pelvis_rotation"]
LOG = logging.getLogger("bench")


def one(tmp: Path, subject: str, count: int, offsets: list[float], noise: float, frames: int) -> tuple[float, float]:
    """(worst segment scale error %, worst coordinate IK RMSE deg) for one subject/condition."""
    cfg = validate_config({"results": str(tmp), "synthetic": {"subjects": {"count": count},
                                                               "marker_offset_m": offsets, "noise_sd_m": noise}})
    d = tmp / "synthetic" / subject
    gt = d / "ground_truth"
    generate_subject(cfg, subject, static_trc=d / "static.trc", sheet=d / "subject.yaml",
                     true_model=gt / "model.osim", truth=gt / "subject.json")
    sc = step_scale(upstream={}, log=LOG, config=cfg, subject=subject, static_trc=d / "static.trc",
                    sheet=d / "subject.yaml", out_dir=tmp / "scale" / subject)
    truth = json.loads((gt / "subject.json").read_text())["segment_scales"]
    got = json.loads((tmp / "scale" / subject / "scale.json").read_text())["scale_factors"]
    scale_err = max(float(np.max(np.abs(np.asarray(got[SEGMENT_BODIES[s][0]]) / truth[s] - 1))) * 100
                    for s in SEGMENTS if s != "hand")
    generate_trial(cfg, subject, "walk", true_model=gt / "model.osim", subject_truth=gt / "subject.json",
                   trc=d / "walk.trc", coordinates=gt / "walk.mot", truth=gt / "walk.json")
    trial = {"subject": subject, "trial": "walk", "motion_type": "walk", "source": "synthetic",
             "time_range": [0.0, (frames - 1) / 100.0]}
    ik = step_ik(upstream={"scale": sc}, log=LOG, config=cfg, trial=trial, trc=d / "walk.trc",
                 out_dir=tmp / "ik" / subject)
    q = read_coordinates(ik["outputs"]["mot"], sc["outputs"]["model"])
    ref = read_storage(gt / "walk.mot").table.loc[q.index[0] - 1e-9: q.index[-1] + 1e-9]
    rmse = max(float(np.sqrt(np.mean((np.degrees(q[c].to_numpy()) - ref[c].to_numpy()) ** 2))) for c in COORDS)
    return scale_err, rmse


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--subjects", type=int, default=5)
    ap.add_argument("--frames", type=int, default=80)
    args = ap.parse_args()
    rows = {"nominal": ([0.0, 0.0], 0.0), "perturbed+5mm": ([0.01, 0.02], 0.005)}
    out = {}
    for name, (offsets, noise) in rows.items():
        res = []
        for i in range(args.subjects):
            with tempfile.TemporaryDirectory() as tmp:
                res.append(one(Path(tmp), f"syn{i + 1:02d}", args.subjects, offsets, noise, args.frames))
        s, r = np.array(res).T
        out[name] = {"scale_err_pct_worst": s.round(2).tolist(), "ik_rmse_deg_worst": r.round(2).tolist()}
        print(f"{name:14s} scale error worst segment (%): {np.round(s, 2)}  IK RMSE worst coordinate (deg): {np.round(r, 2)}")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
