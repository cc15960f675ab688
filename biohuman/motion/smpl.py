"""SMPL / SMPL-H / SMPL-X parameter sequences (AMASS layout) -> virtual skin markers for OpenSim.

The user supplies the body-model file (licence-gated: never shipped, never downloaded). Only
`.npz` model files are read: the original `.pkl` files pickle `chumpy` objects, and chumpy does
not import on modern numpy.

Skinning is `smplx`'s own linear-blend skinning (`smplx.lbs`: shape blend shapes, pose blend
shapes, joint regression, rigid transforms along the kinematic tree). The `smplx.SMPL` class is
not used because it only loads `.pkl` files, and `smplx.SMPLH` / `smplx.SMPLX` also require
hand-PCA and face-landmark arrays that markers do not need; the npz is read here and its arrays
are passed to the `smplx.lbs` building blocks. Only the vertices that markers, their normals and
floor detection need are skinned (all of them with `BodyModel.forward`).

Conventions
- Model frame (SMPL canonical): y up, z forward (the way the body faces at zero pose), x to the
  body's left; metres. AMASS sequences are Z-up: their root orientation carries the rotation.
- Output frame (OpenSim): y up; AMASS's Z-up world is turned into Y-up by a rotation of -90 deg
  about x, (x, y, z) -> (x, z, -y); with `align_heading` the result is also turned about the
  vertical so that the body faces +x at the first frame (OpenSim's forward), and moved so that the
  root joint starts above the origin.
- The floor is detected from the lowest foot vertices over the sequence and moved to y = 0.
- Markers: a vertex (or a weighted set of vertices: barycentric on a face) plus an offset along
  the surface normal for the marker's radius and base (skin-marker thickness).
"""

from __future__ import annotations

import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from biohuman.errors import ConfigError, InputFormatError
from biohuman.io.trc import MarkerData

MODEL_KEYS = ("v_template", "shapedirs", "posedirs", "J_regressor", "weights", "kintree_table", "f")
"""Arrays a body-model .npz must hold (the SMPL family's own key names)."""

N_BODY_JOINTS = 22
"""Joints shared by SMPL, SMPL-H and SMPL-X: root + 21 body joints (66 pose values)."""

KIND_BY_JOINTS = {24: "smpl", 52: "smplh", 55: "smplx"}
"""Model family by joint count (SMPL: 2 hand joints; SMPL-H: 2 x 15 finger joints; SMPL-X:
jaw, 2 eyes, 2 x 15 finger joints)."""

POSE_WIDTH_LAYOUT = {72: "smpl", 156: "smplh", 165: "smplx"}
"""AMASS `poses` width (joints x 3 axis-angle values) -> layout."""

FOOT_JOINTS = (7, 8, 10, 11)
"""Ankles and feet (same indices in the three families): their vertices define the floor."""

SHOULDER_JOINTS = {"l": 16, "r": 17}

Z_UP_TO_Y_UP = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]])
"""Rotation of -90 deg about x: AMASS's Z-up world -> Y-up, p' = R p."""

MODEL_TO_OPENSIM = np.array([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [-1.0, 0.0, 0.0]])
"""SMPL canonical frame (x left, y up, z forward) -> OpenSim (x forward, y up, z right)."""

DEFAULT_MARKER_OFFSET_M = 0.0095
"""Marker centre above the skin when a mapping gives none: MoSh's marker-to-body distance."""


# ---------------------------------------------------------------------------------------------
# Body model


@dataclass
class BodyModel:
    """Arrays of an SMPL-family body model (float64, metres).

    v_template (V, 3); shapedirs (V, 3, B); posedirs (V, 3, 9 (J-1)) as stored; J_regressor
    (J, V); weights (V, J); parents (J,) with -1 at the root; faces (F, 3).
    """

    path: Path
    v_template: np.ndarray
    shapedirs: np.ndarray
    posedirs: np.ndarray
    J_regressor: np.ndarray
    weights: np.ndarray
    parents: np.ndarray
    faces: np.ndarray
    gender: str = "neutral"

    @property
    def n_vertices(self) -> int:
        return int(self.v_template.shape[0])

    @property
    def n_joints(self) -> int:
        return int(self.J_regressor.shape[0])

    @property
    def n_betas(self) -> int:
        return int(self.shapedirs.shape[2])

    @property
    def kind(self) -> str:
        """'smpl', 'smplh', 'smplx' by joint count, else 'custom'."""
        return KIND_BY_JOINTS.get(self.n_joints, "custom")

    def fit_betas(self, betas: np.ndarray | Sequence[float] | None) -> tuple[np.ndarray, list[str]]:
        """Shape coefficients (B,) for this model: extra ones dropped, missing ones zero."""
        b = np.zeros(self.n_betas) if betas is None else np.asarray(betas, dtype=float).reshape(-1)
        notes = []
        if b.size > self.n_betas:
            if np.any(b[self.n_betas:] != 0):
                notes.append(f"{b.size} betas given, the body model has {self.n_betas}: the rest were dropped")
            b = b[: self.n_betas]
        elif b.size < self.n_betas:
            b = np.concatenate([b, np.zeros(self.n_betas - b.size)])
        return b, notes

    def forward(self, poses: np.ndarray, betas: np.ndarray | None = None, trans: np.ndarray | None = None,
                vertices: np.ndarray | None = None, chunk: int = 64) -> tuple[np.ndarray, np.ndarray]:
        """Posed vertices and joints in the model's world frame (metres).

        poses: (T, 3 J) axis-angle (radians) in this model's joint order. betas: (B,) shape.
        trans: (T, 3) root translation. vertices: indices to skin (default all). Returns
        (T, len(vertices), 3) and (T, J, 3).
        """
        return _skin(self, poses, betas, trans, vertices, chunk)


def _npz_arrays(path: Path) -> dict[str, np.ndarray]:
    """Read every array of an .npz; object arrays (e.g. a sparse J_regressor) are unpickled only
    when plain loading fails, and a chumpy dependency is reported as such."""
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise InputFormatError(f"not a readable .npz file ({exc})", path) from exc
    out: dict[str, np.ndarray] = {}
    with data:
        for key in data.files:
            try:
                out[key] = data[key]
            except ValueError:  # object array: needs pickle
                out[key] = None  # type: ignore[assignment]
    pickled = [k for k, v in out.items() if v is None]
    if pickled:
        try:
            with np.load(path, allow_pickle=True, encoding="latin1") as data:
                for key in pickled:
                    out[key] = data[key]
        except (ModuleNotFoundError, ImportError) as exc:
            raise InputFormatError(
                f"arrays {pickled} are pickled objects that need a missing module ({exc}); chumpy-based "
                "model files do not load on modern numpy: convert them to plain arrays", path) from exc
    return out


def _dense(name: str, value: object, path: Path) -> np.ndarray:
    """A plain float/int array from an npz entry (sparse matrices and 0-d object arrays too)."""
    v = value
    if isinstance(v, np.ndarray) and v.dtype == object and v.ndim == 0:
        v = v.item()
    if hasattr(v, "toarray"):
        v = v.toarray()
    if type(v).__module__.startswith("chumpy"):
        raise InputFormatError(f"'{name}' is a chumpy object; convert the model to plain numpy arrays", path)
    try:
        return np.asarray(v)
    except Exception as exc:  # noqa: BLE001
        raise InputFormatError(f"'{name}' is not an array ({type(v).__name__})", path) from exc


def _find_model_file(folder: Path, gender: str) -> Path:
    """The .npz for `gender` in a folder of body models (AMASS `<gender>/model.npz` or
    `SMPL*_<GENDER>.npz` naming)."""
    g = gender.lower()
    candidates = [folder / g / "model.npz", *sorted(folder.glob(f"*_{g.upper()}.npz")),
                  *sorted(folder.glob(f"*_{g}.npz"))]  # never a bare *male* glob: it matches female
    for c in candidates:
        if c.is_file():
            return c
    if g != "neutral":  # no model of that gender: the neutral one, when present
        try:
            return _find_model_file(folder, "neutral")
        except ConfigError:
            pass
    found = sorted(p.name for p in folder.rglob("*.npz"))[:10]
    pkl = sorted(p.name for p in folder.rglob("*.pkl"))[:5]
    hint = f"; only .pkl files found ({pkl}): they need chumpy, convert them to .npz" if pkl and not found else ""
    raise ConfigError(f"no {g} body model (.npz) in this folder (found {found}){hint}", folder)


def load_body_model(path: str | Path, gender: str | None = None) -> BodyModel:
    """Load an SMPL / SMPL-H / SMPL-X body model from an .npz (or a folder holding one per gender).

    gender: picks the file inside a folder (default 'neutral'); for a file it is only recorded
    (the file's own 'gender' entry wins when present). Raises InputFormatError for .pkl files
    (chumpy), unreadable files, missing keys or inconsistent shapes; ConfigError when the path
    does not exist.
    """
    path = Path(path)
    if path.is_dir():
        path = _find_model_file(path, gender or "neutral")
    if path.suffix.lower() == ".pkl":
        raise InputFormatError(
            "SMPL .pkl model files pickle chumpy objects, and chumpy does not work with modern numpy; "
            "use the .npz release of the model (SMPL-H/SMPL-X ship one) or convert the .pkl to an .npz "
            f"with plain arrays ({', '.join(MODEL_KEYS)})", path)
    if not path.is_file():
        raise ConfigError("body model file does not exist (SMPL files are licence-gated: supply your own)", path)
    raw = _npz_arrays(path)
    missing = [k for k in MODEL_KEYS if k not in raw]
    if missing:
        raise InputFormatError(f"body model lacks required arrays {missing} (has {sorted(raw)})", path)
    a = {k: _dense(k, raw[k], path) for k in MODEL_KEYS}
    v = a["v_template"].astype(float)
    if v.ndim != 2 or v.shape[1] != 3 or v.shape[0] < 1:
        raise InputFormatError(f"v_template must be (V, 3), got {v.shape}", path)
    nv = v.shape[0]
    sd = a["shapedirs"].astype(float)
    if sd.ndim == 2 and sd.shape[0] == nv * 3:
        sd = sd.reshape(nv, 3, -1)
    jr = a["J_regressor"].astype(float)
    nj = jr.shape[0] if jr.ndim == 2 else -1
    w = a["weights"].astype(float)
    kt = a["kintree_table"].astype(np.int64)
    pd_ = a["posedirs"].astype(float)
    f = a["f"].astype(np.int64)
    problems = []
    if sd.ndim != 3 or sd.shape[:2] != (nv, 3):
        problems.append(f"shapedirs {sd.shape} (expected ({nv}, 3, B))")
    if jr.ndim != 2 or jr.shape[1] != nv:
        problems.append(f"J_regressor {jr.shape} (expected (J, {nv}))")
    if w.shape != (nv, nj):
        problems.append(f"weights {w.shape} (expected ({nv}, {nj}))")
    if kt.ndim != 2 or kt.shape[1] != nj:
        problems.append(f"kintree_table {kt.shape} (expected (2, {nj}))")
    if pd_.size != nv * 3 * 9 * (nj - 1):
        problems.append(f"posedirs {pd_.shape} (expected ({nv}, 3, {9 * (nj - 1)}))")
    if f.ndim != 2 or f.shape[1] != 3 or (f.size and (f.min() < 0 or f.max() >= nv)):
        problems.append(f"f {f.shape} (expected (F, 3) vertex indices < {nv})")
    if problems:
        raise InputFormatError("body model arrays are inconsistent: " + "; ".join(problems), path)
    parents = kt[0].copy()
    parents[0] = -1
    if np.any(parents[1:] < 0) or np.any(parents[1:] >= np.arange(1, nj)):
        raise InputFormatError("kintree_table must list each joint's parent before the joint", path)
    g = _scalar_str(raw["gender"]).lower() if raw.get("gender") is not None else None
    return BodyModel(path=path, v_template=v, shapedirs=sd, posedirs=pd_.reshape(nv, 3, -1), J_regressor=jr,
                     weights=w, parents=parents, faces=f, gender=g or (gender or "neutral").lower())


def _skin(model: BodyModel, poses: np.ndarray, betas: np.ndarray | None, trans: np.ndarray | None,
          vertices: np.ndarray | None, chunk: int) -> tuple[np.ndarray, np.ndarray]:
    """Linear-blend skinning with smplx's building blocks, restricted to `vertices`."""
    import torch
    from smplx.lbs import batch_rigid_transform, batch_rodrigues, blend_shapes, vertices2joints

    poses = np.asarray(poses, dtype=float)
    if poses.ndim != 2 or poses.shape[1] != 3 * model.n_joints:
        raise InputFormatError(f"poses must be (T, {3 * model.n_joints}) for this model, got {poses.shape}",
                               model.path)
    T = poses.shape[0]
    b, _ = model.fit_betas(betas)
    trans = np.zeros((T, 3)) if trans is None else np.asarray(trans, dtype=float).reshape(T, 3)
    idx = np.arange(model.n_vertices) if vertices is None else np.asarray(vertices, dtype=np.int64)
    dt = torch.float64
    with torch.no_grad():
        shaped = torch.as_tensor(model.v_template, dtype=dt)[None] + blend_shapes(
            torch.as_tensor(b, dtype=dt)[None], torch.as_tensor(model.shapedirs, dtype=dt))
        J = vertices2joints(torch.as_tensor(model.J_regressor, dtype=dt), shaped)  # (1, J, 3)
        v_shaped = shaped[:, idx]  # (1, S, 3)
        posedirs = torch.as_tensor(model.posedirs[idx].reshape(-1, model.posedirs.shape[2]).T, dtype=dt)
        W = torch.as_tensor(model.weights[idx], dtype=dt)  # (S, J)
        parents = torch.as_tensor(model.parents, dtype=torch.long)
        ident = torch.eye(3, dtype=dt)
        out_v = np.empty((T, idx.size, 3))
        out_j = np.empty((T, model.n_joints, 3))
        for s in range(0, T, chunk):
            p = torch.as_tensor(poses[s: s + chunk], dtype=dt)
            n = p.shape[0]
            rot = batch_rodrigues(p.reshape(-1, 3)).view(n, -1, 3, 3)
            feat = (rot[:, 1:] - ident).reshape(n, -1)
            v_posed = v_shaped + (feat @ posedirs).view(n, -1, 3)
            Jt, A = batch_rigid_transform(rot, J.expand(n, -1, -1), parents, dtype=dt)
            Tm = (W @ A.view(n, model.n_joints, 16)).view(n, -1, 4, 4)
            v = (Tm[..., :3, :3] @ v_posed[..., None])[..., 0] + Tm[..., :3, 3]
            tr = torch.as_tensor(trans[s: s + n], dtype=dt)[:, None]
            out_v[s: s + n] = (v + tr).numpy()
            out_j[s: s + n] = (Jt + tr).numpy()
    return out_v, out_j


def lbs_full(model: BodyModel, poses: np.ndarray, betas: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """All vertices and joints through `smplx.lbs.lbs` itself (no translation): a reference for
    the restricted skinning used for markers. poses (T, 3 J); returns (T, V, 3), (T, J, 3)."""
    import torch
    from smplx.lbs import lbs

    b, _ = model.fit_betas(betas)
    poses = np.asarray(poses, dtype=float)
    dt = torch.float64
    with torch.no_grad():
        v, j = lbs(torch.as_tensor(np.tile(b, (len(poses), 1)), dtype=dt), torch.as_tensor(poses, dtype=dt),
                   torch.as_tensor(model.v_template, dtype=dt), torch.as_tensor(model.shapedirs, dtype=dt),
                   torch.as_tensor(model.posedirs.reshape(-1, model.posedirs.shape[2]).T, dtype=dt),
                   torch.as_tensor(model.J_regressor, dtype=dt), torch.as_tensor(model.parents, dtype=torch.long),
                   torch.as_tensor(model.weights, dtype=dt))
    return v.numpy(), j.numpy()


# ---------------------------------------------------------------------------------------------
# AMASS sequences


@dataclass
class AmassMotion:
    """One AMASS-layout sequence.

    poses: (T, K) axis-angle radians in the file's layout (K = 72 SMPL, 156 SMPL-H, 165 SMPL-X).
    trans: (T, 3) metres (Z-up world). betas: (B,) subject shape. gender: 'male' / 'female' /
    'neutral'. rate: Hz of the selected frames. frame_index: (T,) indices into the file's frames.
    """

    path: Path
    poses: np.ndarray
    trans: np.ndarray
    betas: np.ndarray
    gender: str
    rate: float
    layout: str
    frame_index: np.ndarray
    notes: list[str] = field(default_factory=list)

    @property
    def n_frames(self) -> int:
        return int(self.poses.shape[0])

    @property
    def time(self) -> np.ndarray:
        """(T,) seconds from the first selected frame."""
        return np.arange(self.n_frames) / self.rate

    def poses_for(self, n_joints: int) -> tuple[np.ndarray, list[str]]:
        """Poses (T, 3 n_joints) in the joint order of a model with `n_joints` joints.

        The 22 body joints are common to all layouts; hand (and SMPL-X jaw/eye) joints are copied
        when both sides have them and are zero otherwise (noted).
        """
        T = self.n_frames
        src = self.poses.reshape(T, -1, 3)
        nj_src = src.shape[1]
        if nj_src == n_joints:
            return self.poses.copy(), []
        out = np.zeros((T, n_joints, 3))
        out[:, :N_BODY_JOINTS] = src[:, :N_BODY_JOINTS]
        src_hands = {52: src[:, 22:52], 55: src[:, 25:55]}.get(nj_src)
        dst_hands = {52: slice(22, 52), 55: slice(25, 55)}.get(n_joints)
        notes = []
        if src_hands is not None and dst_hands is not None:
            out[:, dst_hands] = src_hands
        elif nj_src > N_BODY_JOINTS and np.any(src[:, N_BODY_JOINTS:] != 0):
            notes.append(f"pose has {nj_src} joints, the body model {n_joints}: joints beyond the 22 body "
                         "joints were set to zero (hands do not carry Rajagopal markers)")
        return out.reshape(T, -1), notes


def _scalar_str(v: object) -> str:
    v = v.item() if isinstance(v, np.ndarray) and v.size == 1 else v
    if isinstance(v, bytes):
        v = v.decode("utf-8", "replace")
    return str(v).strip()


def _select_frames(n: int, frames: slice | Sequence[int] | None, path: Path) -> tuple[np.ndarray, int]:
    """Frame indices and the step between them (1 unless a stepped slice or an evenly spaced list)."""
    if frames is None:
        return np.arange(n), 1
    if isinstance(frames, slice):
        idx = np.arange(n)[frames]
        step = frames.step or 1
        if step < 1:
            raise ConfigError(f"frame selection must run forward, got step {step}", path)
    else:
        idx = np.asarray(list(frames), dtype=np.int64)
        if idx.size and (idx.min() < -n or idx.max() >= n):
            raise ConfigError(f"frame indices outside 0..{n - 1}", path)
        idx = np.where(idx < 0, idx + n, idx)
        d = np.diff(idx)
        if d.size and (np.any(d <= 0) or np.any(d != d[0])):
            raise ConfigError("frame indices must be increasing and evenly spaced", path)
        step = int(d[0]) if d.size else 1
    if idx.size == 0:
        raise ConfigError(f"frame selection {frames!r} selects no frame of {n}", path)
    return idx, int(step)


def read_amass(path: str | Path, frames: slice | Sequence[int] | None = None) -> AmassMotion:
    """Read an AMASS-layout .npz: `poses` (or `root_orient` + `pose_body` [+ `pose_hand`,
    `pose_jaw`, `pose_eye`]), `trans`, `betas`, `gender`, `mocap_framerate` (SMPL-H) or
    `mocap_frame_rate` (SMPL-X). frames: a slice or evenly spaced increasing indices; the rate is
    divided by the step. Raises InputFormatError naming what is missing or malformed.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError("AMASS sequence file does not exist", path)
    try:
        with np.load(path, allow_pickle=False) as d:
            data = {k: d[k] for k in d.files}
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise InputFormatError(f"not a readable AMASS .npz (plain arrays expected): {exc}", path) from exc
    notes: list[str] = []
    if "poses" in data:
        poses = np.asarray(data["poses"], dtype=float)
    elif "root_orient" in data and "pose_body" in data:
        parts = [data["root_orient"], data["pose_body"]]
        T = len(parts[0])
        if "pose_jaw" in data or "pose_eye" in data:  # SMPL-X order: body, jaw, eyes, hands
            parts += [data.get("pose_jaw", np.zeros((T, 3))), data.get("pose_eye", np.zeros((T, 6))),
                      data.get("pose_hand", np.zeros((T, 90)))]
        elif "pose_hand" in data:
            parts.append(data["pose_hand"])
        try:
            poses = np.concatenate([np.asarray(p, dtype=float).reshape(T, -1) for p in parts], axis=1)
        except ValueError as exc:
            raise InputFormatError(f"root_orient / pose_* arrays disagree in length: {exc}", path) from exc
        if poses.shape[1] == 3 * N_BODY_JOINTS:
            poses = np.concatenate([poses, np.zeros((T, 6))], axis=1)  # SMPL layout, zero hands
    else:
        raise InputFormatError(f"no 'poses' (or 'root_orient' + 'pose_body') array; keys: {sorted(data)}", path)
    if "trans" not in data:
        raise InputFormatError(f"no 'trans' array; keys: {sorted(data)}", path)
    trans = np.asarray(data["trans"], dtype=float)
    if poses.ndim != 2 or poses.shape[1] not in POSE_WIDTH_LAYOUT:
        raise InputFormatError(f"poses must be (T, 72 | 156 | 165), got {poses.shape}", path)
    if trans.shape != (poses.shape[0], 3):
        raise InputFormatError(f"trans must be ({poses.shape[0]}, 3) like poses, got {trans.shape}", path)
    rate_key = next((k for k in ("mocap_framerate", "mocap_frame_rate") if k in data), None)
    if rate_key is None:
        raise InputFormatError("no frame rate ('mocap_framerate' or 'mocap_frame_rate')", path)
    rate = float(np.asarray(data[rate_key]).reshape(-1)[0])
    if not (np.isfinite(rate) and rate > 0):
        raise InputFormatError(f"frame rate must be positive, got {rate}", path)
    betas = np.asarray(data.get("betas", np.zeros(10)), dtype=float)
    if betas.ndim == 2:  # per-frame betas (some exporters): one subject -> their mean
        if not np.allclose(betas, betas[:1], atol=1e-6):
            notes.append("per-frame betas differ: their mean over frames was used")
        betas = betas.mean(axis=0)
    if "betas" not in data:
        notes.append("no 'betas' in the file: the mean shape (zeros) was used")
    gender = _scalar_str(data["gender"]).lower() if "gender" in data else "neutral"
    idx, step = _select_frames(poses.shape[0], frames, path)
    poses, trans = poses[idx], trans[idx]
    if not (np.all(np.isfinite(poses)) and np.all(np.isfinite(trans)) and np.all(np.isfinite(betas))):
        raise InputFormatError("poses, trans or betas contain NaN or infinite values", path)
    return AmassMotion(path=path, poses=poses, trans=trans, betas=betas.reshape(-1), gender=gender,
                       rate=rate / step, layout=POSE_WIDTH_LAYOUT[poses.shape[1]],
                       frame_index=idx, notes=notes)


# ---------------------------------------------------------------------------------------------
# Marker mapping


@dataclass(frozen=True)
class MarkerSpec:
    """A virtual marker: weighted vertices (one vertex, or a face with barycentric weights) plus
    an offset (m) along their interpolated surface normal."""

    name: str
    vertices: tuple[int, ...]
    weights: tuple[float, ...]
    offset_m: float


def load_marker_map(path: str | Path, n_vertices: int) -> list[MarkerSpec]:
    """Markers of the section of a mapping YAML whose `n_vertices` matches the body model.

    Format: `{default_offset_m: float, topologies: {name: {n_vertices: int, markers: {NAME: entry}}}}`
    where an entry is a vertex index, or `{vertex: i}`, `{face: k, bary: [a, b, c]}` (needs the
    model's faces: resolved by `resolve_marker_map`) or `{vertices: [...], weights: [...]}`, each
    with an optional `offset_m`. Raises ConfigError for unreadable maps or no matching topology.
    """
    import yaml

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read the marker map: {exc}", path) from exc
    topo = (data or {}).get("topologies")
    if not isinstance(topo, Mapping) or not topo:
        raise ConfigError("marker map needs a non-empty 'topologies' mapping", path)
    default = float(data.get("default_offset_m", DEFAULT_MARKER_OFFSET_M))
    section = next((s for s in topo.values() if isinstance(s, Mapping) and int(s.get("n_vertices", -1)) == n_vertices),
                   None)
    if section is None:
        have = {k: s.get("n_vertices") for k, s in topo.items() if isinstance(s, Mapping)}
        raise ConfigError(f"no topology section for a {n_vertices}-vertex body model (sections: {have})", path)
    out = []
    for name, e in (section.get("markers") or {}).items():
        off = default
        try:
            if isinstance(e, (int, np.integer)) and not isinstance(e, bool):
                verts, wts = (int(e),), (1.0,)
            elif isinstance(e, Mapping):
                off = float(e.get("offset_m", default))
                if "vertex" in e:
                    verts, wts = (int(e["vertex"]),), (1.0,)
                elif "face" in e:
                    verts, wts = (-1 - int(e["face"]),), tuple(float(x) for x in e["bary"])  # resolved later
                else:
                    verts = tuple(int(x) for x in e["vertices"])
                    wts = tuple(float(x) for x in e["weights"])
            else:
                raise TypeError(type(e).__name__)
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"marker {name!r}: bad entry {e!r} ({exc})", path) from exc
        if verts[0] >= 0 and (len(verts) != len(wts) or any(v >= n_vertices for v in verts)):
            raise ConfigError(f"marker {name!r}: vertices {verts} / weights {wts} invalid for {n_vertices} "
                              "vertices", path)
        out.append(MarkerSpec(str(name), verts, wts, off))
    if not out:
        raise ConfigError("the matching topology section lists no markers", path)
    return out


def resolve_marker_map(specs: Sequence[MarkerSpec], model: BodyModel) -> list[MarkerSpec]:
    """Turn face-based entries into vertex entries with the model's faces; normalise weights."""
    out = []
    for s in specs:
        verts, wts = s.vertices, np.asarray(s.weights, dtype=float)
        if verts[0] < 0:
            k = -1 - verts[0]
            if k >= len(model.faces) or wts.size != 3:
                raise ConfigError(f"marker {s.name!r}: face {k} / barycentric {s.weights} invalid", model.path)
            verts = tuple(int(v) for v in model.faces[k])
        if wts.sum() <= 0:
            raise ConfigError(f"marker {s.name!r}: weights must sum to a positive number", model.path)
        out.append(MarkerSpec(s.name, verts, tuple((wts / wts.sum()).tolist()), s.offset_m))
    return out


def foot_vertices(model: BodyModel) -> np.ndarray:
    """Vertices skinned mostly to the ankles and feet (indices)."""
    return np.flatnonzero(np.isin(np.argmax(model.weights, axis=1), FOOT_JOINTS))


def marker_positions(model: BodyModel, specs: Sequence[MarkerSpec], poses: np.ndarray, betas: np.ndarray,
                     trans: np.ndarray | None = None, extra: np.ndarray | None = None
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Markers (T, M, 3), the `extra` vertex indices' positions (T, E, 3) and joints (T, J, 3)
    in the model's world frame (metres), for poses (T, 3 J), betas (B,), trans (T, 3)."""
    extra = np.zeros(0, dtype=np.int64) if extra is None else np.asarray(extra, dtype=np.int64)
    mverts = np.unique(np.concatenate([np.asarray(s.vertices) for s in specs]))
    need_normals = any(s.offset_m != 0 for s in specs)
    faces = model.faces[np.isin(model.faces, mverts).any(axis=1)] if need_normals else np.zeros((0, 3), int)
    if need_normals and faces.size == 0:
        raise InputFormatError("markers need surface normals but their vertices belong to no face", model.path)
    sel = np.unique(np.concatenate([mverts, faces.reshape(-1), extra]))
    pos = {int(v): i for i, v in enumerate(sel)}
    verts, joints = _skin(model, poses, betas, trans, sel, 512)
    normals = np.zeros_like(verts)
    if need_normals:
        fl = np.vectorize(pos.get)(faces)
        a, b, c = verts[:, fl[:, 0]], verts[:, fl[:, 1]], verts[:, fl[:, 2]]
        fn = np.cross(b - a, c - a)  # area-weighted face normals (counter-clockwise faces point out)
        for k in range(3):
            np.add.at(normals, (slice(None), fl[:, k]), fn)
    out = np.empty((verts.shape[0], len(specs), 3))
    for m, s in enumerate(specs):
        ii = [pos[v] for v in s.vertices]
        w = np.asarray(s.weights)[None, :, None]
        p = (verts[:, ii] * w).sum(axis=1)
        if s.offset_m:
            n = (normals[:, ii] * w).sum(axis=1)
            norm = np.linalg.norm(n, axis=1, keepdims=True)
            if np.any(norm == 0):
                raise InputFormatError(f"marker {s.name}: zero surface normal", model.path)
            p = p + s.offset_m * n / norm
        out[:, m] = p
    return out, verts[:, [pos[int(v)] for v in extra]], joints


def _rotvec_matrix(r: np.ndarray) -> np.ndarray:
    from scipy.spatial.transform import Rotation

    return Rotation.from_rotvec(np.asarray(r, dtype=float)).as_matrix()


def _yaw_to_face_x(forward: np.ndarray) -> np.ndarray:
    """Rotation about y that turns a (Y-up) forward direction to +x in the horizontal plane."""
    ang = np.arctan2(-forward[2], forward[0])  # angle of forward about +y, measured from +x
    c, s = np.cos(-ang), np.sin(-ang)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def _to_marker_data(xyz: np.ndarray, names: list[str], rate: float, source: str, notes: list[str]) -> MarkerData:
    return MarkerData(time=np.arange(len(xyz)) / rate, names=names, xyz=xyz, rate=rate, source=source,
                      repairs=notes)


def amass_markers(motion_npz: str | Path, body_model_npz: str | Path, marker_map_yaml: str | Path, *,
                  frames: slice | Sequence[int] | None = None, align_heading: bool = True,
                  floor_quantile: float = 0.01) -> MarkerData:
    """Virtual skin markers (metres, OpenSim Y-up) of an AMASS-layout sequence.

    body_model_npz: an .npz or a folder of them (the sequence's gender picks the file). The pose is
    converted to the model's joint layout (`AmassMotion.poses_for`), betas are fitted to the
    model's count. The floor is the `floor_quantile` quantile over frames of the lowest foot
    vertex height (0: the lowest foot vertex of the whole sequence); it is moved to y = 0.
    align_heading: turn about the vertical so the body faces +x at the first frame and move the
    root joint's first position to x = z = 0. Notes (dropped betas, gender mismatch, floor
    height) go to `MarkerData.repairs`.
    """
    if not 0.0 <= floor_quantile <= 1.0:
        raise ConfigError(f"floor_quantile must be in [0, 1], got {floor_quantile}")
    motion = read_amass(motion_npz, frames)
    model = load_body_model(body_model_npz, motion.gender)
    specs = resolve_marker_map(load_marker_map(marker_map_yaml, model.n_vertices), model)
    notes = list(motion.notes)
    if motion.gender not in ("", "neutral") and model.gender not in ("neutral", motion.gender):
        notes.append(f"sequence gender {motion.gender}, body model {model.gender} ({model.path.name})")
    poses, n1 = motion.poses_for(model.n_joints)
    betas, n2 = model.fit_betas(motion.betas)
    feet = foot_vertices(model)
    if feet.size == 0:
        raise InputFormatError("no vertex is skinned to the ankles/feet: cannot find the floor", model.path)
    xyz, fv, joints = marker_positions(model, specs, poses, betas, motion.trans, feet)
    R = Z_UP_TO_Y_UP
    if align_heading:
        root0 = Z_UP_TO_Y_UP @ _rotvec_matrix(poses[0, :3])
        R = _yaw_to_face_x(root0 @ np.array([0.0, 0.0, 1.0])) @ Z_UP_TO_Y_UP
    xyz, fv, joints = xyz @ R.T, fv @ R.T, joints @ R.T
    floor = float(np.quantile(fv[..., 1].min(axis=1), floor_quantile))
    shift = np.array([joints[0, 0, 0] if align_heading else 0.0, floor, joints[0, 0, 2] if align_heading else 0.0])
    xyz = xyz - shift
    notes += n1 + n2 + [f"floor detected at {floor:.4f} m (lowest foot vertices, quantile {floor_quantile}); "
                        f"moved to y = 0. Body model {model.path.name} ({model.kind}, {model.n_vertices} vertices)"]
    return _to_marker_data(xyz, [s.name for s in specs], motion.rate, str(motion.path), notes)


def _betas_from(betas: np.ndarray | Sequence[float] | str | Path | None) -> np.ndarray | None:
    if isinstance(betas, (str, Path)):
        return read_amass(betas, frames=slice(0, 1)).betas
    return None if betas is None else np.asarray(betas, dtype=float)


def standing_pose(model: BodyModel, arm_abduction_deg: float = 10.0) -> np.ndarray:
    """(1, 3 J) pose: the model's zero pose (SMPL: a T-pose) with the arms lowered to
    `arm_abduction_deg` from the trunk (rotations about the forward axis at the shoulders)."""
    pose = np.zeros((1, model.n_joints, 3))
    lower = np.radians(90.0 - arm_abduction_deg)
    pose[0, SHOULDER_JOINTS["l"]] = [0.0, 0.0, -lower]  # left arm points +x: turn it down about +z
    pose[0, SHOULDER_JOINTS["r"]] = [0.0, 0.0, lower]
    return pose.reshape(1, -1)


def static_markers(body_model_npz: str | Path, betas: np.ndarray | Sequence[float] | str | Path | None,
                   marker_map_yaml: str | Path, *, duration_s: float = 1.0, rate_hz: float = 100.0,
                   gender: str | None = None, arm_abduction_deg: float = 10.0) -> MarkerData:
    """Static calibration trial: the body standing in its neutral pose, arms slightly abducted.

    betas: shape (B,), or an AMASS .npz to take them from, or None (mean shape). The body faces
    +x (OpenSim), feet on y = 0 (lowest foot vertex), root joint above the origin. Frames are
    identical over `duration_s` at `rate_hz`.
    """
    b = _betas_from(betas)
    if gender is None and isinstance(betas, (str, Path)):
        gender = read_amass(betas, frames=slice(0, 1)).gender
    model = load_body_model(body_model_npz, gender)
    specs = resolve_marker_map(load_marker_map(marker_map_yaml, model.n_vertices), model)
    b, notes = model.fit_betas(b)
    feet = foot_vertices(model)
    xyz, fv, joints = marker_positions(model, specs, standing_pose(model, arm_abduction_deg), b,
                                        np.zeros((1, 3)), feet)
    R = MODEL_TO_OPENSIM
    xyz, fv, joints = xyz @ R.T, fv @ R.T, joints @ R.T
    shift = np.array([joints[0, 0, 0], fv[0, :, 1].min(), joints[0, 0, 2]])
    n = int(round(duration_s * rate_hz)) + 1
    xyz = np.repeat(xyz - shift, n, axis=0)
    return _to_marker_data(xyz, [s.name for s in specs], rate_hz, f"static pose of {model.path}", notes)


def body_height(body_model_npz: str | Path, betas: np.ndarray | Sequence[float] | str | Path | None = None,
                gender: str | None = None) -> float:
    """Standing height (m) of the shaped body: top of the zero-pose mesh above its lowest vertex."""
    model = load_body_model(body_model_npz, gender)
    b, _ = model.fit_betas(_betas_from(betas))
    v, _ = _skin(model, np.zeros((1, 3 * model.n_joints)), b, None, None, 1)
    return float(v[0, :, 1].max() - v[0, :, 1].min())
