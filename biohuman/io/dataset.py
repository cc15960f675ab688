"""Save and open trials (one NetCDF file per trial), the dataset manifest, per-step status records,
and `open_dataset` for a whole dataset.

Engine: netCDF4 for writing and reading (h5netcdf needs h5py, which this environment does not
ship). Files are NETCDF4 (HDF5), float32 + zlib, chunked along time (see spec.encoding_for).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from biohuman.errors import InputFormatError, SpecError
from biohuman.io.atomic import atomic_path, atomic_write_text
from biohuman.io import spec as _spec

ENGINE = "netcdf4"
"""The one xarray engine used to write and read trial files."""

MANIFEST_NAME = "manifest.csv"
MANIFEST_COLUMNS: tuple[str, ...] = ("trial_id", "subject_id", "motion_type", "source", "status", "path",
                                     "n_frames", "duration_s", "qc_status", "message")
"""Columns of manifest.csv, in order (extra columns are kept after these)."""

TRIAL_STATUSES: tuple[str, ...] = ("ok", "flagged", "failed")
"""Values of the manifest's status column."""

STEP_STATUSES: tuple[str, ...] = ("ok", "flagged", "failed", "skipped")
"""Values of a step status record's status (skipped: an upstream step failed)."""


# ------------------------------------------------------------------------------------------------
# One trial
# ------------------------------------------------------------------------------------------------


def save_trial(ds: xr.Dataset, path: str | Path, *, time_chunk: int = 256) -> Path:
    """Validate `ds` against the spec and write it atomically as NetCDF4 (float32, zlib, chunked
    along time). Returns the path. Raises SpecError (naming the path) before writing anything."""
    path = Path(path)
    _spec.validate(ds, path=path)
    out = ds.copy(deep=False)
    out.encoding = {}
    for var in out.variables.values():
        var.encoding = {}
    with atomic_path(path) as tmp:
        out.to_netcdf(tmp, engine=ENGINE, format="NETCDF4", encoding=_spec.encoding_for(out, time_chunk=time_chunk))
    return path


def open_trial(path: str | Path, *, validate: bool = True, lazy: bool = False) -> xr.Dataset:
    """Open one trial file.

    lazy=False (default): load everything into memory and close the file, so nothing holds it
    open (a later atomic replace of the file is safe). lazy=True: values are read on access; the
    caller closes the Dataset. validate: check the spec (SpecError naming the file).
    Raises InputFormatError naming the file when it is missing or not NetCDF.
    """
    path = Path(path)
    if not path.is_file():
        raise InputFormatError("trial file does not exist", path)
    kwargs: dict[str, Any] = {"engine": ENGINE, "decode_timedelta": False, "decode_times": False}
    try:
        ds = xr.open_dataset(path, **kwargs) if lazy else xr.load_dataset(path, **kwargs)
    except (OSError, ValueError, RuntimeError) as exc:
        raise InputFormatError(f"cannot open as a NetCDF trial file: {exc}", path) from exc
    if validate:
        try:
            _spec.validate(ds, path=path)
        except SpecError:
            ds.close()
            raise
    return ds



# ------------------------------------------------------------------------------------------------
# Manifest
# ------------------------------------------------------------------------------------------------


def manifest_record(ds: xr.Dataset, path: str | Path, *, status: str | None = None,
                    message: str = "") -> dict[str, Any]:
    """A manifest row for a saved trial: ids and counts from `ds`, status 'flagged' when its
    qc_status is flagged (else 'ok') unless given. `path` is where the trial file is."""
    t = np.asarray(ds["time"].values, dtype=np.float64)
    qc = str(ds.attrs.get("qc_status", ""))
    return {
        "trial_id": str(ds.attrs["trial_id"]),
        "subject_id": str(ds.attrs["subject_id"]),
        "motion_type": str(ds.attrs["motion_type"]),
        "source": str(ds.attrs["source"]),
        "status": status if status is not None else ("flagged" if qc == "flagged" else "ok"),
        "path": str(path),
        "n_frames": int(t.size),
        "duration_s": float(t[-1] - t[0]) if t.size else 0.0,
        "qc_status": qc,
        "message": message,
    }


def write_manifest(records: Iterable[Mapping[str, Any]], path: str | Path) -> Path:
    """Write manifest.csv atomically. Each record has the MANIFEST_COLUMNS keys (missing ones are
    left empty; trial_id and status are required). Trial paths are stored relative to the
    manifest's folder. Raises SpecError for a missing trial_id, a duplicate trial_id or an unknown
    status."""
    path = Path(path)
    root = path.parent.resolve()
    rows: list[dict[str, Any]] = []
    problems: list[str] = []
    seen: set[str] = set()
    for i, rec in enumerate(records):
        row = {k: rec.get(k, "") for k in MANIFEST_COLUMNS}
        row.update({k: v for k, v in rec.items() if k not in row})
        tid = str(row["trial_id"])
        if not tid:
            problems.append(f"record {i}: empty trial_id")
        elif tid in seen:
            problems.append(f"record {i}: duplicate trial_id {tid!r}")
        seen.add(tid)
        if row["status"] not in TRIAL_STATUSES:
            problems.append(f"record {i} ({tid}): status {row['status']!r} not in {TRIAL_STATUSES}")
        p = str(row["path"])
        if p:  # a real path (absolute or relative to the working directory) -> manifest-relative
            row["path"] = os.path.relpath(Path(p).resolve(), root)
        row["path"] = str(row["path"]).replace(os.sep, "/")
        rows.append(row)
    if problems:
        raise SpecError("invalid manifest records: " + "; ".join(problems), path)
    df = pd.DataFrame(rows, columns=list(MANIFEST_COLUMNS) + [c for c in (rows[0] if rows else {})
                                                              if c not in MANIFEST_COLUMNS])
    atomic_write_text(path, df.to_csv(index=False))
    return path


def read_manifest(path: str | Path) -> pd.DataFrame:
    """Read manifest.csv: text columns as strings ('' when empty), n_frames as nullable Int64,
    duration_s as float. Raises InputFormatError for a missing file, missing columns, or an
    unknown status."""
    path = Path(path)
    if not path.is_file():
        raise InputFormatError("manifest does not exist", path)
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise InputFormatError(f"not a readable CSV manifest: {exc}", path) from exc
    missing = [c for c in MANIFEST_COLUMNS if c not in df.columns]
    if missing:
        raise InputFormatError(f"manifest lacks columns: {', '.join(missing)}", path)
    bad = sorted(set(df["status"]) - set(TRIAL_STATUSES))
    if bad:
        raise InputFormatError(f"manifest has unknown status values {bad} (allowed: {TRIAL_STATUSES})", path)
    try:
        df["n_frames"] = pd.to_numeric(df["n_frames"].replace("", None)).astype("Int64")
        df["duration_s"] = pd.to_numeric(df["duration_s"].replace("", None)).astype("float64")
    except (ValueError, TypeError) as exc:
        raise InputFormatError(f"manifest n_frames/duration_s not numeric: {exc}", path) from exc
    return df


# ------------------------------------------------------------------------------------------------
# Status records
# ------------------------------------------------------------------------------------------------


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def write_status(
    path: str | Path,
    *,
    trial_id: str,
    step: str,
    status: str,
    message: str = "",
    outputs: Mapping[str, Any] | Sequence[Any] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write one step's status record for one trial as JSON, atomically.

    Keys: trial_id, step, status (one of STEP_STATUSES), message, outputs (name -> path, or a
    list of paths), extra (free JSON-able dict; numpy values and Paths are converted), created
    (ISO 8601 UTC). Raises SpecError for an unknown status.
    """
    if status not in STEP_STATUSES:
        raise SpecError(f"status {status!r} not in {STEP_STATUSES}", path)
    if outputs is None:
        outs: Any = {}
    elif isinstance(outputs, Mapping):
        outs = {str(k): str(v) for k, v in outputs.items()}
    else:
        outs = [str(v) for v in outputs]
    record = {
        "trial_id": str(trial_id),
        "step": str(step),
        "status": status,
        "message": str(message),
        "outputs": outs,
        "extra": dict(extra or {}),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    atomic_write_text(path, json.dumps(record, indent=1, default=_jsonable) + "\n")
    return Path(path)


def read_status(path: str | Path) -> dict[str, Any]:
    """Read a status record. Raises InputFormatError for a missing file, invalid JSON, missing
    keys (trial_id, step, status) or an unknown status."""
    path = Path(path)
    if not path.is_file():
        raise InputFormatError("status record does not exist", path)
    try:
        record = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputFormatError(f"status record is not valid JSON: {exc}", path) from exc
    if not isinstance(record, dict):
        raise InputFormatError("status record is not a JSON object", path)
    missing = [k for k in ("trial_id", "step", "status") if k not in record]
    if missing:
        raise InputFormatError(f"status record lacks keys: {', '.join(missing)}", path)
    if record["status"] not in STEP_STATUSES:
        raise InputFormatError(f"status {record['status']!r} not in {STEP_STATUSES}", path)
    record.setdefault("message", "")
    record.setdefault("outputs", {})
    record.setdefault("extra", {})
    return record


# ------------------------------------------------------------------------------------------------
# A whole dataset
# ------------------------------------------------------------------------------------------------


class Collection:
    """The trials of a dataset selected from its manifest; each trial is opened on access.

    manifest: the selected manifest rows (DataFrame, index reset). root: the manifest's folder.
    len(c), `tid in c`, c[tid] -> Dataset, iteration yields (trial_id, Dataset) one at a time
    (each loaded into memory and closed), c.path(tid), c.paths, c.trial_ids, c.to_long(var).
    """

    def __init__(self, manifest: pd.DataFrame, root: str | Path, *, validate: bool = True) -> None:
        self.manifest = manifest.reset_index(drop=True)
        self.root = Path(root)
        self.validate = validate
        self._paths = {str(r.trial_id): self.root / str(r.path) for r in self.manifest.itertuples()}

    @property
    def trial_ids(self) -> list[str]:
        """Selected trial ids, in manifest order."""
        return list(self._paths)

    @property
    def paths(self) -> list[Path]:
        """Trial file paths, in manifest order."""
        return list(self._paths.values())

    def path(self, trial_id: str) -> Path:
        """Path of one trial's file."""
        if trial_id not in self._paths:
            raise KeyError(f"trial {trial_id!r} not in the selection ({len(self)} trials)")
        return self._paths[trial_id]

    def __len__(self) -> int:
        return len(self._paths)

    def __contains__(self, trial_id: object) -> bool:
        return trial_id in self._paths

    def __getitem__(self, trial_id: str) -> xr.Dataset:
        return open_trial(self.path(trial_id), validate=self.validate)

    def __iter__(self) -> Iterator[tuple[str, xr.Dataset]]:
        for tid in self._paths:
            yield tid, self[tid]

    def __repr__(self) -> str:
        return f"Collection({len(self)} trials under {self.root})"

    def to_long(self, variable: str) -> xr.DataArray:
        """One variable of every selected trial stacked along a new `trial` dim.

        Time-varying variables are aligned by frame index: dims (trial, frame, ...), padded with
        NaN after each trial's end (so integer flags become float), with each trial's time kept
        as the coordinate time(trial, frame). Other dims are outer-joined by label.
        """
        arrays = []
        for tid, ds in self:
            if variable not in ds.data_vars:
                raise SpecError(f"trial {tid!r} has no variable {variable!r}", self.path(tid))
            da = ds[variable]
            if "time" in da.dims:
                t = da["time"].values
                da = da.drop_vars("time").rename({"time": "frame"}).assign_coords(
                    frame=np.arange(t.size), time=("frame", t))
            arrays.append(da)
        if not arrays:
            raise SpecError("no trials selected")
        if any("frame" in a.dims for a in arrays):
            arrays = [a.astype(np.float64) if a.dtype.kind != "f" else a for a in arrays]
        return xr.concat(arrays, dim=pd.Index(self.trial_ids, dtype=object, name="trial"), join="outer",
                         coords="different", compat="equals", fill_value=np.nan)


def _as_set(value: str | Sequence[str] | None) -> set[str] | None:
    if value is None:
        return None
    return {value} if isinstance(value, str) else set(value)


def open_dataset(
    root_or_manifest: str | Path,
    *,
    status: str | Sequence[str] | None = ("ok", "flagged"),
    motion_type: str | Sequence[str] | None = None,
    subject_id: str | Sequence[str] | None = None,
    validate: bool = True,
) -> Collection:
    """Select trials of a dataset by manifest columns (None = no filter on that column).

    root_or_manifest: the dataset folder (holding manifest.csv) or the manifest file itself.
    Returns a Collection; trials are opened (and validated) on access.
    """
    p = Path(root_or_manifest)
    manifest_path = p / MANIFEST_NAME if p.is_dir() else p
    df = read_manifest(manifest_path)
    keep = np.ones(len(df), dtype=bool)
    for col, want in (("status", status), ("motion_type", motion_type), ("subject_id", subject_id)):
        allowed = _as_set(want)
        if allowed is not None:
            keep &= df[col].isin(allowed).to_numpy()
    return Collection(df[keep], manifest_path.parent, validate=validate)


# ------------------------------------------------------------------------------------------------
# Video
# ------------------------------------------------------------------------------------------------


def open_video(trial_path: str | Path, camera: str | int = 0) -> tuple[np.ndarray, np.ndarray, xr.Dataset]:
    """Frames of one camera of a trial with its labels: (frames (F, H, W, 3) uint8, label time of
    each frame (F,) s, the trial Dataset). `camera` is a camera name or an index.

    The MP4 paths are stored in the trial's `video_file(camera)` variable, relative to the trial
    file. Raises InputFormatError when the trial has no video or the file is missing.
    """
    from biohuman.render.video import read_video

    trial_path = Path(trial_path)
    ds = open_trial(trial_path)
    if "video_file" not in ds:
        raise InputFormatError(f"trial has no video ({ds.attrs.get('video', 'not rendered')})", trial_path)
    cams = [str(c) for c in ds["camera"].values]
    name = cams[camera] if isinstance(camera, int) else str(camera)
    if name not in cams:
        raise InputFormatError(f"no camera {name!r}; cameras: {', '.join(cams)}", trial_path)
    video = trial_path.parent / str(ds["video_file"].sel(camera=name).item())
    if not video.is_file():
        raise InputFormatError("video file referenced by the trial is missing", video)
    frames, _ = read_video(video)
    times = ds["video_time"].to_numpy()
    if len(frames) != len(times):
        raise InputFormatError(f"video has {len(frames)} frames, the trial lists {len(times)}", video)
    return frames, times, ds
