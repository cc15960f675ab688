"""Read C3D motion-capture files (through `ezc3d`) and convert them to the files the labelling
spine reads: a TRC (markers), a GRF .mot and its ExternalLoads XML (measured ground forces).

Conventions (docs/ingest.md):
* Time starts at 0 at the first stored frame (as OpenSim's C3DFileAdapter); analog samples share
  that origin (sample k at k / analog_rate).
* Positions in metres, forces in N, moments in N m (the file's POINT:UNITS and force-plate units
  converted). Markers are NaN where the file marks them invalid (negative residual).
* Frames: the lab frame as stored (`rotate_to_y_up=False`, OpenSim's C3DFileAdapter output) or
  turned so that the lab's vertical becomes +Y (OpenSim's convention), keeping the lab's
  horizontal screen axis as +X (`rotate_to_y_up=True`, the default). The vertical comes from
  POINT:Y_SCREEN (e.g. '+Z'), else from the force-plate surface normal, else +Z.
* Force plates (any type ezc3d decodes, calibration matrices applied by ezc3d): `force` is the
  reaction on the subject; `moment_origin` the moment about the plate's surface centre (OpenSim's
  "origin of force plate" location); `cop` the centre of pressure and `free_moment` the moment
  about it (vertical only), both as ezc3d computes them (NaN/huge when the plate is unloaded).

Plate -> foot assignment in `c3d_to_opensim_files` (documented in docs/ingest.md): a plate is
loaded where its vertical force exceeds `contact_threshold_n`; each loaded run of a plate
(a contact) goes to the foot whose markers are nearest (horizontal distance, median over the
contact) to the plate's centre of pressure, so one plate may carry the right foot in one contact
and the left in another. The loads of all contacts on a foot are combined exactly (summed force;
CoP and vertical free moment solved from the summed moment about the lab origin).
"""

from __future__ import annotations

import logging
import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from biohuman.errors import ConfigError, InputFormatError, MarkerError, UnitsError
from biohuman.io.trc import UNIT_SCALE, MarkerData, normalize_unit

log = logging.getLogger(__name__)

_FORCE_SCALE = {"n": 1.0, "kn": 1000.0}
_MOMENT_SCALE = {"nm": 1.0, "n.m": 1.0, "n m": 1.0, "nmm": 0.001, "n.mm": 0.001, "n mm": 0.001, "nmm.": 0.001}

FOOT_MARKER_PATTERN = re.compile(
    r"^(?P<side>[RL])(?:IGHT|EFT)?[._ ]?(?:CAL|HEE|HEEL|TOE|TOE[._ ]?TIP|MT[1-5]?|MTH[1-5]|MTP[1-5]?|MET[1-5]?|"
    r"ANK|ANKLE|MANK|MANKLE|LMAL|MMAL|MID[._ ]?FOOT.*|FOOT.*)$",
    re.IGNORECASE,
)
"""Default foot markers for plate assignment: R/L (or Right/Left) + heel, toe, metatarsal, ankle or
malleolus names, e.g. RCAL, LHEE, R.Heel, RMT5, L.Toe, RLMAL, LANK (after any 'Subject:' prefix)."""


@dataclass
class ForcePlate:
    """One force plate's loads in the output frame.

    index: 1-based plate number (FORCE_PLATFORM order). time: (N,) s at the analog rate.
    force: (N, 3) N, ground reaction on the subject. moment_origin: (N, 3) N m about `centre`.
    cop: (N, 3) m centre of pressure. free_moment: (N, 3) N m about the CoP (vertical only).
    centre: (3,) m surface centre (mean of the corners); corners: (4, 3) m.
    """

    index: int
    time: np.ndarray
    force: np.ndarray
    moment_origin: np.ndarray
    cop: np.ndarray
    free_moment: np.ndarray
    centre: np.ndarray
    corners: np.ndarray


@dataclass
class C3DData:
    """Contents of a C3D file in SI units.

    markers: MarkerData (metres, NaN = invalid). plates: force plates (empty when none).
    analog: DataFrame (time index s, one column per analog channel, the file's units, scaled by
    ezc3d) with `analog_units` {label: unit}. rotation: (3, 3) lab -> output frame (identity when
    not rotated). point_rate / analog_rate: Hz. first_frame: the file's first frame number (0-based).
    """

    markers: MarkerData
    plates: list[ForcePlate]
    analog: pd.DataFrame
    analog_units: dict[str, str]
    rotation: np.ndarray
    point_rate: float
    analog_rate: float
    first_frame: int
    source: str
    info: dict = field(default_factory=dict)


# ------------------------------------------------------------------------------------------------
# Reading
# ------------------------------------------------------------------------------------------------


def _param(params: Mapping, group: str, name: str, default=None):  # noqa: ANN001, ANN202
    try:
        return params[group][name]["value"]
    except (KeyError, TypeError):
        return default


def _labels(params: Mapping, group: str) -> list[str]:
    """LABELS of a group, continued by LABELS2, LABELS3, ... (C3D's 255-entries-per-parameter limit)."""
    out = [str(v).strip() for v in _param(params, group, "LABELS", [])]
    k = 2
    while _param(params, group, f"LABELS{k}") is not None:
        out += [str(v).strip() for v in _param(params, group, f"LABELS{k}")]
        k += 1
    return out


def _axis_vector(spec: str) -> np.ndarray:
    """'+Z' / '-y' / 'x' -> signed unit vector."""
    s = spec.strip().lower()
    sign = -1.0 if s.startswith("-") else 1.0
    s = s.lstrip("+-")
    if s not in ("x", "y", "z"):
        raise ConfigError(f"axis must be one of x, y, z with an optional sign, got {spec!r}")
    v = np.zeros(3)
    v["xyz".index(s)] = sign
    return v


def lab_rotation(up: np.ndarray, horizontal: np.ndarray | None = None) -> np.ndarray:
    """Proper rotation (3, 3) taking lab vectors to a frame whose +Y is `up` and whose +X is
    `horizontal` (projected off `up`; default: the first lab axis not parallel to `up`)."""
    up = np.asarray(up, float) / np.linalg.norm(up)
    cands = ([np.asarray(horizontal, float)] if horizontal is not None else []) + list(np.eye(3))
    for h in cands:
        h = h - np.dot(h, up) * up
        if np.linalg.norm(h) > 1e-6:
            break
    x = h / np.linalg.norm(h)
    z = np.cross(x, up)
    return np.stack([x, up, z])


def _detect_up(params: Mapping, plates_corners: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray | None, str]:
    ys = _param(params, "POINT", "Y_SCREEN")
    xs = _param(params, "POINT", "X_SCREEN")
    if ys:
        try:
            up = _axis_vector(str(ys[0]))
            hor = _axis_vector(str(xs[0])) if xs else None
            return up, hor, f"POINT:Y_SCREEN={ys[0]}"
        except ConfigError:
            pass
    for c in plates_corners:  # plate surface normal (sign: the axis of least extent, positive)
        ext = np.ptp(c, axis=0)
        if np.ptp(ext) > 0 and ext.min() < 1e-6 * max(ext.max(), 1.0):
            return np.eye(3)[int(np.argmin(ext))], None, "force-plate surface normal"
    return np.array([0.0, 0.0, 1.0]), None, "default +Z"


def _unit_scale(unit: str, table: Mapping[str, float], what: str, path: Path) -> float:
    key = unit.strip().lower().replace("·", ".")
    if key not in table:
        raise UnitsError(f"unknown {what} unit {unit!r} (known: {', '.join(sorted(table))})", path)
    return table[key]


def read_c3d(
    path: str | Path,
    *,
    rotate_to_y_up: bool = True,
    up_axis: str = "auto",
    strip_prefix: bool = True,
) -> C3DData:
    """Read a C3D file: markers (metres), force plates (N, m, N m) and analog channels.

    rotate_to_y_up: turn the lab frame so its vertical is +Y (OpenSim); False keeps the lab frame
    (what OpenSim's C3DFileAdapter writes). up_axis: 'auto' (POINT:Y_SCREEN, else the plates'
    surface normal, else +Z) or a signed lab axis such as '+z'. strip_prefix: drop a
    'Subject:' prefix from marker labels (Vicon Nexus writes them).

    Raises InputFormatError (not a C3D, truncated or corrupt file, no marker frames),
    UnitsError (unknown units).
    """
    import ezc3d

    path = Path(path)
    if not path.is_file():
        raise InputFormatError("C3D file does not exist", path)
    size = path.stat().st_size
    if size < 512 * 2:
        raise InputFormatError(f"truncated: {size} bytes is smaller than a C3D header and parameter block", path)
    with path.open("rb") as fh:
        head = fh.read(2)
    if head[1] != 0x50:  # C3D word 1: parameter block pointer, then the key byte 0x50
        raise InputFormatError("not a C3D file (byte 2 of the header is not the C3D key 0x50)", path)
    _check_data_size(path)
    try:
        c = ezc3d.c3d(str(path), extract_forceplat_data=True)
    except Exception as exc:  # ezc3d raises RuntimeError / std::ios_base::failure with its own text
        raise InputFormatError(f"ezc3d could not read the file (corrupt or truncated?): {exc}", path) from exc
    params = c["parameters"]
    header = c["header"]
    pts = np.asarray(c["data"]["points"], dtype=float)  # (4, M, T)
    n_frames = pts.shape[2]
    expected = int(header["points"]["last_frame"]) - int(header["points"]["first_frame"]) + 1
    if n_frames == 0:
        raise InputFormatError("no point frames in the file", path)
    if n_frames < expected:
        raise InputFormatError(f"truncated: header announces {expected} frames but {n_frames} were read", path)
    point_rate = float(header["points"]["frame_rate"])
    if not point_rate > 0:
        raise InputFormatError(f"point rate {point_rate} Hz is not positive", path)
    units = _param(params, "POINT", "UNITS", ["mm"])
    unit = normalize_unit(str(units[0]) if len(units) else "mm")
    if unit is None:
        raise UnitsError(f"POINT:UNITS {units!r} is not a length unit", path)
    labels = _labels(params, "POINT")
    n_used = pts.shape[1]
    labels = labels[:n_used] + [f"point{k + 1}" for k in range(len(labels), n_used)]
    if strip_prefix:
        labels = [s.split(":")[-1] for s in labels]
    xyz = pts[:3].transpose(2, 1, 0) * UNIT_SCALE[unit]  # (T, M, 3) metres
    residual = np.asarray(c["data"]["meta_points"]["residuals"], dtype=float)  # (1, M, T)
    xyz[(residual[0].T < 0)] = np.nan

    # force plates (ezc3d: global lab frame, file units)
    plates_raw = list(c["data"].get("platform", []))
    corners_m = []
    for pf in plates_raw:
        pscale = UNIT_SCALE.get(normalize_unit(str(pf["unit_position"])) or "", None)
        if pscale is None:
            raise UnitsError(f"force-plate position unit {pf['unit_position']!r} is unknown", path)
        corners_m.append(np.asarray(pf["corners"], float).T * pscale)
    if rotate_to_y_up:
        if up_axis == "auto":
            up, hor, why = _detect_up(params, corners_m)
        else:
            up, hor, why = _axis_vector(up_axis), None, f"up_axis={up_axis}"
        rot = lab_rotation(up, hor)
    else:
        rot, why = np.eye(3), "not rotated"

    analog = np.asarray(c["data"]["analogs"], dtype=float)
    analog_rate = float(header["analogs"]["frame_rate"]) if analog.size else 0.0
    a_labels = _labels(params, "ANALOG")
    a_units = [str(s).strip() for s in _param(params, "ANALOG", "UNITS", [])]
    n_ch = analog.shape[1] if analog.ndim == 3 else 0
    a_labels = (a_labels + [f"analog{k + 1}" for k in range(len(a_labels), n_ch)])[:n_ch]
    a_units = (a_units + [""] * n_ch)[:n_ch]
    n_samp = analog.shape[2] if n_ch else 0
    a_time = np.arange(n_samp) / analog_rate if n_samp else np.zeros(0)
    analog_df = pd.DataFrame(analog[0].T if n_ch else np.zeros((0, 0)), index=pd.Index(a_time, name="time"),
                             columns=a_labels)

    plates = []
    for k, pf in enumerate(plates_raw):
        pscale = UNIT_SCALE[normalize_unit(str(pf["unit_position"]))]  # type: ignore[index]
        fscale = _unit_scale(str(pf["unit_force"]), _FORCE_SCALE, "force", path)
        mscale = _unit_scale(str(pf["unit_moment"]), _MOMENT_SCALE, "moment", path)
        force = np.asarray(pf["force"], float).T * fscale
        moment = np.asarray(pf["moment"], float).T * mscale
        cop = np.asarray(pf["center_of_pressure"], float).T * pscale
        tz = np.asarray(pf["Tz"], float).T * mscale
        corners = corners_m[k]
        centre = corners.mean(axis=0)
        plates.append(ForcePlate(index=k + 1, time=np.arange(force.shape[0]) / analog_rate,
                                 force=force @ rot.T, moment_origin=moment @ rot.T, cop=cop @ rot.T,
                                 free_moment=tz @ rot.T, centre=rot @ centre, corners=corners @ rot.T))

    time = np.arange(n_frames) / point_rate
    markers = MarkerData(time=time, names=_unique(labels), xyz=xyz @ rot.T, rate=point_rate, source=str(path))
    info = {"frame": why, "point_units": unit, "first_frame": int(header["points"]["first_frame"]),
            "n_plates": len(plates)}
    return C3DData(markers=markers, plates=plates, analog=analog_df, analog_units=dict(zip(a_labels, a_units)),
                   rotation=rot, point_rate=point_rate, analog_rate=analog_rate,
                   first_frame=int(header["points"]["first_frame"]), source=str(path), info=info)


def _check_data_size(path: Path) -> None:
    """Refuse a file whose data section is shorter than the frames its header announces (ezc3d
    reads a cut file silently, rewriting its own header to the frames it found).

    Reads the 512-byte C3D header: word 2 points, word 3 analog values per frame, words 4-5
    first/last frame, words 7-8 the scale (negative: float data), word 9 the data start block.
    """
    import struct

    with path.open("rb") as fh:
        raw = fh.read(512)
        fh.seek((raw[0] - 1) * 512 + 3)
        proc = fh.read(1)
    if len(raw) < 512:
        raise InputFormatError(f"truncated: {len(raw)} bytes is smaller than the C3D header", path)
    endian = ">" if proc and proc[0] == 86 else "<"  # 84 Intel, 85 DEC, 86 MIPS (big-endian)
    n_pts, n_analog, first, last = struct.unpack(endian + "4H", raw[2:10])
    # sign bit of the scale (float32 at bytes 12-15): Intel in byte 15, DEC in byte 13, MIPS in byte 12
    sign_byte = {84: 15, 85: 13, 86: 12}.get(proc[0] if proc else 84, 15)
    negative = bool(raw[sign_byte] & 0x80)
    data_start = struct.unpack(endian + "H", raw[16:18])[0]
    if last == 0xFFFF or last < first or data_start == 0:  # > 65535 frames: header cannot say
        return
    word = 4 if negative else 2
    needed = (data_start - 1) * 512 + (last - first + 1) * (n_pts * 4 * word + n_analog * word)
    size = path.stat().st_size
    if size < needed:
        raise InputFormatError(f"truncated: the header announces {last - first + 1} frames, which need "
                               f"{needed} bytes, but the file has {size}", path)


def _unique(labels: Sequence[str]) -> list[str]:
    """Make duplicate or empty labels unique (`name`, `name_2`, ...)."""
    out: list[str] = []
    for i, s in enumerate(labels):
        s = re.sub(r"\s+", "_", s) or f"point{i + 1}"
        name, k = s, 2
        while name in out:
            name, k = f"{s}_{k}", k + 1
        out.append(name)
    return out


# ------------------------------------------------------------------------------------------------
# Marker-name mapping
# ------------------------------------------------------------------------------------------------

MARKER_MAPS_DIR = Path(__file__).resolve().parents[2] / "models" / "marker_maps"


def resolve_marker_map(name_or_path: str | Path) -> Path:
    """A marker map by name (a file stem in models/marker_maps) or path -> its path.
    Raises ConfigError when it does not exist."""
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") and p.is_file():
        return p
    cand = MARKER_MAPS_DIR / f"{name_or_path}.yaml"
    if cand.is_file():
        return cand
    known = sorted(q.stem for q in MARKER_MAPS_DIR.glob("*.yaml")) if MARKER_MAPS_DIR.is_dir() else []
    raise ConfigError(f"unknown marker map {str(name_or_path)!r} (not a file; known names: {', '.join(known)})")


def load_marker_map(name_or_path: str | Path) -> dict[str, str]:
    """Read a marker map YAML: `markers: {lab name: model marker name}`. Raises ConfigError for
    a missing file, bad layout, or two lab markers mapped to one model marker."""
    import yaml

    path = resolve_marker_map(name_or_path)
    try:
        doc = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"marker map is not valid YAML: {exc}", path) from exc
    mapping = doc.get("markers") if isinstance(doc, dict) else None
    if not isinstance(mapping, dict) or not mapping:
        raise ConfigError("marker map needs a non-empty 'markers: {lab_name: model_name}' mapping", path)
    mapping = {str(k): str(v) for k, v in mapping.items() if v is not None}
    seen: dict[str, str] = {}
    for lab, model in mapping.items():
        if model in seen:
            raise ConfigError(f"lab markers {seen[model]!r} and {lab!r} both map to model marker {model!r}", path)
        seen[model] = lab
    return mapping


def apply_marker_map(data: MarkerData, mapping: Mapping[str, str], *,
                     logger: logging.Logger | None = None) -> MarkerData:
    """Rename markers lab -> model name; markers the map does not name are dropped (one log
    line lists them). Raises MarkerError when no marker of the data is in the map."""
    lg = logger or log
    keep = [n for n in data.names if n in mapping]
    dropped = [n for n in data.names if n not in mapping]
    if not keep:
        raise MarkerError(f"none of the {len(data.names)} markers is named by the marker map "
                          f"(e.g. {', '.join(data.names[:5])})", data.source or None)
    if dropped:
        lg.info("marker map: dropped %d unmapped markers: %s", len(dropped), ", ".join(dropped))
    out = data.subset(keep)
    out.names = [mapping[n] for n in keep]
    return out


# ------------------------------------------------------------------------------------------------
# Plates -> feet
# ------------------------------------------------------------------------------------------------


def foot_markers_from_names(names: Sequence[str]) -> dict[str, list[str]]:
    """The default foot markers of each side among `names` (FOOT_MARKER_PATTERN)."""
    out: dict[str, list[str]] = {"r": [], "l": []}
    for n in names:
        m = FOOT_MARKER_PATTERN.match(n)
        if m:
            out[m.group("side").lower()].append(n)
    return out


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    d = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(d == 1).tolist(), (np.flatnonzero(d == -1) - 1).tolist()))


@dataclass(frozen=True)
class Contact:
    """One loaded run of a plate assigned to a foot (times s, distances m)."""

    plate: int
    foot: str
    t0: float
    t1: float
    distance_r: float
    distance_l: float


def assign_plates(data: C3DData, foot_markers: Mapping[str, Sequence[str]], *, contact_threshold_n: float = 20.0,
                  max_distance_m: float = 0.35, logger: logging.Logger | None = None) -> list[Contact]:
    """Assign each loaded run of each plate to the foot whose markers are nearest its CoP.

    Distance: horizontal (x, z of the Y-up frame) distance between the plate's CoP and the mean of
    the side's foot markers present in a frame, median over the marker frames of the contact.
    A contact farther than `max_distance_m` from both feet is still assigned to the nearer foot
    and logged as a warning. Raises MarkerError when a side has no foot marker with data.
    """
    lg = logger or log
    mk = data.markers
    feet = {}
    for side in ("r", "l"):
        names = [n for n in foot_markers.get(side, []) if n in mk.names]
        if not names:
            raise MarkerError(f"cannot assign force plates to feet: no {side} foot markers among the data's markers "
                              f"(give foot_markers or a marker map naming heel/toe markers)", data.source)
        pos = np.stack([mk.marker(n) for n in names], axis=1)  # (T, k, 3)
        with warnings.catch_warnings():  # frames where no foot marker is visible stay NaN
            warnings.simplefilter("ignore", RuntimeWarning)
            feet[side] = np.nanmean(pos, axis=1)  # (T, 3)
    out = []
    for pf in data.plates:
        loaded = pf.force[:, 1] > contact_threshold_n
        for a, b in _runs(loaded):
            t0, t1 = float(pf.time[a]), float(pf.time[b])
            frames = np.flatnonzero((mk.time >= t0 - 1e-9) & (mk.time <= t1 + 1e-9))
            if frames.size == 0:  # contact shorter than one marker frame: nearest frame
                frames = np.array([int(np.argmin(np.abs(mk.time - 0.5 * (t0 + t1))))])
            idx = np.clip(np.searchsorted(pf.time, mk.time[frames]), a, b)
            cop = pf.cop[idx]
            dist = {}
            for side, fp in feet.items():
                d = np.hypot(fp[frames, 0] - cop[:, 0], fp[frames, 2] - cop[:, 2])
                dist[side] = float(np.nanmedian(d)) if np.isfinite(d).any() else np.inf
            foot = "r" if dist["r"] <= dist["l"] else "l"
            if not np.isfinite(dist[foot]):
                raise MarkerError(f"plate {pf.index}: no foot marker visible during its contact at "
                                  f"{t0:.3f}-{t1:.3f} s", data.source)
            if dist[foot] > max_distance_m:
                lg.warning("plate %d contact %.3f-%.3f s: nearest foot (%s) is %.2f m from the CoP", pf.index, t0, t1,
                           foot, dist[foot])
            out.append(Contact(pf.index, foot, t0, t1, dist["r"], dist["l"]))
            lg.info("plate %d contact %.3f-%.3f s -> foot %s (distances r %.3f m, l %.3f m)", pf.index, t0, t1, foot,
                    dist["r"], dist["l"])
    return out


def feet_ground_forces(data: C3DData, contacts: Sequence[Contact], *, contact_threshold_n: float = 20.0,
                       floor_height: float | None = None):  # noqa: ANN201 - GroundForces
    """Combine the plates' contacts into per-foot loads (biohuman GroundForces, Y-up frame).

    Per foot and sample: F = sum of the assigned plates' forces; M = sum of (centre x F +
    moment_origin) about the lab origin; the CoP p = (px, h, pz) on the floor (h = floor_height,
    default the mean height of the plates' surface centres) and the vertical free moment T solve
    M = p x F + (0, T, 0) exactly. Samples with no assigned load: zero force and torque, CoP held.
    """
    from biohuman.dynamics.grf import GroundForces, _fill_between_contacts

    if not data.plates:
        raise InputFormatError("the C3D file has no force plates", data.source)
    time = data.plates[0].time
    n = len(time)
    h = float(np.mean([pf.centre[1] for pf in data.plates])) if floor_height is None else float(floor_height)
    force = np.zeros((n, 2, 3))
    moment = np.zeros((n, 2, 3))
    by_plate = {pf.index: pf for pf in data.plates}
    for c in contacts:
        pf = by_plate[c.plate]
        sel = (time >= c.t0 - 1e-9) & (time <= c.t1 + 1e-9) & (pf.force[:, 1] > contact_threshold_n)
        i = 0 if c.foot == "r" else 1
        f = pf.force[sel]
        force[sel, i] += f
        moment[sel, i] += np.cross(pf.centre, f) + pf.moment_origin[sel]
    cop = np.zeros((n, 2, 3))
    torque = np.zeros((n, 2, 3))
    contact = force[:, :, 1] > contact_threshold_n
    for i in range(2):
        on = contact[:, i]
        f, m = force[on, i], moment[on, i]
        fy = f[:, 1]
        px = (m[:, 2] + h * f[:, 0]) / fy
        pz = (h * f[:, 2] - m[:, 0]) / fy
        cop[on, i] = np.stack([px, np.full_like(px, h), pz], axis=1)
        torque[on, i, 1] = m[:, 1] - (pz * f[:, 0] - px * f[:, 2])
        force[~on, i] = 0.0
    cop = _fill_between_contacts(cop, contact)
    cop[:, :, 1] = h
    return GroundForces(time=time.copy(), force=force, cop=cop, torque=torque, contact=contact,
                        info={"source": data.source, "floor_height_m": h, "contact_threshold_n": contact_threshold_n,
                              "contacts": len(contacts)})


# ------------------------------------------------------------------------------------------------
# Conversion
# ------------------------------------------------------------------------------------------------


def _crop(data: C3DData, t0: float, t1: float) -> C3DData:
    """Markers, plates and analogs restricted to t0 <= t <= t1 (times kept)."""
    mk = data.markers.window(t0, t1)
    plates = []
    for pf in data.plates:
        k = (pf.time >= t0 - 1e-9) & (pf.time <= t1 + 1e-9)
        plates.append(ForcePlate(pf.index, pf.time[k], pf.force[k], pf.moment_origin[k], pf.cop[k],
                                 pf.free_moment[k], pf.centre, pf.corners))
    an = data.analog[(data.analog.index >= t0 - 1e-9) & (data.analog.index <= t1 + 1e-9)]
    return C3DData(mk, plates, an, data.analog_units, data.rotation, data.point_rate, data.analog_rate,
                   data.first_frame, data.source, dict(data.info))


def time_window(times: np.ndarray, *, frames: Sequence[int] | None = None,
                time_range: Sequence[float] | None = None, source: str | Path | None = None) -> tuple[float, float]:
    """(t0, t1) of a frame selection ([first, last], 0-based inclusive) or a time range (s);
    the whole trial when neither is given. Raises ConfigError when both are given or the
    selection is outside the data."""
    if frames is not None and time_range is not None:
        raise ConfigError("give either frames or time_range, not both", source)
    if frames is not None:
        a, b = int(frames[0]), int(frames[1])
        if not (0 <= a <= b < len(times)):
            raise ConfigError(f"frames [{a}, {b}] outside the trial's {len(times)} frames (0-based)", source)
        return float(times[a]), float(times[b])
    if time_range is not None:
        return float(time_range[0]), float(time_range[1])
    return float(times[0]), float(times[-1])


def c3d_to_opensim_files(
    path: str | Path,
    out_dir: str | Path,
    *,
    name: str | None = None,
    marker_map: str | Path | Mapping[str, str] | None = None,
    keep_markers: Sequence[str] | None = None,
    frames: Sequence[int] | None = None,
    time_range: Sequence[float] | None = None,
    forces: bool = True,
    foot_markers: Mapping[str, Sequence[str]] | None = None,
    contact_threshold_n: float = 20.0,
    up_axis: str = "auto",
    logger: logging.Logger | None = None,
) -> dict[str, Path]:
    """Convert a C3D file into `{name}.trc` (+ `{name}_grf.mot`, `{name}_external_loads.xml`).

    Frame: Y up (see read_c3d). marker_map: map name/path or dict (lab -> model name; unmapped
    markers dropped); keep_markers: keep only these (after mapping; others dropped with a log
    line), e.g. the model's marker set. Markers with no data in the window are dropped (logged).
    frames ([first, last] 0-based inclusive) or time_range (s) crop the trial (times kept).
    forces: write the plates' loads per foot (plates assigned to feet as in `assign_plates`,
    foot markers from `foot_markers` or FOOT_MARKER_PATTERN); raises InputFormatError when the
    file has no force plates. Returns {"trc": ..., ["grf_mot": ..., "external_loads": ...]}.
    """
    from biohuman.dynamics.grf import write_external_loads_xml, write_grf_mot
    from biohuman.io.trc import write_trc

    lg = logger or log
    path, out_dir = Path(path), Path(out_dir)
    name = name or path.stem
    data = read_c3d(path, rotate_to_y_up=True, up_axis=up_axis)
    if forces and not data.plates:
        raise InputFormatError("the C3D file has no force plates (FORCE_PLATFORM:USED = 0); set forces: false "
                               "to estimate ground forces instead", path)
    t0, t1 = time_window(data.markers.time, frames=frames, time_range=time_range, source=path)
    data = _crop(data, t0, t1)
    mk = data.markers
    if marker_map is not None:
        mapping = dict(marker_map) if isinstance(marker_map, Mapping) else load_marker_map(marker_map)
        mk = apply_marker_map(mk, mapping, logger=lg)
    feet = foot_markers if foot_markers is not None else foot_markers_from_names(mk.names)
    data.markers = mk
    contacts = assign_plates(data, feet, contact_threshold_n=contact_threshold_n, logger=lg) if forces else []
    if keep_markers is not None:
        known = set(keep_markers)
        drop = [n for n in mk.names if n not in known]
        if drop:
            lg.info("dropped %d markers the model does not have: %s", len(drop), ", ".join(drop))
        mk = mk.subset([n for n in mk.names if n in known])
    empty = [n for i, n in enumerate(mk.names) if not np.isfinite(mk.xyz[:, i]).all(axis=-1).any()]
    if empty:
        lg.info("dropped %d markers with no data in %.3f-%.3f s: %s", len(empty), t0, t1, ", ".join(empty))
        mk = mk.subset([n for n in mk.names if n not in empty])
    if not mk.names:
        raise MarkerError("no markers left after mapping and cropping", path)
    out_dir.mkdir(parents=True, exist_ok=True)
    outputs = {"trc": out_dir / f"{name}.trc"}
    write_trc(outputs["trc"], mk, units="mm")
    if forces:
        if not contacts:
            lg.warning("no plate is loaded above %g N in %.3f-%.3f s: ground forces are zero", contact_threshold_n,
                       t0, t1)
        gf = feet_ground_forces(data, contacts, contact_threshold_n=contact_threshold_n)
        outputs["grf_mot"] = write_grf_mot(out_dir / f"{name}_grf.mot", gf)
        outputs["external_loads"] = write_external_loads_xml(out_dir / f"{name}_external_loads.xml",
                                                             outputs["grf_mot"])
    lg.info("converted %s (%.3f-%.3f s, %d markers, %d plates, %d contacts) -> %s", path, t0, t1, len(mk.names),
            len(data.plates), len(contacts), ", ".join(str(p) for p in outputs.values()))
    return outputs
