"""Motion sources -> the labelling spine's inputs: converts a trial's C3D file, AMASS-layout SMPL
sequence or (marker-mapped / frame-selected) TRC into `{results}/ingest/{subject}/{trial}.trc`
(+ `_grf.mot` and `_external_loads.xml` when a C3D has force plates), and a subject's static
trial into `{results}/ingest/{subject}/static/static.trc`. See docs/ingest.md.

Every marker file written here holds only markers of the configured model's marker set (after
the marker map), in metres-consistent TRC (mm on disk), OpenSim's Y-up frame.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from biohuman.errors import ConfigError, InputFormatError, MarkerError
from biohuman.io.trc import MarkerData

MODELS_DIR = Path(__file__).resolve().parents[1] / "models"
DEFAULT_SMPL_MARKER_MAP = MODELS_DIR / "smpl_markers.yaml"
"""SMPL-topology vertex -> Rajagopal2015 marker map used when an smpl trial names none."""


def _model_markers(config: Mapping[str, Any]) -> tuple[str, ...]:
    from biohuman.osim.model import model_info, resolve_model_path

    return model_info(resolve_model_path(config["model"])).markers


def keep_model_markers(data: MarkerData, known: Sequence[str], log: logging.Logger) -> MarkerData:
    """Markers of the model's set with data somewhere in the trial; others dropped (logged).
    Raises MarkerError when none is left."""
    known_set = set(known)
    unknown = [n for n in data.names if n not in known_set]
    if unknown:
        log.info("dropped %d markers the model does not have: %s", len(unknown), ", ".join(unknown))
    names = [n for n in data.names if n in known_set]
    empty = [n for n in names if not np.isfinite(data.marker(n)).all(axis=-1).any()]
    if empty:
        log.info("dropped %d markers with no data in the selected frames: %s", len(empty), ", ".join(empty))
    names = [n for n in names if n not in empty]
    if not names:
        raise MarkerError("no marker of the model's marker set is left (check the marker map)", data.source or None)
    return data.subset(names)


def select_frames(data: MarkerData, frames: Sequence[int] | None, time_range: Sequence[float] | None) -> MarkerData:
    """Frames [first, last] (0-based, inclusive) or a time range (s) of a marker trial; times kept."""
    from biohuman.io.c3d import time_window

    if frames is None and time_range is None:
        return data
    t0, t1 = time_window(data.time, frames=frames, time_range=time_range, source=data.source or None)
    return data.window(t0, t1)


def _trc_markers(path: str | Path, marker_map: str | None, log: logging.Logger) -> MarkerData:
    from biohuman.io.c3d import apply_marker_map, load_marker_map
    from biohuman.io.trc import read_trc

    data = read_trc(path, max_gap_s=None)
    if marker_map:
        data = apply_marker_map(data, load_marker_map(marker_map), logger=log)
    return data


def _frames(trial: Mapping[str, Any]) -> tuple[Sequence[int] | None, Sequence[float] | None]:
    f = trial.get("frames")
    tr = trial.get("time_range")
    return (list(f) if f else None), (list(tr) if tr else None)


def ingest_trial(trial: Mapping[str, Any], config: Mapping[str, Any], out_dir: str | Path,
                 log: logging.Logger) -> dict[str, Path]:
    """Convert one trial (a TrialRef dict) into out_dir/{trial}.trc (+ GRF files for C3D plates).

    Returns the written paths by name ("trc", ["grf_mot", "external_loads"]).
    """
    from biohuman.io.trc import write_trc

    out_dir = Path(out_dir)
    name, source, path = trial["trial"], trial["source"], Path(trial["file"])
    frames, time_range = _frames(trial)
    known = _model_markers(config)
    if source == "c3d":
        from biohuman.io.c3d import c3d_to_opensim_files

        return c3d_to_opensim_files(path, out_dir, name=name, marker_map=trial.get("marker_map") or None,
                                    keep_markers=known, frames=frames, time_range=time_range,
                                    forces=bool(trial.get("forces", True)), logger=log)
    if source == "smpl":
        from biohuman.motion.smpl import amass_markers

        sel = slice(int(frames[0]), int(frames[1]) + 1) if frames else None
        data = amass_markers(path, trial["body_model"], trial.get("marker_map") or DEFAULT_SMPL_MARKER_MAP, frames=sel)
        for note in data.repairs:
            log.info("smpl: %s", note)
        data = select_frames(data, None, time_range)
    elif source == "trc":
        data = select_frames(_trc_markers(path, trial.get("marker_map") or None, log), frames, time_range)
    else:
        raise ConfigError(f"trial {trial['subject']}/{name}: source '{source}' needs no ingest")
    data = keep_model_markers(data, known, log)
    out = out_dir / f"{name}.trc"
    write_trc(out, data, units="mm")
    log.info("ingested %s (%s, %d frames %.3f-%.3f s, %d markers) -> %s", path, source, data.n_frames,
             data.time[0], data.time[-1], len(data.names), out)
    return {"trc": out}


def ingest_static(subject: Mapping[str, Any], config: Mapping[str, Any], out_dir: str | Path,
                  log: logging.Logger) -> dict[str, Path]:
    """A subject's static trial (external_subjects entry of the plan) -> out_dir/static.trc.

    c3d / trc: the `static` file with the subject's marker map; smpl: the body model standing in
    its neutral pose with the betas of the subject's first sequence.
    """
    from biohuman.io.trc import write_trc

    out_dir = Path(out_dir)
    source = subject["source"]
    known = _model_markers(config)
    if source == "c3d":
        from biohuman.io.c3d import c3d_to_opensim_files

        return c3d_to_opensim_files(subject["static"], out_dir, name="static",
                                    marker_map=subject.get("marker_map") or None, keep_markers=known,
                                    forces=False, logger=log)
    if source == "smpl":
        from biohuman.motion.smpl import static_markers

        data = static_markers(subject["body_model"], subject["betas_from"],
                              subject.get("marker_map") or DEFAULT_SMPL_MARKER_MAP,
                              duration_s=float(config["synthetic"]["static_duration_s"]),
                              rate_hz=float(config["rate_hz"]))
    elif source == "trc":
        data = _trc_markers(subject["static"], subject.get("marker_map") or None, log)
    else:
        raise ConfigError(f"subject source '{source}' has no static trial to ingest")
    data = keep_model_markers(data, known, log)
    out = out_dir / "static.trc"
    write_trc(out, data, units="mm")
    log.info("static trial (%s, %d frames, %d markers) -> %s", source, data.n_frames, len(data.names), out)
    return {"trc": out}


def step_ingest(*, upstream: Mapping, log: logging.Logger, config: Mapping[str, Any], trial: Mapping[str, Any],
                out_dir: str | Path) -> dict[str, Any]:
    """Workflow step (run_step protocol): ingest one trial."""
    outputs = ingest_trial(trial, config, out_dir, log)
    return {"outputs": outputs, "extra": {"source": trial["source"], "file": str(trial["file"])}}


def step_ingest_static(*, upstream: Mapping, log: logging.Logger, config: Mapping[str, Any],
                       subject: Mapping[str, Any], out_dir: str | Path) -> dict[str, Any]:
    """Workflow step (run_step protocol): ingest a subject's static trial."""
    outputs = ingest_static(subject, config, out_dir, log)
    return {"outputs": outputs, "extra": {"source": subject["source"]}}


def resolve_input(path: str | Path, name: str = "trc") -> tuple[dict[str, str], str]:
    """For rule adapters: an input that is an ingest status record -> ({"ingest": record},
    the record's `name` output); any other input -> ({}, the path itself)."""
    p = str(path)
    if not p.endswith(".status.json"):
        return {}, p
    from biohuman.io.dataset import read_status

    rec = read_status(p)
    out = rec.get("outputs", {}).get(name, "")
    if rec.get("status") in ("ok", "flagged") and not out:
        raise InputFormatError(f"ingest record names no '{name}' output", p)
    return {"ingest": p}, out
