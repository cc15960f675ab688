"""Generate the embedded default data: synthetic subjects (true scaled model, static trial,
subject sheet) and their motions (marker TRC), with the ground truth kept aside."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from biohuman.io.atomic import atomic_write_text
from biohuman.motion.library import build_plan, sample_style
from biohuman.motion.markers import add_noise_and_dropout, marker_trajectories, perturb_offsets, standing_pose
from biohuman.motion.subjects import SubjectSpec, sample_subjects
from biohuman.motion.synth import synthesize
from biohuman.osim.model import model_info, resolve_model_path, skin_markers


def subject_spec(config: Mapping[str, Any], subject_id: str) -> SubjectSpec:
    """The configured synthetic subject with this id."""
    syn = config["synthetic"]["subjects"]
    for s in sample_subjects(syn["count"], config["seed"], height_range=tuple(syn["height_range_m"]),
                             bmi_range=tuple(syn["bmi_range"]), proportion_sd=syn["proportion_sd"]):
        if s.subject_id == subject_id:
            return s
    from biohuman.errors import ConfigError

    raise ConfigError(f"no synthetic subject '{subject_id}' in the config")


def _write_markers(path: Path, time: np.ndarray, names: list[str], xyz: np.ndarray, rate: float) -> None:
    from biohuman.io.trc import MarkerData, write_trc

    write_trc(path, MarkerData(time=time, names=list(names), xyz=xyz, rate=rate, source="biohuman synthetic", repairs=[]), units="mm")


def generate_subject(config: Mapping[str, Any], subject_id: str, *, static_trc: Path, sheet: Path,
                     true_model: Path, truth: Path) -> dict[str, Any]:
    """Create one synthetic subject.

    Writes the true scaled model and the truth JSON (scale factors, marker misplacements) under
    ground_truth/, the static calibration trial (skin markers, misplaced, with noise), and the
    subject sheet (mass and height: what a lab measures, the only subject data labelling reads).
    """
    from biohuman.osim.scale import read_scale_set, scale_model_manual
    from biohuman.pipeline import write_subject_sheet

    spec = subject_spec(config, subject_id)
    syn = config["synthetic"]
    generic = resolve_model_path(config["model"])
    scale_model_manual(generic, spec.segment_scales, spec.mass_kg, true_model,
                       setup_out=true_model.with_name("scale_setup.xml"))
    applied = read_scale_set(true_model.with_name(f"{true_model.stem}_scale_set.xml"))
    names = list(skin_markers(model_info(true_model)))
    rng = np.random.default_rng(spec.seed)
    lo, hi = syn["marker_offset_m"]
    offsets = perturb_offsets(names, rng, (lo, hi)) if hi > 0 else {}
    rate = float(config["rate_hz"])
    pose = standing_pose(true_model, syn["static_duration_s"], rate)
    xyz = marker_trajectories(true_model, pose, names, offsets)
    xyz, _ = add_noise_and_dropout(xyz, rate, rng, noise_sd_m=syn["noise_sd_m"])
    _write_markers(static_trc, pose.index.to_numpy(), names, xyz, rate)
    write_subject_sheet(sheet, subject_id, spec.mass_kg, spec.height_m, source="synthetic")
    record = {
        **spec.to_dict(),
        "body_scale_factors": {k: list(map(float, np.atleast_1d(v))) for k, v in applied.items()},
        "marker_offsets_m": {k: v.tolist() for k, v in offsets.items()},
        "static_pose": {k: float(v) for k, v in pose.iloc[0].items()},
        "generic_model": str(generic),
    }
    atomic_write_text(truth, json.dumps(record, indent=1))
    return {"outputs": {"static_trc": static_trc, "sheet": sheet, "model": true_model, "truth": truth}}


def generate_trial(config: Mapping[str, Any], subject_id: str, motion: str, *, true_model: Path,
                   subject_truth: Path, trc: Path, coordinates: Path, truth: Path,
                   progress: bool = False) -> dict[str, Any]:
    """Synthesise one motion of one subject: markers to `trc`, true coordinates and diagnostics
    (foot slide and sink, flight ballistics) to the ground-truth files."""
    from biohuman.io.storage import write_storage

    syn = config["synthetic"]
    subj = json.loads(Path(subject_truth).read_text())
    rate = float(config["rate_hz"])
    # the trial's style (speed, tempo, depth, start phase): its own stream from the subject seed
    ranges = {k: (float(v[0]), float(v[1])) for k, v in syn.get("variation", {}).items()}
    style = sample_style(motion, ranges, np.random.default_rng([subj["seed"], *map(ord, motion), 1]))
    plan = build_plan(motion, subj["height_m"], rate, style)
    result = synthesize(true_model, plan, progress=progress)
    names = list(skin_markers(model_info(true_model)))
    offsets = {k: np.asarray(v) for k, v in subj["marker_offsets_m"].items()}
    xyz = marker_trajectories(true_model, result.coordinates, names, offsets)
    # a per-trial stream derived from the subject seed and the motion name (reproducible)
    rng = np.random.default_rng([subj["seed"], *map(ord, motion)])
    xyz, gaps = add_noise_and_dropout(xyz, rate, rng, noise_sd_m=syn["noise_sd_m"],
                                      dropout_per_marker_s=syn["dropout_per_marker_s"],
                                      dropout_max_s=syn["dropout_max_s"])
    _write_markers(trc, plan.time, names, xyz, rate)
    table = result.coordinates.copy()
    info = model_info(true_model)
    rot = [c for c in table.columns if c in info.rotational]
    table[rot] = np.degrees(table[rot])
    write_storage(coordinates, table, in_degrees=True, name=f"{subject_id}_{motion}_ground_truth")
    record = {
        "subject_id": subject_id, "motion": motion, "motion_type": plan.motion_type,
        "description": plan.description, "style": style.to_dict(), "rate_hz": rate, "n_frames": len(plan.time),
        "contact_points": ["heel_r", "toe_r", "heel_l", "toe_l"],
        "contact": result.contact.astype(int).T.tolist(),
        "diagnostics": result.diagnostics, "dropout_gaps": gaps,
    }
    atomic_write_text(truth, json.dumps(record, indent=1))
    return {"outputs": {"trc": trc, "coordinates": coordinates, "truth": truth}, "extra": result.diagnostics}
