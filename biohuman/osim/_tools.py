"""Private helpers shared by the OpenSim tool wrappers (scale, ik, id, so).

Kept free of the rest of the package's I/O modules on purpose: tiny TRC/MOT/STO readers and
writers in OpenSim's own formats, setup-XML writing, log capture, and forward kinematics.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import tempfile
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from biohuman.errors import InputFormatError, SolverError
from biohuman.io.atomic import atomic_path, atomic_write_text
from biohuman.osim.model import opensim

# ---------------------------------------------------------------------------------------------
# OpenSim log capture


@dataclass
class CapturedLog:
    """Text OpenSim logged while a `capture_log` block ran (filled when the block exits)."""

    text: str = ""
    lines: list[str] = field(default_factory=list)

    def tail(self, n: int = 15) -> str:
        """Last `n` non-empty lines, for error messages."""
        rows = [r for r in self.text.splitlines() if r.strip()]
        return "\n".join(rows[-n:])


@contextlib.contextmanager
def capture_log(level: str = "info", silence_console: bool = True) -> Iterator[CapturedLog]:
    """Collect OpenSim's log at `level` into a `CapturedLog`; restore the previous level after.

    With `silence_console`, the process's stdout/stderr file descriptors are pointed at a
    temporary file while the block runs so OpenSim's console sink does not flood the terminal;
    that text is appended to the captured log too (it includes messages OpenSim prints with
    plain `std::cout`).
    """
    osim = opensim()
    out = CapturedLog()
    # OpenSim's default file sink writes ./opensim.log (the current directory) as soon as the
    # level lets messages through; drop it so that tools never litter the working directory.
    osim.Logger.removeFileSink()
    previous = osim.Logger.getLevelString()
    saved: list[tuple[int, int]] = []
    tmp = None
    if silence_console:
        _flush_std()
        tmp = tempfile.TemporaryFile(mode="w+b")
        for fd in (1, 2):
            try:
                saved.append((fd, os.dup(fd)))
                os.dup2(tmp.fileno(), fd)
            except OSError:  # no such descriptor (embedded interpreters)
                pass
    sink = osim.StringLogSink()
    osim.Logger.addSink(sink)
    osim.Logger.setLevelString(level)
    try:
        yield out
    finally:
        osim.Logger.removeSink(sink)
        osim.Logger.setLevelString(previous)
        if saved:
            _flush_std()
        for fd, dup in saved:
            with contextlib.suppress(OSError):
                os.dup2(dup, fd)
                os.close(dup)
        text = str(sink.getString())
        if tmp is not None:
            tmp.seek(0)
            console = tmp.read().decode("utf-8", errors="replace")
            tmp.close()
            # the console repeats the sink's messages with a "[level] " prefix; keep only
            # lines the sink did not see (plain std::cout output)
            seen = set(text.splitlines())
            extra = [ln for ln in console.splitlines() if re.sub(r"^\[\w+\] ", "", ln) not in seen]
            if extra:
                text = text + "\n" + "\n".join(extra)
        out.text = text
        out.lines = text.splitlines()


def _flush_std() -> None:
    """Flush Python's and the C library's stdout/stderr buffers (before swapping descriptors)."""
    import ctypes
    import sys

    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    with contextlib.suppress(Exception):
        ctypes.CDLL(None).fflush(None)


# ---------------------------------------------------------------------------------------------
# Setup XML


def xml_element(tag: str, value: object = None, **attrib: str) -> ET.Element:
    """Make an element whose text is `value` formatted the OpenSim way (bools lower-case)."""
    el = ET.Element(tag, attrib)
    if value is not None:
        el.text = format_xml_value(value)
    return el


def format_xml_value(value: object) -> str:
    """Format a Python value as OpenSim XML text (bool -> true/false, sequences space-joined)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if math.isinf(value):
            return "Inf" if value > 0 else "-Inf"
        return repr(value)
    if isinstance(value, (list, tuple, np.ndarray)):
        return " " + " ".join(format_xml_value(float(v) if isinstance(v, (np.floating,)) else v) for v in value)
    if isinstance(value, Path):
        return str(value)
    return str(value)


def sub(parent: ET.Element, tag: str, value: object = None, **attrib: str) -> ET.Element:
    """Append a child element (see `xml_element`) and return it."""
    el = xml_element(tag, value, **attrib)
    parent.append(el)
    return el


def write_setup_xml(path: Path, root: ET.Element) -> Path:
    """Write `<OpenSimDocument Version="40600">root</OpenSimDocument>` atomically to `path`."""
    doc = ET.Element("OpenSimDocument", {"Version": "40600"})
    doc.append(root)
    ET.indent(doc, space="\t")
    text = '<?xml version="1.0" encoding="UTF-8" ?>\n' + ET.tostring(doc, encoding="unicode") + "\n"
    atomic_write_text(path, text)
    return Path(path)


# ---------------------------------------------------------------------------------------------
# TRC


@dataclass(frozen=True)
class MarkerTrial:
    """Marker trajectories from a TRC file, in metres."""

    time: np.ndarray  # (T,) s
    names: tuple[str, ...]  # (M,)
    xyz: np.ndarray  # (T, M, 3) m, NaN where missing
    rate: float  # Hz


_UNIT_TO_M = {"m": 1.0, "mm": 1e-3, "cm": 1e-2, "dm": 1e-1}


def read_trc(path: str | Path) -> MarkerTrial:
    """Read a TRC file with OpenSim's TRCFileAdapter; positions converted to metres."""
    osim = opensim()
    path = Path(path)
    if not path.is_file():
        raise InputFormatError("TRC file does not exist", path)
    try:
        table = osim.TimeSeriesTableVec3(str(path))
    except Exception as exc:  # noqa: BLE001 - OpenSim raises RuntimeError subclasses
        raise InputFormatError(f"OpenSim could not read the TRC file: {exc}", path) from exc
    units = table.getTableMetaDataAsString("Units").strip() if table.hasTableMetaDataKey("Units") else "m"
    if units not in _UNIT_TO_M:
        raise InputFormatError(f"unknown TRC Units {units!r} (expected one of {sorted(_UNIT_TO_M)})", path)
    flat = table.flatten()
    data = flat.getMatrix().to_numpy().reshape(flat.getNumRows(), -1, 3) * _UNIT_TO_M[units]
    time = np.asarray(table.getIndependentColumn(), dtype=float)
    names = tuple(str(n) for n in table.getColumnLabels())
    rate = float(table.getTableMetaDataAsString("DataRate")) if table.hasTableMetaDataKey("DataRate") else (
        1.0 / float(np.median(np.diff(time))) if len(time) > 1 else 0.0)
    return MarkerTrial(time=time, names=names, xyz=data, rate=rate)


def write_trc(path: str | Path, names: Sequence[str], time: np.ndarray, xyz: np.ndarray,
              units: str = "m") -> Path:
    """Write marker trajectories (T, M, 3) in `units` as an OpenSim TRC file (atomic).

    NaN coordinates are written as empty fields (OpenSim reads them as missing markers).
    """
    path = Path(path)
    time = np.asarray(time, dtype=float)
    xyz = np.asarray(xyz, dtype=float)
    if xyz.shape != (len(time), len(names), 3):
        raise ValueError(f"xyz must have shape (T, M, 3) = {(len(time), len(names), 3)}, got {xyz.shape}")
    rate = 1.0 / float(np.median(np.diff(time))) if len(time) > 1 else 100.0
    n, m = len(time), len(names)
    lines = [
        f"PathFileType\t4\t(X/Y/Z)\t{path.name}",
        "DataRate\tCameraRate\tNumFrames\tNumMarkers\tUnits\tOrigDataRate\tOrigDataStartFrame\tOrigNumFrames",
        f"{rate:.6g}\t{rate:.6g}\t{n}\t{m}\t{units}\t{rate:.6g}\t1\t{n}",
        "Frame#\tTime\t" + "\t".join(f"{name}\t\t" for name in names),
        "\t\t" + "\t".join(f"X{i + 1}\tY{i + 1}\tZ{i + 1}" for i in range(m)),
        "",
    ]
    for i in range(n):
        vals = ["" if not np.isfinite(v) else f"{v:.8f}" for v in xyz[i].ravel()]
        lines.append(f"{i + 1}\t{time[i]:.8f}\t" + "\t".join(vals))
    atomic_write_text(path, "\n".join(lines) + "\n")
    return path


# ---------------------------------------------------------------------------------------------
# MOT / STO


def read_storage(path: str | Path) -> tuple[pd.DataFrame, dict[str, str]]:
    """Read an OpenSim .mot/.sto (version 1 or 2 header) into a DataFrame indexed by time.

    Returns (table, header) where header holds the `key=value` lines (e.g. inDegrees). Values
    are returned exactly as stored (no unit conversion).
    """
    path = Path(path)
    if not path.is_file():
        raise InputFormatError("storage file does not exist", path)
    header: dict[str, str] = {}
    with path.open() as fh:
        n_header = 0
        for line in fh:
            n_header += 1
            s = line.strip()
            if s.lower() == "endheader":
                break
            if "=" in s:
                k, v = s.split("=", 1)
                header[k.strip()] = v.strip()
        else:
            raise InputFormatError("no 'endheader' line: not an OpenSim storage file", path)
    try:
        df = pd.read_csv(path, sep=r"\s+", skiprows=n_header, engine="c")
    except Exception as exc:  # noqa: BLE001
        raise InputFormatError(f"could not parse the data block: {exc}", path) from exc
    if df.empty or df.columns[0] != "time":
        raise InputFormatError("the data block must start with a 'time' column and hold rows", path)
    df = df.set_index("time")
    df.index = df.index.astype(float)
    df = df.astype(float)
    return df, header


def write_storage(path: str | Path, df: pd.DataFrame, *, name: str | None = None,
                  in_degrees: bool = False) -> Path:
    """Write a time-indexed DataFrame as an OpenSim version-1 storage file (atomic)."""
    path = Path(path)
    header = [
        name or path.stem,
        "version=1",
        f"nRows={len(df)}",
        f"nColumns={df.shape[1] + 1}",
        f"inDegrees={'yes' if in_degrees else 'no'}",
        "endheader",
        "time\t" + "\t".join(str(c) for c in df.columns),
    ]
    body = [
        f"{t:.8f}\t" + "\t".join(f"{v:.10g}" for v in row)
        for t, row in zip(df.index.to_numpy(dtype=float), df.to_numpy(dtype=float))
    ]
    atomic_write_text(path, "\n".join(header + body) + "\n")
    return path


def coordinate_kinds(model) -> dict[str, str]:  # noqa: ANN001
    """Map coordinate name -> 'rotational' | 'translational' | 'coupled' (OpenSim motion type)."""
    kinds = {1: "rotational", 2: "translational", 3: "coupled"}
    cs = model.getCoordinateSet()
    return {cs.get(i).getName(): kinds.get(cs.get(i).getMotionType(), "rotational") for i in range(cs.getSize())}


def read_coordinates(path: str | Path, model) -> pd.DataFrame:  # noqa: ANN001
    """Read an OpenSim coordinates file into radians/metres, handling `inDegrees=yes`.

    OpenSim writes and reads only *Rotational* coordinates in degrees; coupled coordinates
    (Rajagopal's `knee_angle_*_beta`) stay in radians under an `inDegrees=yes` header. This
    reader applies that same rule, so values come back exactly as OpenSim would use them.
    Column names may be coordinate names or state paths (`/jointset/hip_r/hip_flexion_r/value`).
    """
    df, header = read_storage(path)
    df = df.rename(columns=_coordinate_column_name)
    kinds = coordinate_kinds(model)
    if header.get("inDegrees", "no").lower() == "yes":
        for col in df.columns:
            if kinds.get(col) == "rotational":
                df[col] = np.deg2rad(df[col])
    return df


def _coordinate_column_name(col: str) -> str:
    m = re.match(r"^/jointset/[^/]+/([^/]+)/value$", col)
    return m.group(1) if m else col


# ---------------------------------------------------------------------------------------------
# Models and forward kinematics


def load_osim(path: str | Path):  # noqa: ANN201 - opensim.Model
    """Load an .osim file quietly; InputFormatError naming the file if OpenSim cannot."""
    osim = opensim()
    path = Path(path)
    if not path.is_file():
        raise InputFormatError("model file does not exist", path)
    try:
        model = osim.Model(str(path))
        model.initSystem()
    except Exception as exc:  # noqa: BLE001
        raise InputFormatError(f"OpenSim could not load the model: {exc}", path) from exc
    return model


def set_pose(model, state, values: Mapping[str, float]) -> None:  # noqa: ANN001
    """Set coordinate values (rad/m) in `state`; coupled coordinates follow their coupler function."""
    osim = opensim()
    cs = model.getCoordinateSet()
    for name, v in values.items():
        if cs.contains(name):
            cs.get(name).setValue(state, float(v), False)
    cons = model.getConstraintSet()
    for i in range(cons.getSize()):
        cc = osim.CoordinateCouplerConstraint.safeDownCast(cons.get(i))
        if cc is None or not cc.isEnforced(state):
            continue
        indep = cc.getIndependentCoordinateNames()
        x = osim.Vector(indep.getSize(), 0.0)
        for k in range(indep.getSize()):
            x.set(k, cs.get(indep.get(k)).getValue(state))
        cs.get(cc.getDependentCoordinateName()).setValue(state, cc.getFunction().calcValue(x), False)
    model.realizePosition(state)


def model_marker_positions(model, coordinates: pd.DataFrame | Mapping[str, float],  # noqa: ANN001
                           markers: Sequence[str] | None = None,
                           offsets: Mapping[str, Sequence[float]] | None = None) -> np.ndarray:
    """Positions of model markers in ground (m) for each row of `coordinates`.

    model: an opensim.Model or an .osim path. coordinates: DataFrame (T x coordinates, rad/m) or
    one pose as a mapping; coordinates not given keep their default values. offsets: marker ->
    displacement (m) added to the marker's location in its body frame before evaluating.
    Returns (T, M, 3), or (M, 3) for a single mapping pose.
    """
    osim = opensim()
    model = load_osim(model) if isinstance(model, (str, Path)) else osim.Model(model)
    ms = model.getMarkerSet()
    for name, d in (offsets or {}).items():
        mk = ms.get(name)
        loc = mk.get_location()
        mk.set_location(osim.Vec3(loc.get(0) + d[0], loc.get(1) + d[1], loc.get(2) + d[2]))
    state = model.initSystem()
    names = list(markers) if markers is not None else [ms.get(i).getName() for i in range(ms.getSize())]
    single = not isinstance(coordinates, pd.DataFrame)
    rows = [dict(coordinates)] if single else [r.to_dict() for _, r in coordinates.iterrows()]
    out = np.empty((len(rows), len(names), 3))
    mk_objs = [ms.get(n) for n in names]
    for i, pose in enumerate(rows):
        set_pose(model, state, pose)
        for j, mk in enumerate(mk_objs):
            p = mk.getLocationInGround(state)
            out[i, j] = (p.get(0), p.get(1), p.get(2))
    return out[0] if single else out


def check_output(path: Path, tool: str, log: CapturedLog, inputs: Sequence[Path | None] = ()) -> None:
    """Raise SolverError naming the tool, its inputs and OpenSim's last log lines if `path` is missing."""
    if not Path(path).is_file():
        named = ", ".join(str(p) for p in inputs if p is not None)
        raise SolverError(f"{tool} produced no output (inputs: {named}). OpenSim log tail:\n{log.tail()}", path)


def time_range_of(times: np.ndarray, time_range: Sequence[float] | None) -> tuple[float, float]:
    """Clip a requested (start, end) in seconds to the data's time span."""
    t0, t1 = float(times[0]), float(times[-1])
    if time_range is None:
        return t0, t1
    a, b = float(time_range[0]), float(time_range[1])
    if b < a:
        raise ValueError(f"time_range end {b} is before its start {a}")
    return max(a, t0), min(b, t1)


__all__ = [
    "CapturedLog", "MarkerTrial", "atomic_path", "capture_log", "check_output", "coordinate_kinds",
    "load_osim", "model_marker_positions", "read_coordinates", "read_storage", "read_trc",
    "set_pose", "sub", "time_range_of", "write_setup_xml", "write_storage", "write_trc", "xml_element",
]
