"""Workflow plumbing: which subjects and trials a config asks for, where their files live, and the
status-record protocol that lets one bad trial fail without stopping or hiding anything.

Every per-trial step writes `results/{step}/{subject}/{trial}.status.json`:
`{"status": "ok" | "flagged" | "failed" | "skipped", "message": ..., "outputs": {...}}`.
A step whose upstream record is not ok/flagged records "skipped" (naming the upstream failure)
instead of running.
"""

from __future__ import annotations

import logging
import os
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from biohuman.errors import BiohumanError, ConfigError

GOOD = ("ok", "flagged")


SOURCES = ("synthetic", "trc", "c3d", "smpl")
"""Motion sources a trial may come from (docs/ingest.md)."""


@dataclass(frozen=True)
class TrialRef:
    """One trial of the plan: subject, trial id, where its markers come from and what it is.

    trc: the marker file IK reads (for ingested trials the ingest rule's output). file: the
    source file as configured (TRC, C3D or AMASS .npz). ingest_status: the ingest rule's record
    when the trial goes through `ingest` (c3d, smpl, or trc with a marker map or frames), else "".
    """

    subject: str
    trial: str
    source: str  # one of SOURCES
    trc: str
    motion_type: str
    motion: str = ""
    grf_mot: str = ""
    external_loads_xml: str = ""
    time_range: tuple[float, float] | None = None
    file: str = ""
    marker_map: str = ""
    frames: tuple[int, int] | None = None
    forces: bool = True
    body_model: str = ""
    ingest_status: str = ""

    @property
    def marker_input(self) -> str:
        """What the IK rule depends on: the ingest record when ingested, else the TRC."""
        return self.ingest_status or self.trc

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Plan:
    """Subjects and trials a config asks for, with the paths of their inputs."""

    results: str
    synthetic_subjects: tuple[str, ...]
    external_subjects: dict[str, dict[str, Any]]
    trials: tuple[TrialRef, ...]

    def trial(self, subject: str, trial: str) -> TrialRef:
        for t in self.trials:
            if t.subject == subject and t.trial == trial:
                return t
        raise ConfigError(f"no trial '{trial}' for subject '{subject}' in the config")

    def subject_sheet(self, subject: str) -> str:
        """Subject measurements (mass, height) as a lab would record them: not ground truth."""
        if subject in self.synthetic_subjects:
            return f"{self.results}/synthetic/{subject}/subject.yaml"
        return f"{self.results}/external/{subject}/subject.yaml"

    def static_trc(self, subject: str) -> str:
        if subject in self.synthetic_subjects:
            return f"{self.results}/synthetic/{subject}/static.trc"
        return str(self.external_subjects[subject]["static_trc"])

    def static_input(self, subject: str) -> str:
        """What the scale rule depends on: the static ingest record when the subject's static
        trial is converted (c3d, smpl, mapped trc), else the static TRC."""
        if subject in self.synthetic_subjects:
            return self.static_trc(subject)
        return str(self.external_subjects[subject].get("static_ingest_status") or self.static_trc(subject))

    @property
    def ingest_subjects(self) -> tuple[str, ...]:
        """External subjects whose static trial goes through rule ingest_static."""
        return tuple(s for s, v in self.external_subjects.items() if v.get("static_ingest_status"))


def plan(config: Mapping[str, Any]) -> Plan:
    """Expand a validated config into subjects and trials (synthetic first, then external)."""
    from biohuman.motion.library import MOTION_TYPE
    from biohuman.motion.subjects import sample_subjects

    R = config["results"]
    syn = config["synthetic"]
    subjects = sample_subjects(syn["subjects"]["count"], config["seed"])
    trials = [
        TrialRef(s.subject_id, m, "synthetic", f"{R}/synthetic/{s.subject_id}/{m}.trc", MOTION_TYPE[m], motion=m)
        for s in subjects
        for m in syn["motions"]
    ]
    ext: dict[str, dict[str, Any]] = {}
    syn_ids = {s.subject_id for s in subjects}
    for t in config.get("trials", []):
        if t["subject"] in syn_ids:
            raise ConfigError(f"external subject id '{t['subject']}' clashes with a synthetic subject")
        ref, subj = _external_trial(t, R)
        prev = ext.setdefault(t["subject"], subj)
        for key in ("source", "static", "static_trc", "mass_kg", "height_m", "marker_map", "body_model"):
            if prev.get(key) != subj.get(key):
                raise ConfigError(f"subject '{t['subject']}' has trials with different '{key}' "
                                  f"({prev.get(key)!r} vs {subj.get(key)!r}); one subject has one source, "
                                  f"static trial, marker map, body model and body size")
        trials.append(ref)
    keys = [(t.subject, t.trial) for t in trials]
    if len(set(keys)) != len(keys):
        raise ConfigError("duplicate (subject, trial) pairs in the config")
    return Plan(R, tuple(s.subject_id for s in subjects), ext, tuple(trials))


def _external_trial(t: Mapping[str, Any], R: str) -> tuple[TrialRef, dict[str, Any]]:
    """One row of the config's trials table -> (TrialRef, the subject's entry). Checks the
    key combinations the schema cannot express, naming the trial."""
    sid, name = t["subject"], t["trial"]
    where = f"trials: {sid}/{name}"
    source = t.get("source", "trc")
    if source not in SOURCES[1:]:
        raise ConfigError(f"{where}: source must be one of {', '.join(SOURCES[1:])}, got '{source}'")
    file = t.get("file") or (t.get("trc", "") if source == "trc" else "")
    if source != "trc" and "trc" in t:
        raise ConfigError(f"{where}: 'trc' is for source trc; give the {source} file as 'file'")
    if t.get("file") and t.get("trc") and t["file"] != t["trc"]:
        raise ConfigError(f"{where}: give the marker file once ('file' or 'trc')")
    if not file:
        raise ConfigError(f"{where}: no motion file ('file')")
    if "frames" in t and "time_range" in t:
        raise ConfigError(f"{where}: give either 'frames' or 'time_range', not both")
    if ("grf_mot" in t) != ("external_loads_xml" in t):
        raise ConfigError(f"{where}: 'grf_mot' and 'external_loads_xml' go together")
    if "grf_mot" in t and source != "trc":
        raise ConfigError(f"{where}: 'grf_mot' is for TRC trials; a C3D's force plates are read from the file")
    if "forces" in t and source != "c3d":
        raise ConfigError(f"{where}: 'forces' applies to C3D trials only")
    if source == "smpl":
        if not t.get("body_model"):
            raise ConfigError(f"{where}: an smpl trial needs 'body_model' (the user's SMPL/SMPL-H/SMPL-X .npz)")
        if t.get("static") or t.get("static_trc"):
            raise ConfigError(f"{where}: an smpl subject's static trial comes from the body model; remove 'static'")
    elif "body_model" in t:
        raise ConfigError(f"{where}: 'body_model' applies to smpl trials only")
    static = t.get("static") or t.get("static_trc", "")
    if source in ("trc", "c3d") and not static:
        raise ConfigError(f"{where}: no static trial ('static')")
    if t.get("static") and t.get("static_trc") and t["static"] != t["static_trc"]:
        raise ConfigError(f"{where}: give the static trial once ('static' or 'static_trc')")
    marker_map = str(t.get("marker_map", ""))
    if marker_map and source != "smpl":
        from biohuman.io.c3d import resolve_marker_map

        marker_map = str(resolve_marker_map(marker_map))  # ConfigError for an unknown map
    frames = tuple(int(f) for f in t["frames"]) if "frames" in t else None
    ingest = source in ("c3d", "smpl") or bool(marker_map) or frames is not None
    ing = f"{R}/ingest/{sid}"
    forces = bool(t.get("forces", True)) and source == "c3d"
    ref = TrialRef(
        sid, name, source, f"{ing}/{name}.trc" if ingest else file, t["motion_type"],
        grf_mot=f"{ing}/{name}_grf.mot" if forces else t.get("grf_mot", ""),
        external_loads_xml=f"{ing}/{name}_external_loads.xml" if forces else t.get("external_loads_xml", ""),
        time_range=tuple(t["time_range"]) if "time_range" in t else None,
        file=file, marker_map=marker_map, frames=frames, forces=forces, body_model=t.get("body_model", ""),
        ingest_status=f"{ing}/{name}.status.json" if ingest else "",
    )
    static_ingest = source in ("c3d", "smpl") or bool(marker_map)
    subj = {
        "source": source, "static": static, "static_trc": f"{ing}/static/static.trc" if static_ingest else static,
        "mass_kg": t["mass_kg"], "height_m": t["height_m"], "marker_map": marker_map,
        "body_model": t.get("body_model", ""), "betas_from": file if source == "smpl" else "",
        "static_ingest_status": f"{ing}/static/static.status.json" if static_ingest else "",
    }
    return ref, subj


def read_upstream(paths: Mapping[str, str | Path]) -> dict[str, dict[str, Any]]:
    """Read upstream status records by name."""
    from biohuman.io.dataset import read_status

    return {name: read_status(p) for name, p in paths.items()}


def run_step(
    step: str,
    status_out: str | Path,
    log_path: str | Path,
    fn: Callable[..., dict[str, Any]],
    *,
    trial_id: str,
    upstream: Mapping[str, str | Path] | None = None,
    **kwargs: Any,
) -> dict[str, Any]:
    """Run one workflow step and always write its status record.

    `fn(upstream=<dict of upstream records>, log=<logger>, **kwargs)` returns
    `{"outputs": {...}, "status": "ok"|"flagged" (optional), "message": ..., "extra": {...}}`.
    A BiohumanError becomes status "failed" with its message; any other exception too, marked as
    an unexpected error with the traceback in the log; upstream failures give "skipped".
    """
    from biohuman.io.dataset import write_status

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    log = _file_logger(step, log_path)
    ups = read_upstream(upstream or {})
    bad = {k: v for k, v in ups.items() if v.get("status") not in GOOD}
    t0 = time.perf_counter()
    if bad:
        name, rec = next(iter(bad.items()))
        msg = f"upstream step '{name}' {rec.get('status')}: {rec.get('message', '')}"
        log.info("skipped: %s", msg)
        write_status(status_out, trial_id=trial_id, step=step, status="skipped", message=msg)
        return {"status": "skipped", "message": msg}
    try:
        result = fn(upstream=ups, log=log, **kwargs)
        status = result.get("status", "ok")
        message = result.get("message", "")
    except BiohumanError as exc:
        log.error("failed: %s", exc)
        result, status, message = {}, "failed", str(exc)
    except Exception as exc:  # noqa: BLE001 - recorded, never silently dropped
        log.error("unexpected error: %s\n%s", exc, traceback.format_exc())
        result, status, message = {}, "failed", f"unexpected {type(exc).__name__}: {exc}"
    if "\n" in message or len(message) > 400:  # keep records one line; the log has the rest
        log.info("full message: %s", message)
        message = message.strip().splitlines()[0][:400] if message.strip() else message
    extra = dict(result.get("extra", {}))
    extra["duration_s"] = round(time.perf_counter() - t0, 3)
    write_status(status_out, trial_id=trial_id, step=step, status=status, message=message,
                 outputs={k: str(v) for k, v in result.get("outputs", {}).items()}, extra=extra)
    log.info("%s in %.1f s %s", status, extra["duration_s"], message)
    return {"status": status, "message": message, **result}


def _file_logger(step: str, path: str | Path) -> logging.Logger:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    log = logging.getLogger(f"biohuman.{step}.{path}")
    log.setLevel(logging.INFO)
    log.propagate = False
    if not log.handlers:
        h = logging.FileHandler(path, mode="w")
        h.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        log.addHandler(h)
    return log


class logged:  # noqa: N801 - used as a context manager, reads like a function
    """Send Python logging and warnings to a rule's log file for the duration of a block."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def __enter__(self) -> logging.Logger:
        os.environ.setdefault("OMP_NUM_THREADS", "1")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.handler = logging.FileHandler(self.path, mode="w")
        self.handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
        root = logging.getLogger()
        root.addHandler(self.handler)
        root.setLevel(logging.INFO)
        logging.captureWarnings(True)
        return root

    def __exit__(self, *exc: object) -> None:
        if exc[0] is not None:
            logging.getLogger().error("failed: %s", exc[1], exc_info=exc)  # type: ignore[arg-type]
        logging.getLogger().removeHandler(self.handler)
        self.handler.close()
