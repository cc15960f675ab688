"""Read and write OpenSim storage files (.mot / .sto).

Layout::

    <name line>
    version=1
    nRows=1350
    nColumns=32          (time included)
    inDegrees=no
    <free text lines are allowed>
    endheader
    time  label1  label2 ...          (tab separated)
    0.45  1.0     2.0    ...          (tab or space separated numbers)

Reading is tolerant where OpenSim's own writers are sloppy: a header nColumns that disagrees with
the label line is ignored when the label line agrees with the data.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from biohuman.errors import InputFormatError
from biohuman.io.atomic import atomic_write_text


@dataclass
class Storage:
    """Contents of a .mot/.sto file.

    table: (rows, columns) float64 DataFrame; index = time in seconds (named "time"); columns =
    the file's labels. in_degrees: the header's inDegrees flag (rotational values in degrees).
    name: the first header line. header: every key=value pair of the header (strings), free-text
    header lines under "comment".
    """

    table: pd.DataFrame
    in_degrees: bool
    name: str
    header: dict[str, str] = field(default_factory=dict)


def _split_labels(line: str) -> list[str]:
    cells = line.rstrip("\r\n").split("\t") if "\t" in line else line.split()
    cells = [c.strip() for c in cells]
    while cells and not cells[-1]:
        cells.pop()
    return cells


def read_storage(path: str | Path) -> Storage:
    """Read an OpenSim .mot/.sto file.

    Raises InputFormatError naming the file for: no 'endheader' line, no label line, a first
    column that is not time, rows with the wrong number of values (a truncated last row says so),
    fewer rows than the header's nRows, non-numeric values (line and column named) and
    decreasing time.
    """
    path = Path(path)
    if not path.is_file():
        raise InputFormatError("storage file does not exist", path)
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    end = next((i for i, ln in enumerate(lines) if ln.strip().lower() == "endheader"), None)
    if end is None:
        raise InputFormatError("no 'endheader' line: not an OpenSim .mot/.sto file", path)
    header: dict[str, str] = {}
    comments: list[str] = []
    name = path.stem
    for i, ln in enumerate(lines[:end]):
        s = ln.strip()
        if not s:
            continue
        m = re.fullmatch(r"([A-Za-z_][\w.]*)\s*=\s*(.*)", s)
        if m:
            header[m.group(1)] = m.group(2).strip()
        elif i == 0:
            name = s
        else:
            comments.append(s)
    if comments:
        header["comment"] = "\n".join(comments)
    in_degrees = header.get("inDegrees", "no").strip().lower() in ("yes", "true", "1")

    label_at = next((i for i in range(end + 1, len(lines)) if lines[i].strip()), None)
    if label_at is None:
        raise InputFormatError("no column-label line after 'endheader'", path)
    labels = _split_labels(lines[label_at])
    if not labels or labels[0].lower() != "time":
        raise InputFormatError(f"line {label_at + 1}: first column label is {labels[0] if labels else ''!r}, "
                               f"expected 'time'", path)
    n = len(labels)
    body = [(i, lines[i].split()) for i in range(label_at + 1, len(lines)) if lines[i].strip()]
    for k, (i, cells) in enumerate(body):
        if len(cells) != n:
            if k == len(body) - 1 and len(cells) < n:
                raise InputFormatError(f"truncated: last row (line {i + 1}) has {len(cells)} of {n} values "
                                       f"(row cut mid-way)", path)
            raise InputFormatError(f"line {i + 1}: {len(cells)} values for {n} column labels", path)
    if "nRows" in header:
        try:
            n_rows = int(float(header["nRows"]))
        except ValueError:
            raise InputFormatError(f"header nRows={header['nRows']!r} is not a number", path) from None
        if len(body) < n_rows:
            raise InputFormatError(f"truncated: header nRows={n_rows} but only {len(body)} data rows", path)
    if not body:
        arr = np.zeros((0, n))
    else:
        try:
            arr = np.array([c for _, c in body], dtype=np.float64)
        except ValueError:
            for i, cells in body:
                for c, cell in enumerate(cells):
                    try:
                        float(cell)
                    except ValueError:
                        raise InputFormatError(f"line {i + 1}, column {c + 1} ({labels[c]}): non-numeric "
                                               f"value {cell!r}", path) from None
            raise
    t = arr[:, 0]
    if not np.isfinite(t).all():
        bad = int(np.flatnonzero(~np.isfinite(t))[0])
        raise InputFormatError(f"line {body[bad][0] + 1}: time is not a finite number", path)
    if (np.diff(t) < 0).any():
        bad = int(np.flatnonzero(np.diff(t) < 0)[0]) + 1
        raise InputFormatError(f"time decreases at line {body[bad][0] + 1} ({t[bad - 1]:.8g} s then {t[bad]:.8g} s)",
                               path)
    table = pd.DataFrame(arr[:, 1:], index=pd.Index(t, name="time"), columns=labels[1:])
    return Storage(table=table, in_degrees=in_degrees, name=name, header=header)


def write_storage(path: str | Path, table: pd.DataFrame, *, in_degrees: bool, name: str = "biohuman",
                  allow_nan: bool = False) -> None:
    """Write a table as an OpenSim .mot/.sto file, atomically.

    table: index = time in seconds (or a 'time' column), columns = labels (no whitespace),
    numeric values. in_degrees: written as inDegrees=yes/no (the caller converts the values).
    Time is written with 10 significant digits, values with 9 (relative round trip ~1e-9).
    NaN values raise InputFormatError unless allow_nan: OpenSim's TimeSeriesTable reads 'nan',
    but the legacy Storage class (used by IK/ID/SO/CMC tools) silently stops reading at the
    first row holding one.
    """
    path = Path(path)
    df = table.copy()
    if "time" in df.columns:
        df = df.set_index("time")
    try:
        t = np.asarray(df.index, dtype=np.float64)
        values = df.to_numpy(dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InputFormatError(f"cannot write non-numeric table as storage: {exc}", path) from exc
    labels = [str(c) for c in df.columns]
    bad = [c for c in labels if not c or re.search(r"\s", c)]
    if bad:
        raise InputFormatError(f"column labels must be non-empty without whitespace: {bad[:5]}", path)
    if not np.isfinite(t).all() or (np.diff(t) < 0).any():
        raise InputFormatError("time (the index) must be finite and non-decreasing", path)
    if not allow_nan and np.isnan(values).any():
        r, c = np.argwhere(np.isnan(values))[0]
        raise InputFormatError(f"NaN at time {t[r]:.6g} s in column {labels[c]!r}: OpenSim's legacy Storage "
                               f"reader stops at the first NaN row (pass allow_nan=True to write it anyway)", path)
    if "\n" in name or not name.strip():
        raise InputFormatError("storage name must be one non-empty line", path)
    head = [name.strip(), "version=1", f"nRows={len(t)}", f"nColumns={len(labels) + 1}",
            f"inDegrees={'yes' if in_degrees else 'no'}", "endheader", "\t".join(["time", *labels])]
    buf = io.StringIO()
    if len(t):
        np.savetxt(buf, np.column_stack([t, values]), fmt=["%.10g"] + ["%.9g"] * len(labels), delimiter="\t")
    atomic_write_text(path, "\n".join(head) + "\n" + buf.getvalue())
