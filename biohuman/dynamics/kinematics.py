"""Forward kinematics with OpenSim: ground positions of body-fixed points, joint centres, the
whole-body centre of mass and (for ground-force estimation) the central angular momentum.

Coordinates come as a DataFrame: index = time (s, increasing), columns = coordinate names (plain
`hip_flexion_r` or OpenSim state paths `/jointset/hip_r/hip_flexion_r/value`), rotational values in
radians, translational in metres. Model coordinates missing from the frame keep their default
value; locked coordinates always keep their default. Coupled (dependent) coordinates such as
`knee_angle_r_beta` are recomputed from their CoordinateCouplerConstraint function, so that they
satisfy the constraint exactly whether or not the frame contains them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from biohuman.errors import InputFormatError, UnitsError
from biohuman.osim.model import coordinate_couplers, load_model, opensim

# Friendly names for the joints of Rajagopal2015-like models; other joints keep their own name.
JOINT_ALIASES: dict[str, str] = {
    "ground_pelvis": "pelvis",
    "walker_knee_r": "knee_r",
    "walker_knee_l": "knee_l",
    "patellofemoral_r": "patella_r",
    "patellofemoral_l": "patella_l",
    "back": "lumbar",
    "acromial_r": "shoulder_r",
    "acromial_l": "shoulder_l",
    "radius_hand_r": "wrist_r",
    "radius_hand_l": "wrist_l",
}


def coordinate_name(column: str) -> str | None:
    """Coordinate name of a column: `hip_flexion_r` or `/jointset/hip_r/hip_flexion_r/value`.

    Returns None for speed columns (`.../speed`), which forward kinematics does not need.
    """
    if column.startswith("/"):
        parts = column.strip("/").split("/")
        if parts[-1] == "speed":
            return None
        if parts[-1] == "value":
            parts = parts[:-1]
        return parts[-1]
    return column


@dataclass
class _Posed:
    """A model plus per-frame values of the coordinates to set (private helper of this module)."""

    model: object
    state: object
    coords: list  # opensim Coordinate objects, in the column order of `values`
    values: np.ndarray  # (T, K)
    time: np.ndarray  # (T,)
    path: Path


def _prepare(model_osim: str | Path | None, coordinates: pd.DataFrame) -> _Posed:
    """Load the model and turn the coordinate frame into a (T, K) value matrix for settable coords."""
    osim = opensim()
    path = Path(model_osim) if model_osim is not None else None
    model = load_model(path)
    state = model.initSystem()
    if not isinstance(coordinates, pd.DataFrame) or coordinates.shape[0] == 0:
        raise InputFormatError("coordinates must be a non-empty DataFrame (index time s, columns coordinates)", path)
    time = np.asarray(coordinates.index, dtype=float)
    if time.size > 1 and not np.all(np.diff(time) > 0):
        raise InputFormatError("coordinate time index must be strictly increasing", path)

    cs = model.getCoordinateSet()
    model_names = [cs.get(i).getName() for i in range(cs.getSize())]
    data: dict[str, np.ndarray] = {}
    unknown = []
    for col in coordinates.columns:
        name = coordinate_name(str(col))
        if name is None:
            continue
        if name not in model_names:
            unknown.append(str(col))
            continue
        data[name] = np.asarray(coordinates[col], dtype=float)
    if unknown:
        raise InputFormatError(f"columns are not coordinates of the model: {unknown[:10]}", path)

    # Dependent coordinates: evaluate their coupler function on the independent values.
    for cc in coordinate_couplers(model):
        if not cc.enforced:
            continue
        indep = list(cc.independent)
        if not all(n in data for n in indep):
            continue
        fn = cc.function
        lin = osim.LinearFunction.safeDownCast(fn)
        if lin is not None and len(indep) == 1:
            data[cc.dependent] = lin.getSlope() * data[indep[0]] + lin.getIntercept()
        else:
            x = np.column_stack([data[n] for n in indep])
            vec = osim.Vector(len(indep), 0.0)
            dep = np.empty(len(time))
            for t in range(len(time)):
                for j in range(len(indep)):
                    vec.set(j, float(x[t, j]))
                dep[t] = fn.calcValue(vec)
            data[cc.dependent] = dep

    coords, cols = [], []
    for name, values in data.items():
        c = cs.get(name)
        if c.getLocked(state):
            continue
        if not np.all(np.isfinite(values)):
            raise InputFormatError(f"coordinate {name} contains NaN or inf", path)
        if c.getMotionType() != 2 and c.getJoint().getName() != "ground_pelvis" and np.max(np.abs(values)) > 2 * np.pi:
            raise UnitsError(
                f"rotational coordinate {name} reaches {np.max(np.abs(values)):.1f}; expected radians (degrees given?)",
                path,
            )
        coords.append(c)
        cols.append(values)
    values = np.column_stack(cols) if cols else np.zeros((len(time), 0))
    return _Posed(model=model, state=state, coords=coords, values=values, time=time,
                  path=path if path is not None else Path("Rajagopal2015"))


def forward_kinematics(
    model_osim: str | Path | None,
    coordinates: pd.DataFrame,
    *,
    points: Mapping[str, tuple[str, Sequence[float]]] | None = None,
    joints: Sequence[str] | None = (),
    com: bool = False,
    angular_momentum: bool = False,
) -> dict[str, np.ndarray]:
    """One pass of OpenSim forward kinematics over all frames.

    model_osim: .osim path (None: generic Rajagopal2015). coordinates: see module docstring.
    points: name -> (body name, (3,) position in that body's frame, m).
    joints: joint names or friendly aliases (JOINT_ALIASES); None = all joints of the model.
    com: add key "com" -> (T, 3) whole-body centre of mass in ground (m).
    angular_momentum: add key "angular_momentum" -> (T, 3) whole-body angular momentum about the
    centre of mass, in ground (kg m^2/s), with speeds from central differences of the coordinates.
    Returns name -> (T, 3) ground positions (m) for every point and joint (friendly names).
    """
    osim = opensim()
    posed = _prepare(model_osim, coordinates)
    model, state = posed.model, posed.state
    bodies = model.getBodySet()
    out: dict[str, np.ndarray] = {}

    point_objs = []
    for name, (body, loc) in (points or {}).items():
        if not bodies.contains(body):
            raise InputFormatError(f"point {name!r}: body {body!r} is not in the model", posed.path)
        loc = np.asarray(loc, dtype=float).reshape(3)
        point_objs.append((name, bodies.get(body), osim.Vec3(*loc)))

    joint_objs = []
    js = model.getJointSet()
    all_joints = [js.get(i).getName() for i in range(js.getSize())]
    reverse = {alias: name for name, alias in JOINT_ALIASES.items()}
    wanted = all_joints if joints is None else list(joints)
    for j in wanted:
        name = j if j in all_joints else reverse.get(j)
        if name is None or name not in all_joints:
            raise InputFormatError(f"joint {j!r} is not in the model (joints: {all_joints})", posed.path)
        joint_objs.append((JOINT_ALIASES.get(name, name), js.get(name).getChildFrame()))

    n = len(posed.time)
    results = {name: np.empty((n, 3)) for name, _, _ in point_objs}
    results.update({name: np.empty((n, 3)) for name, _ in joint_objs})
    if com:
        results["com"] = np.empty((n, 3))
    speeds = None
    if angular_momentum:
        results["angular_momentum"] = np.empty((n, 3))
        speeds = np.gradient(posed.values, posed.time, axis=0, edge_order=2) if n > 2 else np.zeros_like(posed.values)

    coords = posed.coords
    values = posed.values
    for t in range(n):
        row = values[t]
        for k, c in enumerate(coords):
            c.setValue(state, float(row[k]), False)
        if speeds is not None:
            srow = speeds[t]
            for k, c in enumerate(coords):
                c.setSpeedValue(state, float(srow[k]))
            model.realizeVelocity(state)
        else:
            model.realizePosition(state)
        for name, body, loc in point_objs:
            v = body.findStationLocationInGround(state, loc)
            results[name][t] = (v.get(0), v.get(1), v.get(2))
        for name, frame in joint_objs:
            v = frame.getPositionInGround(state)
            results[name][t] = (v.get(0), v.get(1), v.get(2))
        if com:
            v = model.calcMassCenterPosition(state)
            results["com"][t] = (v.get(0), v.get(1), v.get(2))
        if speeds is not None:
            h = model.calcAngularMomentum(state)
            results["angular_momentum"][t] = (h.get(0), h.get(1), h.get(2))
    out.update(results)
    return out


def body_kinematics(
    model_osim: str | Path | None,
    coordinates: pd.DataFrame,
    points: Mapping[str, tuple[str, Sequence[float]]],
) -> dict[str, np.ndarray]:
    """Ground positions (m) of body-fixed points: name -> (T, 3).

    points: name -> (body name, (3,) location in the body frame, m), e.g. a model marker.
    """
    return forward_kinematics(model_osim, coordinates, points=points, joints=())


def center_of_mass(model_osim: str | Path | None, coordinates: pd.DataFrame) -> np.ndarray:
    """Whole-body centre of mass in ground (m), (T, 3)."""
    return forward_kinematics(model_osim, coordinates, joints=(), com=True)["com"]


def joint_centers(
    model_osim: str | Path | None,
    coordinates: pd.DataFrame,
    joints: Sequence[str] | None = None,
) -> dict[str, np.ndarray]:
    """Ground position (m) of each joint's child-frame origin: friendly name -> (T, 3).

    joints: model joint names or aliases (`knee_r` for walker_knee_r, `shoulder_r` for acromial_r,
    `wrist_r` for radius_hand_r, `lumbar` for back, `pelvis` for ground_pelvis); None = all joints.
    """
    return forward_kinematics(model_osim, coordinates, joints=joints)
