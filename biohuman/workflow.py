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


@dataclass(frozen=True)
class TrialRef:
    """One trial of the plan: subject, trial id, where its markers come from and what it is."""

    subject: str
    trial: str
    source: str  # "synthetic" | "trc"
    trc: str
    motion_type: str
    motion: str = ""
    grf_mot: str = ""
    external_loads_xml: str = ""
    time_range: tuple[float, float] | None = None

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
        prev = ext.setdefault(t["subject"], {"static_trc": t["static_trc"], "mass_kg": t["mass_kg"], "height_m": t["height_m"]})
        if prev["static_trc"] != t["static_trc"] or prev["mass_kg"] != t["mass_kg"]:
            raise ConfigError(f"subject '{t['subject']}' has trials with different static trials or masses")
        trials.append(TrialRef(t["subject"], t["trial"], "trc", t["trc"], t["motion_type"],
                               grf_mot=t.get("grf_mot", ""), external_loads_xml=t.get("external_loads_xml", ""),
                               time_range=tuple(t["time_range"]) if "time_range" in t else None))
    keys = [(t.subject, t.trial) for t in trials]
    if len(set(keys)) != len(keys):
        raise ConfigError("duplicate (subject, trial) pairs in the config")
    return Plan(R, tuple(s.subject_id for s in subjects), ext, tuple(trials))


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
