"""Validation of the C3D reader against OpenSim's own conversions of the same files.

Reference (external data folder, CATALOG.md §4): `opensim-core/OpenSim/Tests/shared/walking{2,5}.c3d`
and OpenSim's test standards `opensim-core/OpenSim/Common/Test/std_walking{2,5}_markers.trc`
(markers, mm, lab frame, every 10th frame plus the last), `std_walking{2,5}_grfs.sto` (per plate:
force N, the plate's surface centre mm, moment about it N mm; every 100th analog sample plus the
last), `std_cop_walking{2,5}_grfs.sto` (force, centre of pressure, free moment) and
`std_walking{2,5}_analog.sto` (raw analog channels). `biohuman.io.c3d.read_c3d` is run with
`rotate_to_y_up=False` (OpenSim's lab frame) and compared on the same rows.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

TRIALS = ("walking2", "walking5")


def _rows(n: int, increment: int) -> list[int]:
    """Rows OpenSim's test keeps when downsampling: every `increment`-th and the last."""
    return [r for r in range(n) if r % increment == 0 or r == n - 1]


def compare_trial(external: Path, trial: str) -> dict[str, float]:
    """Differences between read_c3d and OpenSim's standards for one file (SI units).

    Returns max |diff| of markers (mm), forces (N), plate origins and CoPs (mm), moments about
    the origin and free moments (N m), analog channels (file units), plus row counts and
    whether the missing-marker pattern agrees.
    """
    from biohuman.io.c3d import read_c3d
    from biohuman.io.storage import read_storage
    from biohuman.io.trc import read_trc

    c3d = external / "opensim-core/OpenSim/Tests/shared" / f"{trial}.c3d"
    std = external / "opensim-core/OpenSim/Common/Test"
    d = read_c3d(c3d, rotate_to_y_up=False)
    ref = read_trc(std / f"std_{trial}_markers.trc", max_gap_s=None)
    rows = _rows(d.markers.n_frames, 10)
    if ref.names != d.markers.names or len(rows) != ref.n_frames:
        raise AssertionError(f"{trial}: marker names/rows differ from OpenSim's standard")
    ours = d.markers.xyz[rows]
    out: dict[str, float] = {
        "marker_rows": len(rows), "markers": len(ref.names),
        "missing_pattern_equal": float(np.array_equal(np.isnan(ours), np.isnan(ref.xyz))),
        "marker_max_diff_mm": float(np.nanmax(np.abs(ours - ref.xyz)) * 1000.0),
        "marker_time_max_diff_s": float(np.max(np.abs(d.markers.time[rows] - ref.time))),
    }
    for kind, prefix in (("origin", ""), ("cop", "cop_")):
        table = read_storage(std / f"std_{prefix}{trial}_grfs.sto").table
        pr = _rows(len(d.plates[0].time), 100)
        if len(pr) != len(table):
            raise AssertionError(f"{trial}: {len(pr)} force rows vs {len(table)} in OpenSim's standard")
        f = p = m = 0.0
        for pf in d.plates:
            k = pf.index
            F = table[[f"f{k}_{i}" for i in (1, 2, 3)]].to_numpy()
            P = table[[f"p{k}_{i}" for i in (1, 2, 3)]].to_numpy() / 1000.0
            M = table[[f"m{k}_{i}" for i in (1, 2, 3)]].to_numpy() / 1000.0
            f = max(f, float(np.max(np.abs(pf.force[pr] - F))))
            if kind == "origin":
                p = max(p, float(np.max(np.abs(pf.centre[None] - P))))
                m = max(m, float(np.max(np.abs(pf.moment_origin[pr] - M))))
            else:
                p = max(p, float(np.max(np.abs(pf.cop[pr] - P))))
                m = max(m, float(np.max(np.abs(pf.free_moment[pr] - M))))
        out[f"force_max_diff_N_{kind}"] = f
        out[f"{'origin' if kind == 'origin' else 'cop'}_max_diff_mm"] = p * 1000.0
        out[f"moment_max_diff_Nm_{kind}"] = m
        out["force_rows"] = len(pr)
    analog = read_storage(std / f"std_{trial}_analog.sto").table
    ar = _rows(len(d.analog), 1000)
    out["analog_max_diff"] = float(np.max(np.abs(d.analog.iloc[ar][list(analog.columns)].to_numpy()
                                                  - analog.to_numpy())))
    out["analog_rows"] = len(ar)
    return out


def validate_c3d(external: Path, out: Path) -> dict:
    """Compare read_c3d with OpenSim's conversions of walking2/5.c3d; write `c3d.json` in `out`.

    Returns {"c3d": {trial: figures, "max": worst figures, "pass": acceptance (markers <= 0.1 mm,
    forces <= 0.1 N, CoP <= 0.1 mm)}}.
    """
    external, out = Path(external), Path(out)
    per = {t: compare_trial(external, t) for t in TRIALS}
    worst = {
        "marker_max_diff_mm": max(v["marker_max_diff_mm"] for v in per.values()),
        "force_max_diff_N": max(max(v["force_max_diff_N_origin"], v["force_max_diff_N_cop"]) for v in per.values()),
        "cop_max_diff_mm": max(v["cop_max_diff_mm"] for v in per.values()),
        "moment_max_diff_Nm": max(max(v["moment_max_diff_Nm_origin"], v["moment_max_diff_Nm_cop"])
                                  for v in per.values()),
    }
    ok = (worst["marker_max_diff_mm"] <= 0.1 and worst["force_max_diff_N"] <= 0.1 and worst["cop_max_diff_mm"] <= 0.1
          and all(v["missing_pattern_equal"] == 1.0 for v in per.values()))
    result = {"c3d": {**per, "max": worst, "pass": bool(ok),
                      "reference": "OpenSim testC3DFileAdapter standards (std_walking{2,5}_*)"}}
    out.mkdir(parents=True, exist_ok=True)
    from biohuman.io.atomic import atomic_write_text

    atomic_write_text(out / "c3d.json", json.dumps(result, indent=1))
    return result
