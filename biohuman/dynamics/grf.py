"""Ground reaction forces estimated from whole-body dynamics and kinematic foot contact (no force
plates), OpenSim-format GRF files (.mot + ExternalLoads XML), and reading measured GRF.

Method (details, rationale and validation figures in docs/ground_forces.md):
1. Total external force F = m (a_com - g): COM from the model's forward kinematics, a_com by central
   differences, F low-passed with the SAME cutoff as the kinematics (Kristianslund et al. 2012).
2. Contact per foot from kinematics only: a heel/toe contact point is "down" when it is within
   `height_tol` of the floor and slower than `speed_tol`; hysteresis and minimum durations.
   No foot down = flight: force exactly zero.
3. Total centre of pressure p from the moment balance about the COM c,
   dH/dt = (p - c) x F + T_free (T_free vertical, p on the floor), with H the model's whole-body
   angular momentum about the COM (from the coordinates); with `angular_momentum=False` the
   force's line of action passes through the COM (dH/dt = 0).
4. Single support: the foot's CoP is p clipped to its support area (heel-toe segment, +-half_width
   across it; only the heel or only the toe down: that point).
   Double support, lever rule: each foot's CoP is the point of its heel-toe segment nearest p; the
   shares w_r + w_l = 1 put the share-weighted mean of the two foot CoPs at the point of the
   segment between them nearest p (exact moment balance when p lies between the feet). Quiet
   two-foot stance (p = COM projection) gives each foot its static share; in walking the share
   moves smoothly from the trailing to the leading foot as p travels forward.
   Horizontal forces in double support: each foot's force points at the COM (so the trailing
   foot pushes forward while the leading foot brakes, as force plates show) and the leftover
   horizontal force is shared like the vertical force. The x/z moment balance does not depend
   on this split because both CoPs lie on the floor.
5. Free moment: the vertical torque the moment balance leaves over, split like the vertical force
   (zero with `free_moment=False`).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from biohuman.dynamics.filters import lowpass
from biohuman.dynamics.kinematics import forward_kinematics
from biohuman.errors import InputFormatError
from biohuman.io.atomic import atomic_path, atomic_write_text
from biohuman.osim.model import foot_geometry, load_model, opensim

FEET: tuple[str, str] = ("r", "l")
"""Order of the foot axis in GroundForces arrays."""


@dataclass(frozen=True)
class ContactConfig:
    """Settings of kinematic foot-contact detection and load sharing (lengths m, speeds m/s, s).

    height_tol: a contact point (heel or toe) may be down when within this height of the floor.
    speed_tol: ... and slower than this (3D speed of the body-fixed point).
    release_factor: hysteresis; a foot in contact stays in contact until its points exceed
        height_tol * release_factor or speed_tol * release_factor.
    min_contact_s: contacts shorter than this are discarded; min_gap_s: gaps shorter than this
        inside a contact are closed.
    floor_height: floor level y (m), default 0 (OpenSim lab convention); None estimates it as the
        median height of the lowest slow contact point (for IK that leaves the feet a few cm
        above or below y = 0; unreliable for trials that are mostly flight).
    angular_momentum: use the whole-body dH/dt in the CoP and free-moment estimate (else the
        force's line of action passes through the COM).
    free_moment: estimate the vertical free moment (else it is zero).
    cop_lateral: let the single-support CoP move across the sole (within +-half_width); else the
        CoP stays on the heel-toe line. In double support the CoPs are always on the heel-toe lines.
    min_force_frac: below this fraction of body weight the total CoP falls back to the COM
        projection (the moment balance is ill-conditioned at tiny forces).
    shear_toward_com: in double support, point each foot's force at the COM (opposing shear
        forces under the leading and trailing feet, as measured in gait) and share only the
        leftover horizontal force; else both feet get the same force direction.
    """

    height_tol: float = 0.04
    speed_tol: float = 0.8
    release_factor: float = 1.25
    min_contact_s: float = 0.03
    min_gap_s: float = 0.03
    floor_height: float | None = 0.0
    angular_momentum: bool = True
    free_moment: bool = True
    cop_lateral: bool = True
    min_force_frac: float = 0.05
    shear_toward_com: bool = True


@dataclass
class GroundForces:
    """Ground reaction loads on both feet, all in ground frame (OpenSim's y up).

    time (T,) s; force (T, 2, 3) N on foot [r, l]; cop (T, 2, 3) m centre of pressure (on the
    floor; held/interpolated between contacts where the force is zero); torque (T, 2, 3) N m free
    moment about the CoP (only y non-zero); contact (T, 2) bool; info: scalars describing the
    estimate (mass_kg, body_weight_n, floor_height_m, flight_frames, clipped_frames,
    com_accel_flight_error, ...).
    """

    time: np.ndarray
    force: np.ndarray
    cop: np.ndarray
    torque: np.ndarray
    contact: np.ndarray
    info: dict = field(default_factory=dict)

    def total_force(self) -> np.ndarray:
        """Sum over feet, (T, 3) N."""
        return self.force.sum(axis=1)


# --------------------------------------------------------------------------------------------
# contact detection


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """Half-open [start, stop) index runs where mask is True."""
    m = np.concatenate([[False], mask.astype(bool), [False]])
    d = np.diff(m.astype(int))
    return list(zip(np.flatnonzero(d == 1), np.flatnonzero(d == -1)))


def _clean(mask: np.ndarray, min_on: int, min_gap: int) -> np.ndarray:
    """Close gaps shorter than min_gap frames, then drop runs shorter than min_on frames."""
    out = mask.astype(bool).copy()
    for a, b in _runs(~out):
        if a > 0 and b < len(out) and b - a < min_gap:
            out[a:b] = True
    for a, b in _runs(out):
        if b - a < min_on:
            out[a:b] = False
    return out


def _hysteresis(enter: np.ndarray, stay: np.ndarray) -> np.ndarray:
    """Contact starts where `enter` holds and lasts while `stay` holds (enter implies stay)."""
    out = np.zeros(len(enter), dtype=bool)
    on = False
    for t in range(len(enter)):
        on = bool(enter[t]) or (on and bool(stay[t]))
        out[t] = on
    return out


def detect_contact(
    time: np.ndarray,
    heights: np.ndarray,
    speeds: np.ndarray,
    config: ContactConfig = ContactConfig(),
) -> tuple[np.ndarray, np.ndarray]:
    """Foot contact from contact-point kinematics.

    time (T,) s; heights (T, 2, P) m above the floor and speeds (T, 2, P) m/s of P contact points
    per foot [r, l]. Returns (foot contact (T, 2) bool, point down (T, 2, P) bool); a point counts
    as down only while its foot is in contact.
    """
    n = len(time)
    dt = float(np.median(np.diff(time))) if n > 1 else 1.0
    min_on = max(1, int(math.ceil(config.min_contact_s / dt - 1e-9)))
    min_gap = max(1, int(math.ceil(config.min_gap_s / dt - 1e-9)))
    f = config.release_factor
    enter_pt = (heights < config.height_tol) & (speeds < config.speed_tol)
    stay_pt = (heights < config.height_tol * f) & (speeds < config.speed_tol * f)
    contact = np.zeros((n, 2), dtype=bool)
    for i in range(2):
        raw = _hysteresis(enter_pt[:, i].any(axis=1), stay_pt[:, i].any(axis=1))
        contact[:, i] = _clean(raw, min_on, min_gap)
    down = stay_pt & contact[:, :, None]
    # A foot in contact (e.g. through a closed gap) with no point down: its lowest point is down.
    for i in range(2):
        none = contact[:, i] & ~down[:, i].any(axis=1)
        if none.any():
            low = np.argmin(heights[:, i], axis=1)
            down[none, i, low[none]] = True
    return contact, down


# --------------------------------------------------------------------------------------------
# estimation


def _uniform_rate(time: np.ndarray, path: Path | None) -> float:
    if len(time) < 4:
        raise InputFormatError(f"need at least 4 frames to estimate ground forces, got {len(time)}", path)
    dt = np.diff(time)
    step = float(np.median(dt))
    if step <= 0 or np.max(np.abs(dt - step)) > 0.01 * step:
        raise InputFormatError("coordinates must be sampled uniformly in time; resample first", path)
    return 1.0 / step


def _floor_projection(p: np.ndarray, floor: float) -> np.ndarray:
    q = np.array(p, dtype=float, copy=True)
    q[..., 1] = floor
    return q


def _nearest_on_sole(
    target: np.ndarray, heel: np.ndarray, toe: np.ndarray, heel_down: bool, toe_down: bool,
    half_width: float, lateral: bool,
) -> tuple[np.ndarray, bool]:
    """Nearest point to `target` (on the floor) of a foot's support area; (point, was_clipped).

    Both points down: the heel-toe segment, widened by +-half_width when `lateral`. Only one
    point down: that point.
    """
    if heel_down and not toe_down:
        return heel.copy(), True
    if toe_down and not heel_down:
        return toe.copy(), True
    axis = toe - heel
    length = float(np.hypot(axis[0], axis[2]))
    if length < 1e-9:
        return heel.copy(), True
    u = np.array([axis[0], 0.0, axis[2]]) / length
    n = np.array([-u[2], 0.0, u[0]])
    d = target - heel
    s = float(d[0] * u[0] + d[2] * u[2])
    lat = float(d[0] * n[0] + d[2] * n[2])
    s_c = min(max(s, 0.0), length)
    lat_c = min(max(lat, -half_width), half_width) if lateral else 0.0
    p = heel + s_c * u + lat_c * n
    clipped = (s_c != s) or (abs(lat_c - lat) > 1e-12)
    return p, clipped


def _fill_between_contacts(cop: np.ndarray, contact: np.ndarray) -> np.ndarray:
    """Replace CoP outside contact by linear interpolation between contacts (held at the ends)."""
    out = cop.copy()
    for i in range(cop.shape[1]):
        on = np.flatnonzero(contact[:, i])
        off = np.flatnonzero(~contact[:, i])
        if off.size == 0:
            continue
        if on.size == 0:
            continue  # never in contact: keep the foot's projection supplied by the caller
        for k in range(3):
            out[off, i, k] = np.interp(off, on, cop[on, i, k])
    return out


def estimate_grf(
    model_osim: str | Path | None,
    coordinates: pd.DataFrame,
    *,
    cutoff_hz: float,
    contact: ContactConfig = ContactConfig(),
) -> GroundForces:
    """Estimate ground reaction forces on both feet from (filtered) kinematics alone.

    model_osim: the (scaled) .osim; coordinates: index time (s, uniform), columns coordinate names,
    radians / metres, already low-passed at `cutoff_hz`. The total force m (a_com - g) is low-passed
    with the same `cutoff_hz`. Vertical force is >= 0 everywhere (negative values in contact are
    clipped to zero force and counted) and exactly zero when no foot is in contact.
    See the module docstring and docs/ground_forces.md for the contact, CoP and load-sharing rules.
    """
    path = Path(model_osim) if model_osim is not None else None
    time = np.asarray(coordinates.index, dtype=float)
    rate = _uniform_rate(time, path)
    cfg = contact
    model = load_model(path)
    state = model.initSystem()
    mass = float(model.getTotalMass(state))
    gv = model.getGravity()
    gravity = np.array([gv.get(0), gv.get(1), gv.get(2)])
    weight = mass * float(np.linalg.norm(gravity))
    feet = foot_geometry(path)

    points = {}
    for side in FEET:
        fg = feet[side]
        points[f"heel_{side}"] = (fg.heel_body, fg.heel)
        points[f"toe_{side}"] = (fg.toe_body, fg.toe)
    fk = forward_kinematics(path, coordinates, points=points, joints=(), com=True,
                            angular_momentum=cfg.angular_momentum)
    com = fk["com"]
    # Contact points: (T, 2 feet, 2 points [heel, toe], 3)
    pts = np.stack([np.stack([fk[f"heel_{s}"], fk[f"toe_{s}"]], axis=1) for s in FEET], axis=1)
    speeds = np.linalg.norm(np.gradient(pts, time, axis=0, edge_order=2), axis=-1)  # (T, 2, 2)

    if cfg.floor_height is None:
        slow = speeds < cfg.speed_tol
        lowest_slow = np.where(slow, pts[..., 1], np.inf).min(axis=(1, 2))
        finite = np.isfinite(lowest_slow)
        floor = float(np.median(lowest_slow[finite])) if finite.any() else float(pts[..., 1].min())
    else:
        floor = float(cfg.floor_height)
    heights = pts[..., 1] - floor
    in_contact, down = detect_contact(time, heights, speeds, cfg)

    # Total external force from COM acceleration, low-passed with the kinematics' cutoff.
    acc = np.gradient(np.gradient(com, time, axis=0, edge_order=2), time, axis=0, edge_order=2)
    total = lowpass(mass * (acc - gravity), rate, cutoff_hz)
    if cfg.angular_momentum:
        dh = lowpass(np.gradient(fk["angular_momentum"], time, axis=0, edge_order=2), rate, cutoff_hz)
    else:
        dh = np.zeros_like(total)

    n = len(time)
    any_contact = in_contact.any(axis=1)
    flight = ~any_contact
    flight_err = float(np.mean(np.linalg.norm(acc[flight] - gravity, axis=1))) if flight.any() else float("nan")
    neg = any_contact & (total[:, 1] < 0.0)
    total[neg] = 0.0
    total[flight] = 0.0

    force = np.zeros((n, 2, 3))
    cop = np.zeros((n, 2, 3))
    torque = np.zeros((n, 2, 3))
    cop_clipped = 0
    low_force = cfg.min_force_frac * weight
    for t in range(n):
        if not any_contact[t]:
            continue
        f = total[t]
        c = com[t]
        ry = floor - c[1]
        if f[1] > low_force:
            rx = (dh[t, 2] + ry * f[0]) / f[1]
            rz = (ry * f[2] - dh[t, 0]) / f[1]
        else:
            rx = rz = 0.0
        p_tot = np.array([c[0] + rx, floor, c[2] + rz])
        feet_on = [i for i in range(2) if in_contact[t, i]]
        foot_cop = {}
        for i in feet_on:
            heel = _floor_projection(pts[t, i, 0], floor)
            toe = _floor_projection(pts[t, i, 1], floor)
            lateral = cfg.cop_lateral and len(feet_on) == 1
            foot_cop[i], clipped = _nearest_on_sole(p_tot, heel, toe, bool(down[t, i, 0]), bool(down[t, i, 1]),
                                                    feet[FEET[i]].half_width, lateral)
            if len(feet_on) == 1 and clipped:
                cop_clipped += 1
        if len(feet_on) == 1:
            shares = {feet_on[0]: 1.0}
        else:
            a, b = foot_cop[0], foot_cop[1]
            d = a - b
            dd = float(d[0] ** 2 + d[2] ** 2)
            w = 0.5 if dd < 1e-12 else float(((p_tot - b)[0] * d[0] + (p_tot - b)[2] * d[2]) / dd)
            w = min(max(w, 0.0), 1.0)
            shares = {0: w, 1: 1.0 - w}
        for i, w in shares.items():
            force[t, i] = w * f
            cop[t, i] = foot_cop[i]
        if len(feet_on) == 2 and cfg.shear_toward_com and c[1] - floor > 1e-6:
            # Horizontal split: each foot's force points at the COM, the leftover (total minus the
            # sum) is shared like the vertical force. The x/z moments about the COM do not depend
            # on this split (both CoPs lie on the floor); only the vertical free moment does.
            for k in (0, 2):
                toward = [force[t, i, 1] * (c[k] - foot_cop[i][k]) / (c[1] - floor) for i in (0, 1)]
                rest = f[k] - toward[0] - toward[1]
                for i in (0, 1):
                    force[t, i, k] = toward[i] + shares[i] * rest
        moment_y = 0.0
        for i in shares:
            r = foot_cop[i] - c
            moment_y += r[2] * force[t, i, 0] - r[0] * force[t, i, 2]
        if cfg.free_moment:
            ty = dh[t, 1] - moment_y
            for i, w in shares.items():  # split like the vertical force
                torque[t, i, 1] = w * ty

    # Keep the CoP defined where a foot is off the ground (zero force): interpolate between
    # contacts so that OpenSim's splines of the point data do not ring; never in contact: the
    # foot's own floor projection.
    for i in range(2):
        if not in_contact[:, i].any():
            cop[:, i] = _floor_projection(0.5 * (pts[:, i, 0] + pts[:, i, 1]), floor)
    cop = _fill_between_contacts(cop, in_contact)

    info = {
        "mass_kg": mass,
        "body_weight_n": weight,
        "floor_height_m": floor,
        "cutoff_hz": float(cutoff_hz),
        "rate_hz": rate,
        "frames": n,
        "flight_frames": int(flight.sum()),
        "double_support_frames": int(in_contact.all(axis=1).sum()),
        "contact_frames_r": int(in_contact[:, 0].sum()),
        "contact_frames_l": int(in_contact[:, 1].sum()),
        "clipped_frames": int(neg.sum()),
        "cop_clipped_frames": int(cop_clipped),
        "com_accel_flight_error": flight_err,
        "free_moment": bool(cfg.free_moment),
    }
    return GroundForces(time=time, force=force, cop=cop, torque=torque, contact=in_contact, info=info)


# --------------------------------------------------------------------------------------------
# OpenSim files

GRF_COLUMNS: tuple[str, ...] = tuple(
    f"{prefix}_{side}_{suffix}"
    for side in FEET
    for prefix, suffixes in (("ground_force", ("vx", "vy", "vz", "px", "py", "pz")), ("ground_torque", ("x", "y", "z")))
    for suffix in suffixes
)
"""Data columns of a biohuman GRF .mot (after `time`), as in OpenSim's example GRF files."""


def _grf_matrix(gf: GroundForces) -> np.ndarray:
    cols = []
    for i in range(2):
        cols += [gf.force[:, i], gf.cop[:, i], gf.torque[:, i]]
    return np.column_stack([gf.time] + cols)


def write_grf_mot(path: str | Path, gf: GroundForces) -> Path:
    """Write GroundForces as an OpenSim Storage .mot (atomic): time, then per foot r, l:
    ground_force_{s}_v{x,y,z} (N), ground_force_{s}_p{x,y,z} (m, ground), ground_torque_{s}_{x,y,z}
    (N m). Returns the path."""
    path = Path(path)
    data = _grf_matrix(gf)
    if not np.all(np.isfinite(data)):
        raise InputFormatError("ground forces contain NaN or inf; refusing to write", path)
    header = (
        f"{path.stem}\nversion=1\nnRows={data.shape[0]}\nnColumns={data.shape[1]}\ninDegrees=no\nendheader\n"
        + "\t".join(("time",) + GRF_COLUMNS)
        + "\n"
    )
    body = "\n".join("\t".join(f"{v:.10g}" for v in row) for row in data)
    atomic_write_text(path, header + body + "\n")
    return path


def write_external_loads_xml(
    xml_path: str | Path,
    grf_mot_path: str | Path,
    *,
    bodies: Mapping[str, str] | None = None,
    relative: bool = True,
) -> Path:
    """Write an OpenSim ExternalLoads XML (atomic) applying the .mot's two feet loads.

    Two ExternalForce entries (`right`, `left`) apply ground_force_{s}_v / _p / ground_torque_{s}_
    to bodies[s] (default calcn_r / calcn_l), force and point expressed in ground. The datafile is
    written relative to the XML's folder when `relative` (OpenSim resolves it first against the
    working directory, then against the XML's folder), else absolute. Returns the XML path.
    """
    osim = opensim()
    xml_path = Path(xml_path)
    mot = Path(grf_mot_path)
    bodies = dict(bodies) if bodies is not None else {"r": "calcn_r", "l": "calcn_l"}
    if set(bodies) != set(FEET):
        raise InputFormatError(f"bodies must map 'r' and 'l' to body names, got {bodies}", xml_path)
    if relative:
        datafile = os.path.relpath(mot.resolve(), xml_path.resolve().parent)
    else:
        datafile = str(mot.resolve())
    loads = osim.ExternalLoads()
    loads.setName(xml_path.stem)
    for side, name in (("r", "right"), ("l", "left")):
        ef = osim.ExternalForce()
        ef.setName(name)
        ef.set_applied_to_body(bodies[side])
        ef.set_force_expressed_in_body("ground")
        ef.set_point_expressed_in_body("ground")
        ef.set_force_identifier(f"ground_force_{side}_v")
        ef.set_point_identifier(f"ground_force_{side}_p")
        ef.set_torque_identifier(f"ground_torque_{side}_")
        loads.cloneAndAppend(ef)
    loads.setDataFileName(datafile)
    with atomic_path(xml_path) as tmp:
        loads.printToXML(str(tmp))
    return xml_path


def _read_table(path: Path) -> pd.DataFrame:
    osim = opensim()
    try:
        table = osim.TimeSeriesTable(str(path))
    except Exception as exc:  # OpenSim raises RuntimeError with its own message
        raise InputFormatError(f"OpenSim could not read the table: {exc}", path) from exc
    labels = list(table.getColumnLabels())
    data = table.getMatrix().to_numpy() if table.getNumRows() else np.zeros((0, len(labels)))
    return pd.DataFrame(data, index=np.asarray(table.getIndependentColumn(), dtype=float), columns=labels)


def load_measured_grf(
    mot_path: str | Path,
    external_loads_xml: str | Path,
    *,
    contact_threshold_n: float = 20.0,
) -> GroundForces:
    """Read measured GRF through the ExternalLoads XML that describes it.

    Each ExternalForce is assigned to foot r or l by its applied_to_body suffix (`_r` / `_l`);
    several plates on one foot are summed, their CoP averaged weighted by vertical force, their
    torques summed (an approximation when several plates load one foot). Points and forces must be
    expressed in ground. contact = vertical force > contact_threshold_n.
    """
    osim = opensim()
    mot_path, xml = Path(mot_path), Path(external_loads_xml)
    try:
        loads = osim.ExternalLoads(str(xml), True)
    except Exception as exc:
        raise InputFormatError(f"OpenSim could not read the ExternalLoads XML: {exc}", xml) from exc
    df = _read_table(mot_path)
    n = len(df)
    force = np.zeros((n, 2, 3))
    moment_p = np.zeros((n, 2, 3))  # sum of p * Fy for the weighted CoP
    fy_sum = np.zeros((n, 2))
    torque = np.zeros((n, 2, 3))
    for k in range(loads.getSize()):
        ef = loads.get(k)
        body = ef.get_applied_to_body()
        side = "r" if body.endswith("_r") else "l" if body.endswith("_l") else None
        if side is None:
            raise InputFormatError(f"cannot tell the foot of ExternalForce {ef.getName()} on body {body}", xml)
        if ef.get_force_expressed_in_body() != "ground" or ef.get_point_expressed_in_body() != "ground":
            raise InputFormatError(f"ExternalForce {ef.getName()}: force and point must be expressed in ground", xml)
        i = FEET.index(side)
        fid, pid, tid = ef.get_force_identifier(), ef.get_point_identifier(), ef.get_torque_identifier()

        def cols(prefix: str, suffixes: tuple[str, str, str]) -> np.ndarray:
            names = [prefix + s for s in suffixes]
            missing = [c for c in names if c not in df.columns]
            if missing:
                raise InputFormatError(f"columns {missing} named by {xml.name} are missing", mot_path)
            return df[names].to_numpy(dtype=float)

        f = cols(fid, ("x", "y", "z"))
        p = cols(pid, ("x", "y", "z"))
        force[:, i] += f
        w = np.clip(f[:, 1], 0.0, None)
        moment_p[:, i] += p * w[:, None]
        fy_sum[:, i] += w
        if tid:
            torque[:, i] += cols(tid, ("x", "y", "z"))
    cop = np.where(fy_sum[..., None] > 1e-9, moment_p / np.maximum(fy_sum, 1e-9)[..., None], 0.0)
    contact = force[:, :, 1] > contact_threshold_n
    cop = _fill_between_contacts(cop, contact)
    info = {"source": str(mot_path), "contact_threshold_n": contact_threshold_n}
    return GroundForces(time=df.index.to_numpy(dtype=float), force=force, cop=cop, torque=torque,
                        contact=contact, info=info)
