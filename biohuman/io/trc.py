"""Read and write marker trajectories in the OpenSim / Vicon TRC format.

Layout read (tab separated; extra empty cells are tolerated)::

    PathFileType  4  (X/Y/Z)  name.trc
    DataRate  CameraRate  NumFrames  NumMarkers  Units  OrigDataRate  OrigDataStartFrame  OrigNumFrames
    100       100         238        41          mm     100           1                   238
    Frame#  Time  RASI      LASI ...                 (one name per marker, spaced by empty cells)
                  X1 Y1 Z1  X2 Y2 Z2 ...
    <optional blank line>
    1  0.00  x y z  x y z ...                        (blank cell or NaN = missing)

Data columns are positional: Frame#, Time, then X Y Z per marker in the order of the name line
(some converters shift the name and axis lines by one cell; the data rows are what count).
In memory positions are always metres (float64), NaN where a marker is missing.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from biohuman.errors import BiohumanError, InputFormatError, MarkerError, UnitsError
from biohuman.io.atomic import atomic_write_text

UNIT_SCALE: dict[str, float] = {"m": 1.0, "cm": 0.01, "mm": 0.001}
"""Metres per unit for the length units a TRC file may declare."""

_UNIT_ALIASES: dict[str, str] = {
    "m": "m", "meter": "m", "meters": "m", "metre": "m", "metres": "m",
    "cm": "cm", "centimeter": "cm", "centimeters": "cm", "centimetre": "cm", "centimetres": "cm",
    "mm": "mm", "millimeter": "mm", "millimeters": "mm", "millimetre": "mm", "millimetres": "mm",
}

# Plausibility of marker positions once converted to metres: the median distance of markers from
# the lab origin must be below this (a body in a lab), and the largest |coordinate| above that
# (a body is at least ~1 m tall, so something is far from the origin).
_MAX_TYPICAL_DISTANCE_M = 25.0
_MIN_MAX_ABS_M = 0.05


def normalize_unit(unit: str | None) -> str | None:
    """'millimeters' / 'MM' / ' mm ' -> 'mm'; None when missing or not a known length unit."""
    if unit is None:
        return None
    return _UNIT_ALIASES.get(str(unit).strip().lower())


@dataclass
class MarkerData:
    """Marker trajectories of one trial.

    time: (T,) seconds, strictly increasing. names: M marker names. xyz: (T, M, 3) metres,
    float64, NaN where a marker is missing. rate: sampling rate in Hz. source: the file read (or
    a description). repairs: human-readable notes of what reading repaired (gap filling etc.).
    """

    time: np.ndarray
    names: list[str]
    xyz: np.ndarray
    rate: float
    source: str = ""
    repairs: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.time = np.asarray(self.time, dtype=np.float64)
        self.xyz = np.asarray(self.xyz, dtype=np.float64)
        self.names = [str(n) for n in self.names]
        t, m = self.time.shape[0], len(self.names)
        if self.time.ndim != 1 or self.xyz.shape != (t, m, 3):
            raise ValueError(f"MarkerData shapes disagree: time {self.time.shape}, {m} names, "
                             f"xyz {self.xyz.shape} (expected {(t, m, 3)})")
        if len(set(self.names)) != m:
            raise ValueError("MarkerData marker names are not unique")

    @property
    def n_frames(self) -> int:
        """Number of frames T."""
        return int(self.time.shape[0])

    def _index(self, name: str) -> int:
        try:
            return self.names.index(name)
        except ValueError:
            raise MarkerError(f"marker {name!r} not in the data ({len(self.names)} markers)",
                              self.source or None) from None

    def marker(self, name: str) -> np.ndarray:
        """Trajectory of one marker, (T, 3) metres (a view)."""
        return self.xyz[:, self._index(name), :]

    def subset(self, names: Sequence[str]) -> MarkerData:
        """A copy holding only `names`, in that order. Raises MarkerError listing unknown names."""
        unknown = [n for n in names if n not in self.names]
        if unknown:
            raise MarkerError(f"markers not in the data: {', '.join(unknown)}", self.source or None)
        idx = [self.names.index(n) for n in names]
        return MarkerData(self.time.copy(), list(names), self.xyz[:, idx, :].copy(), self.rate,
                          self.source, list(self.repairs))

    def window(self, t0: float, t1: float) -> MarkerData:
        """A copy holding the frames with t0 <= time <= t1 (seconds, 1e-9 s tolerance)."""
        keep = (self.time >= t0 - 1e-9) & (self.time <= t1 + 1e-9)
        if not keep.any():
            raise BiohumanError(f"no frames between {t0} s and {t1} s (data spans "
                                f"{self.time[0]:.4f}-{self.time[-1]:.4f} s)", self.source or None)
        return MarkerData(self.time[keep].copy(), list(self.names), self.xyz[keep].copy(), self.rate,
                          self.source, list(self.repairs))


# ------------------------------------------------------------------------------------------------
# Reading
# ------------------------------------------------------------------------------------------------


def _cells(line: str) -> list[str]:
    """Tab-separated cells, stripped (whitespace-separated when the line has no tab)."""
    line = line.rstrip("\r\n")
    if "\t" in line:
        return [c.strip() for c in line.split("\t")]
    return line.split()


def _header_map(keys_line: str, values_line: str, path: Path) -> dict[str, str]:
    keys_raw, vals_raw = _cells(keys_line), _cells(values_line)
    keys = [k for k in keys_raw if k]
    vals = [v for v in vals_raw if v]
    if len(keys) == len(vals):
        return dict(zip(keys, vals))
    # some writers leave a value empty: fall back to positional cells
    if len(keys_raw) <= len(vals_raw):
        return {k: v for k, v in zip(keys_raw, vals_raw) if k}
    raise InputFormatError(f"line 3: {len(vals)} header values for {len(keys)} keys on line 2", path)


def _header_number(header: dict[str, str], key: str, kind: type, path: Path) -> float | int:
    if key not in header:
        raise InputFormatError(f"header (line 2) has no {key} key", path)
    try:
        value = float(header[key])
    except ValueError:
        raise InputFormatError(f"header {key}={header[key]!r} is not a number", path) from None
    return int(round(value)) if kind is int else value


def _column_label(col: int, names: list[str]) -> str:
    if col == 0:
        return "Frame#"
    if col == 1:
        return "Time"
    m, a = divmod(col - 2, 3)
    return f"{names[m]}.{'XYZ'[a]}" if m < len(names) else f"column {col + 1}"


def _parse_rows(lines: list[str], first: int, n_cols: int, names: list[str],
                path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Numbers of the data rows from line index `first` -> ((rows, n_cols) float64, 1-based line numbers)."""
    rows: list[list[str]] = []
    linenos: list[int] = []
    body = [(i, ln) for i, ln in enumerate(lines[first:], start=first) if ln.strip()]
    for k, (i, ln) in enumerate(body):
        cells = _cells(ln)
        if len(cells) > n_cols:
            if any(cells[n_cols:]):
                raise InputFormatError(f"line {i + 1}: {len(cells)} columns, expected {n_cols} "
                                       f"(Frame#, Time and 3 per marker for {len(names)} markers)", path)
            cells = cells[:n_cols]
        elif len(cells) < n_cols:
            if k == len(body) - 1:
                raise InputFormatError(f"truncated: last data row (line {i + 1}) has {len(cells)} of "
                                       f"{n_cols} columns (row cut mid-way)", path)
            raise InputFormatError(f"line {i + 1}: {len(cells)} columns, expected {n_cols} "
                                   f"(Frame#, Time and 3 per marker for {len(names)} markers)", path)
        rows.append([c if c else "nan" for c in cells])
        linenos.append(i + 1)
    if not rows:
        raise InputFormatError("no data rows after the header", path)
    try:
        arr = np.array(rows, dtype=np.float64)
    except ValueError:
        arr = None
    if arr is None or np.isinf(arr).any():
        for r, cells in enumerate(rows):
            for c, cell in enumerate(cells):
                try:
                    ok = np.isfinite(float(cell)) or cell.lower() == "nan"
                except ValueError:
                    ok = False
                if not ok:
                    raise InputFormatError(f"line {linenos[r]}, column {c + 1} ({_column_label(c, names)}): "
                                           f"non-numeric value {cell!r}", path)
    return arr, np.asarray(linenos)


def _check_magnitude(xyz_m: np.ndarray, unit: str, declared_by: str, path: Path) -> None:
    """Raise UnitsError when positions (already in metres) are implausible for a body in a lab."""
    pts = xyz_m[np.isfinite(xyz_m).all(axis=-1)]
    if pts.size == 0:
        return
    typical = float(np.median(np.linalg.norm(pts, axis=-1)))
    max_abs = float(np.max(np.abs(pts)))
    if typical <= _MAX_TYPICAL_DISTANCE_M and max_abs >= _MIN_MAX_ABS_M:
        return
    raw_typical = typical / UNIT_SCALE[unit]
    # the unit that puts the typical distance closest to 1 m (log scale)
    guess = min(UNIT_SCALE, key=lambda u: abs(np.log10(max(raw_typical * UNIT_SCALE[u], 1e-12))))
    why = (f"typical marker distance from the origin is {raw_typical:.4g} {unit} = {typical:.4g} m"
           if typical > _MAX_TYPICAL_DISTANCE_M else
           f"all |values| are below {max_abs / UNIT_SCALE[unit]:.4g} {unit} = {max_abs:.4g} m")
    raise UnitsError(f"data magnitude contradicts units '{unit}' ({declared_by}): {why}; "
                     f"the values look like '{guess}'", path)


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """Inclusive (start, stop) index pairs of the True runs of a 1-D bool array."""
    d = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    starts = np.flatnonzero(d == 1)
    stops = np.flatnonzero(d == -1) - 1
    return list(zip(starts.tolist(), stops.tolist()))


def _fill_gaps(data: MarkerData, max_gap_s: float, path: Path) -> None:
    """Fill NaN gaps up to `max_gap_s` in place (cubic inside, linear at the edges); record each
    repair in data.repairs; raise MarkerError listing every longer gap."""
    from scipy.interpolate import CubicSpline

    t = data.time
    dt = 1.0 / data.rate
    too_long: list[str] = []
    for m, name in enumerate(data.names):
        traj = data.xyz[:, m, :]
        missing = ~np.isfinite(traj).all(axis=-1)
        if not missing.any():
            continue
        if missing.all():
            data.repairs.append(f"{name}: missing in all frames (left as NaN)")
            continue
        traj[missing] = np.nan  # a frame with any NaN coordinate is missing as a whole
        runs = _runs(missing)
        long_runs = [(a, b) for a, b in runs if (b - a + 1) * dt > max_gap_s + 1e-9]
        for a, b in long_runs:
            too_long.append(f"{name}: gap of {b - a + 1} frames ({(b - a + 1) * dt:.3f} s) at {t[a]:.3f} s")
        if long_runs:
            continue
        valid = np.flatnonzero(~missing)
        spline = CubicSpline(t[valid], traj[valid], axis=0) if valid.size >= 4 else None
        for a, b in runs:
            n = b - a + 1
            idx = np.arange(a, b + 1)
            if a > 0 and b < len(t) - 1:
                if spline is not None:
                    traj[idx] = spline(t[idx])
                    how = "interpolated (cubic)"
                else:
                    traj[idx] = np.stack([np.interp(t[idx], t[valid], traj[valid, k]) for k in range(3)], -1)
                    how = "interpolated (linear)"
            else:
                near = valid[:5] if a == 0 else valid[-5:]
                if near.size >= 2:
                    coef = np.polyfit(t[near], traj[near], 1)  # (2, 3)
                    traj[idx] = t[idx, None] * coef[0] + coef[1]
                    how = "extrapolated (linear)"
                else:
                    traj[idx] = traj[near[0]]
                    how = "held"
            where = "start" if a == 0 else ("end" if b == len(t) - 1 else "")
            data.repairs.append(f"{name}: {how} {n} frames ({n * dt:.3g} s) at {t[a]:.2f} s"
                                + (f" ({where} of trial)" if where else ""))
    if too_long:
        more = f" (+{len(too_long) - 10} more)" if len(too_long) > 10 else ""
        raise MarkerError(f"marker gaps longer than max_gap_s={max_gap_s} s: " + "; ".join(too_long[:10]) + more,
                          path)


def read_trc(
    path: str | Path,
    *,
    required: Sequence[str] | None = None,
    known: Sequence[str] | None = None,
    max_gap_s: float | None = 0.10,
    units: str | None = None,
) -> MarkerData:
    """Read a TRC file into MarkerData (metres, NaN = missing, short gaps repaired).

    required: markers that must be present with data (else MarkerError listing them).
    known: the marker names the model knows; fewer than half of the file's markers in it ->
        MarkerError "unknown marker set".
    max_gap_s: gaps up to this length (s) are filled (cubic inside the trial, linear
        extrapolation at its edges) and recorded in `repairs`; a longer gap -> MarkerError naming
        the marker, gap length and time. None: no filling and no gap check (NaNs kept), e.g. for
        raw C3D conversions whose markers enter and leave the capture volume.
    units: length unit of the values ('mm', 'cm', 'm'); overrides the header's Units key, and is
        required when that key is missing or unknown (else UnitsError).

    Raises InputFormatError (missing header lines, truncated file, non-numeric cells,
    non-increasing time), UnitsError (unknown units, or values whose magnitude contradicts them)
    and MarkerError, each naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise InputFormatError("TRC file does not exist", path)
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    if not lines or not lines[0].strip().startswith("PathFileType"):
        raise InputFormatError("line 1: expected the 'PathFileType' header line (not a TRC file?)", path)
    if len(lines) < 5:
        raise InputFormatError(f"only {len(lines)} lines: a TRC file needs 5 header lines", path)
    if "DataRate" not in _cells(lines[1]) or "NumFrames" not in _cells(lines[1]):
        raise InputFormatError("line 2: expected the header keys line (DataRate CameraRate NumFrames ...)", path)
    header = _header_map(lines[1], lines[2], path)
    rate = float(_header_number(header, "DataRate", float, path))
    n_frames = int(_header_number(header, "NumFrames", int, path))
    n_markers = int(_header_number(header, "NumMarkers", int, path))
    name_cells = [c for c in _cells(lines[3]) if c]
    if len(name_cells) < 2 or name_cells[0] != "Frame#" or name_cells[1].lower() != "time":
        raise InputFormatError("line 4: expected the marker-name line starting 'Frame#  Time'", path)
    names = name_cells[2:]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise InputFormatError(f"line 4: duplicate marker names: {', '.join(dup)}", path)
    axis_cells = [c for c in _cells(lines[4]) if c]
    if not axis_cells or not all(re.fullmatch(r"[XYZxyz]\d+", c) for c in axis_cells):
        raise InputFormatError("line 5: expected the axis-label line 'X1 Y1 Z1 X2 ...'", path)

    repairs: list[str] = []
    if n_markers != len(names):
        repairs.append(f"header NumMarkers={n_markers} but the name line lists {len(names)} markers; "
                       f"using the names")
    n_cols = 2 + 3 * len(names)
    arr, linenos = _parse_rows(lines, 5, n_cols, names, path)
    if arr.shape[0] < n_frames:
        raise InputFormatError(f"truncated: header NumFrames={n_frames} but only {arr.shape[0]} data rows", path)
    if arr.shape[0] > n_frames:
        repairs.append(f"header NumFrames={n_frames} but the file has {arr.shape[0]} data rows; using all rows")
    time = arr[:, 1]
    if not np.isfinite(time).all():
        bad = int(np.flatnonzero(~np.isfinite(time))[0])
        raise InputFormatError(f"line {linenos[bad]}: missing time value", path)
    dt = np.diff(time)
    if (dt <= 0).any():
        bad = int(np.flatnonzero(dt <= 0)[0]) + 1
        raise InputFormatError(f"time is not strictly increasing at line {linenos[bad]} "
                               f"({time[bad - 1]:.6g} s then {time[bad]:.6g} s)", path)
    if dt.size and rate > 0:
        measured = dt.size / float(time[-1] - time[0])  # mean rate: robust to rounded time columns
        if abs(measured - rate) > 0.01 * rate:
            repairs.append(f"header DataRate={rate:g} Hz contradicts the time column ({measured:.6g} Hz); "
                           f"using {measured:.6g} Hz")
            rate = measured
    elif dt.size:
        rate = dt.size / float(time[-1] - time[0])

    declared = header.get("Units")
    if units is not None:
        unit = normalize_unit(units)
        if unit is None:
            raise UnitsError(f"unknown units argument {units!r} (use one of {', '.join(UNIT_SCALE)})", path)
        if normalize_unit(declared) not in (None, unit):
            repairs.append(f"header Units={declared} overridden by units='{unit}'")
        declared_by = "given by the caller"
    else:
        unit = normalize_unit(declared)
        if unit is None:
            what = "missing" if declared is None else f"unknown ({declared!r})"
            raise UnitsError(f"header Units key is {what}; pass units='mm'|'cm'|'m'", path)
        declared_by = "declared in the header"
    xyz = arr[:, 2:].reshape(arr.shape[0], len(names), 3) * UNIT_SCALE[unit]
    _check_magnitude(xyz, unit, declared_by, path)

    data = MarkerData(time=time.copy(), names=list(names), xyz=xyz, rate=rate, source=str(path), repairs=repairs)
    present = np.isfinite(xyz).all(axis=-1).any(axis=0)  # (M,) has at least one full frame
    if required:
        absent = [n for n in required if n not in names]
        empty = [n for n in required if n in names and not present[names.index(n)]]
        if absent or empty:
            parts = ([f"absent: {', '.join(absent)}"] if absent else []) + \
                    ([f"no data: {', '.join(empty)}"] if empty else [])
            raise MarkerError(f"required markers missing ({'; '.join(parts)})", path)
    if known is not None:
        known_set = set(known)
        unknown = [n for n in names if n not in known_set]
        if names and len(names) - len(unknown) < len(names) / 2:
            raise MarkerError(f"unknown marker set: only {len(names) - len(unknown)} of {len(names)} markers "
                              f"are known to the model (e.g. {', '.join(unknown[:5])} are not)", path)
    if max_gap_s is not None:
        _fill_gaps(data, float(max_gap_s), path)
    return data


# ------------------------------------------------------------------------------------------------
# Writing
# ------------------------------------------------------------------------------------------------


def write_trc(path: str | Path, data: MarkerData, *, units: str = "mm") -> None:
    """Write MarkerData as an OpenSim-readable TRC file, atomically.

    Positions are converted from metres to `units` ('mm', 'cm' or 'm'); missing values are
    written as NaN (what OpenSim writes and reads; empty cells make OpenSim reject the row).
    """
    path = Path(path)
    unit = normalize_unit(units)
    if unit is None:
        raise UnitsError(f"unknown units {units!r} (use one of {', '.join(UNIT_SCALE)})", path)
    if data.n_frames == 0:
        raise InputFormatError("cannot write a TRC file with no frames", path)
    bad = [n for n in data.names if not n or re.search(r"\s", n)]
    if bad:
        raise MarkerError(f"marker names must be non-empty without whitespace: {bad[:5]}", path)
    t, m = data.n_frames, len(data.names)
    rate = f"{data.rate:.10g}"
    out = [
        f"PathFileType\t4\t(X/Y/Z)\t{path.name}",
        "DataRate\tCameraRate\tNumFrames\tNumMarkers\tUnits\tOrigDataRate\tOrigDataStartFrame\tOrigNumFrames",
        f"{rate}\t{rate}\t{t}\t{m}\t{unit}\t{rate}\t1\t{t}",
        "Frame#\tTime\t" + "".join(f"{n}\t\t\t" for n in data.names),
        "\t\t" + "\t".join(f"{a}{i + 1}" for i in range(m) for a in "XYZ"),
        "",
    ]
    values = data.xyz.reshape(t, 3 * m) / UNIT_SCALE[unit]
    for i in range(t):
        cells = ["NaN" if not np.isfinite(v) else f"{v:.10g}" for v in values[i]]
        out.append(f"{i + 1}\t{data.time[i]:.10g}\t" + "\t".join(cells))
    atomic_write_text(path, "\n".join(out) + "\n")
