"""An Anny body (MakeHuman-derived CC0 mesh, Apache-2.0 code) fitted to an OpenSim model and
skinned to its bodies, so that the mesh follows the OpenSim skeleton frame by frame.

Fitting, for one (scaled) Rajagopal2015-like model:
1. Anny's phenotype (height, weight; gender, age, muscle, proportions as given) is solved so that
   its rest mesh has the subject's stature and mass (volume x 980 kg/m^3).
2. Every OpenSim body b gets an affine map A_b from Anny's rest space into ground at the model's
   default pose. It is solved in tree order: exact at the joint shared with the parent body (the
   Anny point there is the one the parent's map sends onto the OpenSim joint, so neighbouring
   maps agree at every joint), least squares on the child joints, on anatomical skin landmarks
   (model markers such as ASIS, epicondyles, malleoli, matched to the Anny surface), and a prior
   towards a rotation (segment direction plus a twist reference: elbow axis, palm, anterior).
3. Anny's skinning weights are summed per OpenSim body (top 4 kept), the rest mesh is placed in
   the default pose as sum_b w_b A_b(v), and posing uses S_b(t) = T_b(t) T_b(default)^-1.

Coordinates: Anny's rest space has x to the subject's left, y backwards, z up; OpenSim ground has
x forward, y up, z to the right. Lengths in metres throughout.

Anny's model data is built once into a cache folder (about 1 minute, 0.8 GB written, 51 MB
kept): see `build_anny_cache`. Parallel render jobs must only read a built cache.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import shutil
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from biohuman.errors import ConfigError, InputFormatError
from biohuman.render.meshops import MeshQuery, skin
from biohuman.render.pose import DEFAULT_JOINTS, default_transforms, joint_points, marker_points
from biohuman.render.skeleton import skeleton_mesh, vertex_normals

ANNY_DENSITY = 980.0
"""Body density (kg/m^3) Anny's anthropometry uses to turn volume into mass."""

CACHE_READY = "biohuman_anny_cache.json"
"""File written into the Anny cache folder once it is complete (the Snakemake rule's output)."""

LANDMARK_MARKERS: tuple[str, ...] = (
    "RASI", "LASI", "RPSI", "LPSI", "RLFC", "RMFC", "LLFC", "LMFC", "RLMAL", "RMMAL", "LLMAL", "LMMAL",
    "RCAL", "LCAL", "RTOE", "LTOE", "RMT5", "LMT5", "RACR", "LACR", "C7", "CLAV",
    "RLEL", "RMEL", "LLEL", "LMEL", "RFAradius", "RFAulna", "LFAradius", "LFAulna",
)
"""Anatomical skin landmarks of the Rajagopal marker set used to fit the mesh (clusters are not)."""

DEFAULT_PHENOTYPE: dict[str, float] = {"gender": 0.5, "age": 0.5, "muscle": 0.5, "proportions": 0.5}
"""Anny phenotype values not solved from stature and mass (0..1; age 0.5 is about 25 years)."""

# Anny (x left, y back, z up) -> OpenSim ground (x forward, y up, z right)
R_ANNY_TO_OSIM = np.array([[0.0, -1.0, 0.0], [0.0, 0.0, 1.0], [-1.0, 0.0, 0.0]])

_SIDES = (("r", "R"), ("l", "L"))
_FIT_ORDER = ("pelvis", "torso", "femur_r", "tibia_r", "calcn_r", "toes_r", "femur_l", "tibia_l", "calcn_l",
              "toes_l", "humerus_r", "ulna_r", "radius_r", "hand_r", "humerus_l", "ulna_l", "radius_l", "hand_l")


def anny_body_of_bone(label: str) -> str:
    """OpenSim (Rajagopal2015) body that an Anny bone's skin follows."""
    base, _, side = label.partition(".")
    s = side.lower()
    if base in ("root", "pelvis", "spine05", "spine04"):
        return "pelvis"
    if base.startswith("upperleg"):
        return f"femur_{s}"
    if base.startswith("lowerleg"):
        return f"tibia_{s}"
    if base == "foot":
        return f"calcn_{s}"
    if base.startswith("toe"):
        return f"toes_{s}"
    if base.startswith("upperarm"):
        return f"humerus_{s}"
    if base == "lowerarm01":
        return f"ulna_{s}"
    if base == "lowerarm02":
        return f"radius_{s}"
    if base in ("wrist",) or base.startswith(("metacarpal", "finger")):
        return f"hand_{s}"
    return "torso"  # spine03..01, clavicles, shoulders, neck, head, eyes, jaw


# --------------------------------------------------------------------------------------------
# Anny model and its cache


def anny_cache_dir(cache_dir: str | Path | None = None) -> Path:
    """The Anny cache folder: `cache_dir`, else $ANNY_CACHE_DIR, else ~/.cache/anny."""
    if cache_dir is not None:
        return Path(cache_dir)
    return Path(os.environ.get("ANNY_CACHE_DIR", Path.home() / ".cache" / "anny"))


def anny_cache_ready(cache_dir: str | Path | None = None) -> bool:
    """True when the cache holds Anny's compact model data (built by `build_anny_cache` or Anny)."""
    root = anny_cache_dir(cache_dir)
    return (root / CACHE_READY).is_file() or any(root.glob("v*/build_compact_model_data_*.safetensors"))


def _anny():  # noqa: ANN202 - the anny module
    try:
        import anny
    except ImportError as exc:
        raise ConfigError("the 'anny' package is not installed (pip install anny==0.6.2)") from exc
    return anny


def build_anny_cache(cache_dir: str | Path | None = None, *, keep_intermediate: bool = False) -> Path:
    """Build Anny's model data once into `cache_dir` and return the path of its ready file.

    Builds in a temporary sibling folder and renames it into place, so concurrent readers never
    see a half-written cache, and holds an exclusive lock on a sibling lock file meanwhile, so
    concurrent builders (parallel Snakemake jobs or test workers) build it once: the others wait
    and find it ready. About 1 minute on 2 cores; peaks at 0.8 GB on disk, of which the 51 MB
    compact model is kept (`keep_intermediate=True` keeps everything). Idempotent.
    """
    root = anny_cache_dir(cache_dir)
    if (root / CACHE_READY).is_file():
        return root / CACHE_READY
    root.parent.mkdir(parents=True, exist_ok=True)
    with _exclusive_lock(root.parent / f".{root.name}.lock"):
        if (root / CACHE_READY).is_file():  # built by another process while this one waited
            return root / CACHE_READY
        return _build_anny_cache(root, keep_intermediate)


@contextlib.contextmanager
def _exclusive_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive advisory lock (flock) on `path` for the block; no lock where the
    platform has no fcntl (Windows), where the temp-folder rename still keeps the cache whole."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    with open(path, "a") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _build_anny_cache(root: Path, keep_intermediate: bool) -> Path:
    """`build_anny_cache`'s work, under its lock."""
    anny = _anny()
    from anny.paths import get_anny_cache_path, set_anny_cache_path

    tmp = root.parent / f".{root.name}.building.{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    if root.is_dir():
        shutil.copytree(root, tmp)
    previous = get_anny_cache_path()
    set_anny_cache_path(tmp)
    try:
        model = anny.Anny(skinning_method="lbs")
        n_vertices = int(model.template_vertices.shape[0])
    finally:
        set_anny_cache_path(previous)
    kept = sorted(p.relative_to(tmp).as_posix() for p in tmp.glob("v*/build_compact_model_data_*.safetensors"))
    if not keep_intermediate:
        for p in tmp.glob("v*/*.safetensors"):
            if p.relative_to(tmp).as_posix() not in kept:
                p.unlink()
    (tmp / CACHE_READY).write_text(json.dumps({"anny_version": anny.__version__, "files": kept,
                                               "vertices": n_vertices}, indent=1))
    if root.exists():
        old = root.parent / f".{root.name}.old.{os.getpid()}"
        os.replace(root, old)
        os.replace(tmp, root)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, root)
    return root / CACHE_READY


@functools.lru_cache(maxsize=2)
def load_anny(cache_dir: str | Path | None = None, *, build: bool = False):  # noqa: ANN201 - anny.Anny
    """Anny's full-body model (MakeHuman topology, default 'anny' rig) from a built cache.

    Raises ConfigError when the cache is missing, unless `build` (then builds it first).
    """
    root = anny_cache_dir(cache_dir)
    if not anny_cache_ready(root):
        if not build:
            raise ConfigError(f"Anny cache not built in {root}; run biohuman.render.body.build_anny_cache "
                              "(python -m biohuman.render.body --build-cache DIR) before rendering")
        build_anny_cache(root)
    anny = _anny()
    from anny.paths import set_anny_cache_path

    set_anny_cache_path(root)
    return anny.Anny(skinning_method="lbs")


# --------------------------------------------------------------------------------------------
# Fitting


@dataclass
class BodyModel:
    """An Anny mesh rigged to the bodies of an OpenSim model.

    vertices: (N, 3) float32, ground at the model's default pose (m). normals: (N, 3).
    faces: (F, 3) int32. bone_index / bone_weight: (N, 4) int32 / float32 over `bodies`.
    rest_transforms: (B, 4, 4) body transforms in ground at the default pose.
    part: (N,) int32 dominant body. segment_fraction: (N,) float32, 0 at the body's parent joint,
    1 at its child joint (for clothing). joints / regressor_index / regressor_weight: mesh joint
    centres as fixed affine combinations of vertices, (J,), (J, K), (J, K).
    """

    vertices: np.ndarray
    normals: np.ndarray
    faces: np.ndarray
    bone_index: np.ndarray
    bone_weight: np.ndarray
    bodies: tuple[str, ...]
    rest_transforms: np.ndarray
    part: np.ndarray
    segment_fraction: np.ndarray
    joints: tuple[str, ...]
    regressor_index: np.ndarray
    regressor_weight: np.ndarray
    phenotype: dict[str, float]
    stature_m: float
    mass_kg: float
    anny_stature_m: float
    anny_mass_kg: float
    affine: np.ndarray  # (B, 4, 4) Anny rest space -> ground at the default pose (identity if unused)
    landmarks: dict[str, int] = field(default_factory=dict)  # marker -> landmark vertex used in the fit

    def skin_matrices(self, transforms: np.ndarray) -> np.ndarray:
        """Skinning matrices (T, B, 4, 4) = T_b(t) T_b(default)^-1 from body transforms (T, B, 4, 4)."""
        return np.asarray(transforms) @ np.linalg.inv(self.rest_transforms)[None]

    def pose(self, transforms: np.ndarray) -> np.ndarray:
        """Posed vertices (T, N, 3) for body transforms (T, B, 4, 4) (numpy linear-blend skinning)."""
        return skin(self.vertices.astype(np.float64), self.bone_index, self.bone_weight,
                    self.skin_matrices(transforms))

    def joint_centers(self, vertices: np.ndarray) -> np.ndarray:
        """Mesh joint centres (T, J, 3) regressed from posed vertices (T, N, 3)."""
        v = np.asarray(vertices)[:, self.regressor_index]  # (T, J, K, 3)
        return np.einsum("tjkc,jk->tjc", v, self.regressor_weight)


def _unit(v: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(v)
    return v / n if n > 0 else v


def _wahba(pairs: Sequence[tuple[np.ndarray, np.ndarray, float]]) -> np.ndarray:
    """Rotation R minimising sum w |R a - o|^2 over unit-vector pairs (a, o, w)."""
    b = sum(w * np.outer(_unit(o), _unit(a)) for a, o, w in pairs)
    u, _, vt = np.linalg.svd(b)
    d = np.sign(np.linalg.det(u @ vt))
    return u @ np.diag([1.0, 1.0, d]) @ vt


def _solve_affine(seam: tuple[np.ndarray, np.ndarray] | None, soft: Sequence[tuple[np.ndarray, np.ndarray, float]],
                  prior: np.ndarray, reg: float) -> np.ndarray:
    """Affine map (4, 4) sending Anny points to OpenSim points.

    seam: (anny point, osim point) matched exactly, or None (translation then solved too).
    soft: (anny point, osim point, weight) matched in least squares. prior: (3, 3) linear part the
    map is pulled towards with weight `reg` (m^2).
    """
    out = np.eye(4)
    if seam is not None:
        a0, o0 = seam
    else:
        w = np.array([s[2] for s in soft])
        a0 = sum(s[2] * s[0] for s in soft) / w.sum()
        o0 = sum(s[2] * s[1] for s in soft) / w.sum()
    lhs = reg * np.eye(3)
    rhs = reg * prior.copy()  # (3 rows of M) as columns: solve lhs @ M^T = rhs^T
    rhs = rhs.T.copy()
    for a, o, w in soft:
        d, e = a - a0, o - o0
        lhs += w * np.outer(d, d)
        rhs += w * np.outer(d, e)
    m = np.linalg.solve(lhs, rhs).T
    out[:3, :3] = m
    out[:3, 3] = o0 - m @ a0
    return out


def _apply(a: np.ndarray, p: np.ndarray) -> np.ndarray:
    return p @ a[:3, :3].T + a[:3, 3]


def _inverse_apply(a: np.ndarray, p: np.ndarray) -> np.ndarray:
    return np.linalg.solve(a[:3, :3], (p - a[:3, 3]).T).T


@dataclass
class _Subject:
    """OpenSim side of the fit: points in ground at the default pose."""

    points: dict[str, np.ndarray]
    dirs: dict[str, np.ndarray]
    markers: dict[str, tuple[str, np.ndarray]]  # marker -> (body, ground position)
    stature: float
    mass: float


def _far_end(points: np.ndarray, origin: np.ndarray, frac: float = 0.1) -> np.ndarray:
    """Mean of the `frac` of points farthest from `origin` (the distal end of a bone mesh)."""
    d = np.linalg.norm(points - origin, axis=1)
    k = max(1, int(len(points) * frac))
    return points[np.argsort(d)[-k:]].mean(axis=0)


def _subject(model_path: str | Path | None, height_m: float | None, mass_kg: float | None) -> _Subject:
    import pandas as pd

    from biohuman.osim.model import model_info
    from biohuman.render.pose import body_transforms

    names, rest = default_transforms(model_path)
    required = {"pelvis", "torso"} | {f"{b}_{s}" for b in ("femur", "tibia", "calcn", "toes", "humerus", "ulna",
                                                           "radius", "hand") for s in "rl"}
    if not required <= set(names):
        raise ConfigError(f"body fitting needs a Rajagopal2015-like model; missing bodies {sorted(required - set(names))}",
                          model_path)
    sk = skeleton_mesh(model_path)
    ground = np.einsum("nij,nj->ni", rest[[names.index(b) for b in (sk.bodies[i] for i in sk.body_index)], :3, :3],
                       sk.vertices.astype(float)) + rest[[names.index(sk.bodies[i]) for i in sk.body_index], :3, 3]

    def verts_of(body: str) -> np.ndarray:
        return ground[np.array([sk.bodies[i] == body for i in sk.body_index])]

    def stem_verts(stem: str) -> np.ndarray:
        hits = [i for i, f in enumerate(sk.files) if f.split(".")[0] == stem]
        return ground[np.isin(sk.file_index, hits)]

    jp = joint_points(model_path, ("pelvis", "lumbar") + tuple(
        f"{j}_{s}" for s in "rl" for j in ("hip", "knee", "ankle", "mtp", "shoulder", "elbow", "wrist")) + (
        "radioulnar_r", "radioulnar_l"), bodies=names)
    jg = jp.in_ground(rest[None])[0]
    pts = {n: jg[i] for i, n in enumerate(jp.names)}
    floor = min(verts_of(f"calcn_{s}")[:, 1].min() for s in "rl")
    torso = verts_of("torso")
    pts["head_top"] = torso[np.argmax(torso[:, 1])]
    dirs: dict[str, np.ndarray] = {}
    for s, _ in _SIDES:
        toes = verts_of(f"toes_{s}")
        pts[f"toe_tip_{s}"] = toes[toes[:, 0] >= toes[:, 0].max() - 0.005].mean(axis=0)
        pts[f"sole_{s}"] = np.array([pts[f"ankle_{s}"][0], floor, pts[f"ankle_{s}"][2]])
        for k in (2, 3, 5):
            mv = stem_verts(f"metacarpal{k}_{s}vs")
            pts[f"mcp{k}_{s}"] = _far_end(mv, pts[f"wrist_{s}"]) if len(mv) else pts[f"wrist_{s}"] + [0, -0.08, 0]
        # elbow flexion axis (positive flexion sense) from a small flexion of the model's elbow
        coords = pd.DataFrame({f"elbow_flex_{s}": [0.5]}, index=[0.0])
        try:
            bn, tr = body_transforms(model_path, coords, [f"hand_{s}"])
            wp = joint_points(model_path, (f"wrist_{s}",), bodies=bn).in_ground(tr)[0, 0]
            axis = np.cross(pts[f"elbow_{s}"] - pts[f"shoulder_{s}"], wp - pts[f"elbow_{s}"])
        except InputFormatError:  # a model without elbow_flex_*: flexion about +z on both sides
            axis = np.array([0.0, 0.0, 1.0])
        dirs[f"elbow_axis_{s}"] = _unit(axis)
    stature = float(height_m) if height_m else float(pts["head_top"][1] - floor)
    mass = float(mass_kg) if mass_kg else model_info(model_path).mass
    mk = marker_points(model_path, None, bodies=names)
    mg = mk.in_ground(rest[None])[0]
    markers = {n: (names[mk.body_index[i]], mg[i]) for i, n in enumerate(mk.names)}
    return _Subject(points=pts, dirs=dirs, markers=markers, stature=stature, mass=mass)


def _anny_rest(model, phenotype: Mapping[str, float]) -> tuple[np.ndarray, np.ndarray]:  # noqa: ANN001
    """Rest vertices (N, 3) and bone heads (J, 3) of Anny for a phenotype (float64)."""
    import torch

    with torch.no_grad():
        out = model(phenotype_kwargs={k: float(v) for k, v in phenotype.items()})
    return out["vertices"][0].double().numpy(), out["bone_poses"][0, :, :3, 3].double().numpy()


def _volume(v: np.ndarray, faces: np.ndarray) -> float:
    return float(abs(np.einsum("fi,fi->f", np.cross(v[faces[:, 0]], v[faces[:, 1]]), v[faces[:, 2]]).sum() / 6.0))


def fit_phenotype(model, stature_m: float, mass_kg: float,  # noqa: ANN001 - anny.Anny
                  base: Mapping[str, float] | None = None) -> dict[str, float]:
    """Anny phenotype (0..1 values) whose rest mesh has the given stature (m) and, as far as
    Anny's weight range allows (its heaviest body has a BMI of about 21), the given mass (kg).

    Stature is matched first (it sets the skeleton the mesh is fitted to), then weight, in two
    alternating one-dimensional solves.
    """
    from scipy.optimize import brentq

    base = {**DEFAULT_PHENOTYPE, **(base or {})}
    faces = model.faces.numpy()

    def measure(height: float, weight: float) -> tuple[float, float]:
        v, _ = _anny_rest(model, {**base, "height": height, "weight": weight})
        return float(v[:, 2].max() - v[:, 2].min()), _volume(v, faces) * ANNY_DENSITY

    def solve(f, lo: float = 0.0, hi: float = 1.0) -> float:  # noqa: ANN001
        flo, fhi = f(lo), f(hi)
        if flo * fhi > 0:
            return lo if abs(flo) < abs(fhi) else hi
        return float(brentq(f, lo, hi, xtol=1e-4))

    height, weight = 0.5, 0.5
    for _ in range(2):
        height = solve(lambda x: measure(x, weight)[0] - stature_m)
        weight = solve(lambda x: measure(height, x)[1] - mass_kg)
    height = solve(lambda x: measure(x, weight)[0] - stature_m)
    return {**base, "height": float(height), "weight": float(weight)}


def _anny_points(v: np.ndarray, heads: np.ndarray, labels: list[str], part_of: np.ndarray, stature_ratio: float,
                 subject: _Subject) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Anny-side counterparts of the subject's points and twist references."""
    h = {lab: heads[i] for i, lab in enumerate(labels)}
    pts: dict[str, np.ndarray] = {}
    dirs: dict[str, np.ndarray] = {}
    floor = v[:, 2].min()
    for s, S in _SIDES:
        pts[f"hip_{s}"] = h[f"upperleg01.{S}"]
        pts[f"knee_{s}"] = h[f"lowerleg01.{S}"]
        pts[f"ankle_{s}"] = h[f"foot.{S}"]
        pts[f"mtp_{s}"] = np.mean([h[f"toe{k}-1.{S}"] for k in range(1, 6)], axis=0)
        toes = v[part_of == f"toes_{s}"]
        pts[f"toe_tip_{s}"] = toes[toes[:, 1] <= toes[:, 1].min() + 0.005].mean(axis=0)
        pts[f"sole_{s}"] = np.array([pts[f"ankle_{s}"][0], pts[f"ankle_{s}"][1], floor])
        pts[f"shoulder_{s}"] = h[f"upperarm01.{S}"]
        pts[f"elbow_{s}"] = h[f"lowerarm01.{S}"]
        pts[f"radioulnar_{s}"] = h[f"lowerarm01.{S}"]
        pts[f"wrist_{s}"] = h[f"wrist.{S}"]
        for k in (2, 3, 5):
            pts[f"mcp{k}_{s}"] = h[f"finger{k}-1.{S}"]
        dirs[f"elbow_axis_{s}"] = _unit(np.cross(pts[f"elbow_{s}"] - pts[f"shoulder_{s}"],
                                                 pts[f"wrist_{s}"] - pts[f"elbow_{s}"]))
    pts["head_top"] = v[np.argmax(v[:, 2])]
    # lumbar joint: the point on the spine chain at the subject's relative height above the hips
    sp = subject.points
    rel = (sp["lumbar"][1] - 0.5 * (sp["hip_r"][1] + sp["hip_l"][1])) / subject.stature
    chain = np.array([h["spine05"], h["spine04"], h["spine03"], h["spine02"], h["spine01"], h["neck01"]])
    target = 0.5 * (pts["hip_r"][2] + pts["hip_l"][2]) + rel * subject.stature / stature_ratio
    k = int(np.clip(np.searchsorted(chain[:, 2], target) - 1, 0, len(chain) - 2))
    f = float(np.clip((target - chain[k, 2]) / (chain[k + 1, 2] - chain[k, 2]), 0.0, 1.0))
    pts["lumbar"] = chain[k] + f * (chain[k + 1] - chain[k])
    pts["pelvis"] = h["root"]
    return pts, dirs


def _fit_affines(ap: dict[str, np.ndarray], ad: dict[str, np.ndarray], subject: _Subject, scale: float,
                 landmarks: dict[str, tuple[str, np.ndarray, np.ndarray]], reg: float
                 ) -> dict[str, np.ndarray]:
    """Per-body affine maps (see the module docstring), in tree order."""
    sp, sd = subject.points, subject.dirs
    fwd_a, up_a = np.array([0.0, -1.0, 0.0]), np.array([0.0, 0.0, 1.0])
    fwd_o, up_o = np.array([1.0, 0.0, 0.0]), np.array([0.0, 1.0, 0.0])
    glob = [(fwd_a, fwd_o, 1.0), (up_a, up_o, 1.0)]
    seam_anny: dict[str, np.ndarray] = {}
    affines: dict[str, np.ndarray] = {}

    def perp(a: np.ndarray, axis: np.ndarray) -> np.ndarray:
        return _unit(a - axis * (a @ axis))

    def limb(p: str, c: str, twist_a: np.ndarray, twist_o: np.ndarray) -> list:
        da, do = _unit(ap[c] - seam_anny.get(p, ap[p])), _unit(sp[c] - sp[p])
        return [(da, do, 1.0), (perp(twist_a, da), perp(twist_o, do), 0.3)]

    def fit(body: str, seam: str | None, soft: list[str], prior: list, seam_from: str | None = None) -> None:
        items = [(ap[n], sp[n], 1.0) for n in soft]
        items += [(a, o, 1.0) for m, (b, a, o) in landmarks.items() if b == body]
        seam_pair = None
        if seam is not None:
            seam_pair = (seam_anny[seam_from or seam], sp[seam])
        affines[body] = _solve_affine(seam_pair, items, scale * _wahba(prior), reg)

    def child_seam(parent: str, joint: str, key: str | None = None) -> None:
        seam_anny[key or joint] = _inverse_apply(affines[parent], sp[joint])

    fit("pelvis", None, ["hip_r", "hip_l", "lumbar"], glob)
    for j in ("lumbar", "hip_r", "hip_l"):
        child_seam("pelvis", j)
    fit("torso", "lumbar", ["shoulder_r", "shoulder_l", "head_top"], glob)
    for s, _ in _SIDES:
        child_seam("torso", f"shoulder_{s}")
        fit(f"femur_{s}", f"hip_{s}", [f"knee_{s}"], limb(f"hip_{s}", f"knee_{s}", fwd_a, fwd_o))
        child_seam(f"femur_{s}", f"knee_{s}")
        fit(f"tibia_{s}", f"knee_{s}", [f"ankle_{s}"], limb(f"knee_{s}", f"ankle_{s}", fwd_a, fwd_o))
        child_seam(f"tibia_{s}", f"ankle_{s}")
        fit(f"calcn_{s}", f"ankle_{s}", [f"mtp_{s}", f"sole_{s}"], glob)
        child_seam(f"calcn_{s}", f"mtp_{s}")
        fit(f"toes_{s}", f"mtp_{s}", [f"toe_tip_{s}"], glob)
        ea, eo = ad[f"elbow_axis_{s}"], sd[f"elbow_axis_{s}"]
        fit(f"humerus_{s}", f"shoulder_{s}", [f"elbow_{s}"], limb(f"shoulder_{s}", f"elbow_{s}", ea, eo))
        child_seam(f"humerus_{s}", f"elbow_{s}")
        fit(f"ulna_{s}", f"elbow_{s}", [f"wrist_{s}"], limb(f"elbow_{s}", f"wrist_{s}", ea, eo))
        child_seam(f"ulna_{s}", f"elbow_{s}", f"radius_seam_{s}")
        palm_a, palm_o = ap[f"mcp2_{s}"] - ap[f"mcp5_{s}"], sp[f"mcp2_{s}"] - sp[f"mcp5_{s}"]
        seam_anny[f"elbow_{s}"] = seam_anny[f"radius_seam_{s}"]
        fit(f"radius_{s}", f"elbow_{s}", [f"wrist_{s}"], limb(f"elbow_{s}", f"wrist_{s}", palm_a, palm_o))
        child_seam(f"radius_{s}", f"wrist_{s}")
        fit(f"hand_{s}", f"wrist_{s}", [f"mcp3_{s}", f"mcp2_{s}", f"mcp5_{s}"],
            limb(f"wrist_{s}", f"mcp3_{s}", palm_a, palm_o))
    return affines


def _regressor(v0: np.ndarray, centres: np.ndarray, candidates: list[np.ndarray], k: int = 48
               ) -> tuple[np.ndarray, np.ndarray]:
    """Minimum-norm affine vertex weights reproducing each centre from its k nearest candidates."""
    idx = np.zeros((len(centres), k), np.int64)
    wts = np.zeros((len(centres), k))
    for j, (c, cand) in enumerate(zip(centres, candidates)):
        d = np.linalg.norm(v0[cand] - c, axis=1)
        sel = cand[np.argsort(d)[:k]]
        a = np.vstack([v0[sel].T, np.ones(len(sel))])  # (4, k)
        w = a.T @ np.linalg.solve(a @ a.T + 1e-12 * np.eye(4), np.append(c, 1.0))
        idx[j, :len(sel)], wts[j, :len(sel)] = sel, w
    return idx, wts


def fit_body(model_path: str | Path | None, *, height_m: float | None = None, mass_kg: float | None = None,
             phenotype: Mapping[str, float] | None = None, cache_dir: str | Path | None = None,
             landmarks: Sequence[str] | None = LANDMARK_MARKERS, joints: Sequence[str] = DEFAULT_JOINTS,
             reg: float = 2e-3) -> BodyModel:
    """Fit Anny to a (scaled) Rajagopal2015-like model; see the module docstring.

    height_m, mass_kg: subject stature and mass (default: from the model's skull top and feet,
    and its total mass). phenotype: Anny values to hold (gender, age, muscle, proportions; 0..1).
    landmarks: model markers used as skin landmarks (None or () = joints only). reg: weight (m^2)
    of the rotation prior. Raises ConfigError for models without the Rajagopal bodies.
    """
    model = load_anny(cache_dir)
    subject = _subject(model_path, height_m, mass_kg)
    phen = fit_phenotype(model, subject.stature, subject.mass, phenotype)
    v, heads = _anny_rest(model, phen)
    faces = model.faces.numpy().astype(np.int64)
    labels = list(model.bone_labels)
    bodies, rest = default_transforms(model_path)
    bone_body = [anny_body_of_bone(lab) for lab in labels]
    # dense skin weights per OpenSim body
    vw = model.vertex_bone_weights.double().numpy()
    vi = model.vertex_bone_indices.numpy()
    body_of_bone = np.array([bodies.index(b) for b in bone_body])
    dense = np.zeros((len(v), len(bodies)))
    np.add.at(dense, (np.repeat(np.arange(len(v)), vi.shape[1]), body_of_bone[vi].ravel()), vw.ravel())
    part_idx = dense.argmax(axis=1)
    part_of = np.array(bodies)[part_idx]

    anny_stature = float(v[:, 2].max() - v[:, 2].min())
    ratio = subject.stature / anny_stature
    ap, ad = _anny_points(v, heads, labels, part_of, ratio, subject)
    affines = _fit_affines(ap, ad, subject, ratio, {}, reg)
    used: dict[str, int] = {}
    if landmarks:
        query = MeshQuery(faces, len(v))
        lm: dict[str, tuple[str, np.ndarray, np.ndarray]] = {}
        for name in landmarks:
            if name not in subject.markers:
                continue
            body, og = subject.markers[name]
            if body not in affines:
                continue
            guess = _inverse_apply(affines[body], og[None])[0]
            bi = bodies.index(body)
            mask = dense[:, bi] >= 0.2
            q, _ = query.closest(v, guess[None], mask if mask.sum() > 10 else None)
            lm[name] = (body, q[0], og)
            used[name] = int(np.argmin(np.linalg.norm(v - q[0], axis=1)))
        affines = _fit_affines(ap, ad, subject, ratio, lm, reg)

    # top-4 body weights; bodies without an affine (patella, talus) get none
    order = np.argsort(-dense, axis=1)[:, :4]
    w4 = np.take_along_axis(dense, order, axis=1)
    w4 = w4 / w4.sum(axis=1, keepdims=True)
    aff = np.stack([affines.get(b, np.eye(4)) for b in bodies])
    v0 = np.zeros_like(v)
    for k in range(4):
        a = aff[order[:, k]]
        v0 += w4[:, k, None] * (np.einsum("nij,nj->ni", a[:, :3, :3], v) + a[:, :3, 3])
    normals = vertex_normals(v0, faces)

    # segment fraction along each body (parent joint -> child joint) for clothing
    sp = subject.points
    seg = {"pelvis": ("lumbar", "hip_r"), "torso": ("lumbar", "head_top")}
    for s, _ in _SIDES:
        seg.update({f"femur_{s}": (f"hip_{s}", f"knee_{s}"), f"tibia_{s}": (f"knee_{s}", f"ankle_{s}"),
                    f"humerus_{s}": (f"shoulder_{s}", f"elbow_{s}"), f"ulna_{s}": (f"elbow_{s}", f"wrist_{s}"),
                    f"radius_{s}": (f"elbow_{s}", f"wrist_{s}"), f"hand_{s}": (f"wrist_{s}", f"mcp3_{s}"),
                    f"calcn_{s}": (f"ankle_{s}", f"mtp_{s}"), f"toes_{s}": (f"mtp_{s}", f"toe_tip_{s}")})
    frac = np.zeros(len(v0))
    for b, (p, c) in seg.items():
        sel = part_of == b
        d = sp[c] - sp[p]
        frac[sel] = (v0[sel] - sp[p]) @ d / (d @ d)

    # joint regressor: candidates = vertices dominated by the joint's child or parent body
    jp = joint_points(model_path, joints, bodies=bodies)
    centres = jp.in_ground(rest[None])[0]
    cands = []
    for j, name in enumerate(joints):
        child = bodies[jp.body_index[j]]
        near = {child}
        parent = _PARENT.get(child)
        if parent:
            near.add(parent)
        if child == "talus_r" or child == "talus_l":
            near |= {child.replace("talus", "calcn"), child.replace("talus", "tibia")}
        if child.startswith(("radius", "ulna")):
            near |= {child.replace("radius", "ulna"), child.replace("ulna", "radius"), child.replace(child.split("_")[0], "humerus")}
        if child.startswith("hand"):
            near |= {child.replace("hand", "radius"), child.replace("hand", "ulna")}
        cand = np.flatnonzero(np.isin(part_of, list(near)))
        cands.append(cand if len(cand) >= 8 else np.arange(len(v0)))
    ridx, rw = _regressor(v0, centres, cands)

    return BodyModel(
        vertices=v0.astype(np.float32), normals=normals, faces=faces.astype(np.int32),
        bone_index=order.astype(np.int32), bone_weight=w4.astype(np.float32), bodies=tuple(bodies),
        rest_transforms=rest, part=part_idx.astype(np.int32), segment_fraction=frac.astype(np.float32),
        joints=tuple(joints), regressor_index=ridx, regressor_weight=rw, phenotype=phen,
        stature_m=subject.stature, mass_kg=subject.mass, anny_stature_m=anny_stature,
        anny_mass_kg=_volume(v, faces) * ANNY_DENSITY, affine=aff, landmarks=used,
    )


_PARENT = {"femur_r": "pelvis", "femur_l": "pelvis", "tibia_r": "femur_r", "tibia_l": "femur_l",
           "talus_r": "tibia_r", "talus_l": "tibia_l", "calcn_r": "talus_r", "calcn_l": "talus_l",
           "toes_r": "calcn_r", "toes_l": "calcn_l", "torso": "pelvis", "humerus_r": "torso", "humerus_l": "torso",
           "ulna_r": "humerus_r", "ulna_l": "humerus_l", "radius_r": "ulna_r", "radius_l": "ulna_l",
           "hand_r": "radius_r", "hand_l": "radius_l"}


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m biohuman.render.body --build-cache DIR`: build Anny's cache once."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--build-cache", metavar="DIR", required=True, help="Anny cache folder to build")
    parser.add_argument("--keep-intermediate", action="store_true")
    args = parser.parse_args(argv)
    print(build_anny_cache(args.build_cache, keep_intermediate=args.keep_intermediate))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
