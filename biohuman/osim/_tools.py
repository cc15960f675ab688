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
from biohuman.io.storage import read_storage as _io_read_storage
from biohuman.io.storage import write_storage as _io_write_storage
from biohuman.io.trc import MarkerData
from biohuman.io.trc import read_trc as _io_read_trc
from biohuman.io.trc import write_trc as _io_write_trc
from biohuman.osim.model import coordinate_couplers, opensim

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


MarkerTrial = MarkerData
"""Marker trajectories (time (T,) s, names, xyz (T, M, 3) m, rate Hz): biohuman.io's MarkerData."""


def read_trc(path: str | Path) -> MarkerData:
    """Read a TRC file with biohuman.io (positions in metres); gaps are left as NaN for the
    OpenSim tools, which skip missing markers frame by frame."""
    return _io_read_trc(path, max_gap_s=None)


def write_trc(path: str | Path, names: Sequence[str], time: np.ndarray, xyz: np.ndarray,
              units: str = "m") -> Path:
    """Write marker trajectories (T, M, 3) given in `units` as an OpenSim TRC file (atomic)."""
    time = np.asarray(time, dtype=float)
    rate = 1.0 / float(np.median(np.diff(time))) if len(time) > 1 else 100.0
    metres = np.asarray(xyz, dtype=float) * {"m": 1.0, "cm": 1e-2, "mm": 1e-3}[units]
    _io_write_trc(path, MarkerData(time=time, names=list(names), xyz=metres, rate=rate), units=units)
    return Path(path)


# ---------------------------------------------------------------------------------------------
# MOT / STO


def read_storage(path: str | Path) -> tuple[pd.DataFrame, dict[str, str]]:
    """Read an OpenSim .mot/.sto with biohuman.io: (table indexed by time, header key=values).
    Values are returned as stored (no unit conversion)."""
    st = _io_read_storage(path)
    return st.table, st.header


def write_storage(path: str | Path, df: pd.DataFrame, *, name: str | None = None,
                  in_degrees: bool = False) -> Path:
    """Write a time-indexed DataFrame as an OpenSim storage file with biohuman.io (atomic)."""
    _io_write_storage(path, df, in_degrees=in_degrees, name=name or Path(path).stem)
    return Path(path)


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
    for cc in coordinate_couplers(model):
        if not cc.constraint.isEnforced(state):
            continue
        x = osim.Vector(len(cc.independent), 0.0)
        for k, name in enumerate(cc.independent):
            x.set(k, cs.get(name).getValue(state))
        cs.get(cc.dependent).setValue(state, cc.function.calcValue(x), False)
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
