"""`biohuman multiview`: the video model on real footage seen from several calibrated cameras.

The pose2sim demo (`Demo_SinglePerson`: four synchronised 60 fps views of one person, 100 frames,
and a Qualisys calibration `calibration/Calib.qca.txt`) is run through `biohuman predict` (the
library function `predict_video`, the same as the command) view by view with one checkpoint, and:

- cross-view agreement, per pair of views: Pearson correlation over time of each muscle's
  activation (the median over muscles whose prediction varies in both views), the RMSE (deg) of
  the non-root joint angles (pelvis tilt / list / rotation left out), and the 3D joint error
  (mm) after removing the pelvis position and rotating each view's camera-frame joints into the
  calibration's world frame with that camera's extrinsics (`world`; needs a model trained with
  `pose_frame: camera`, the default), and also after a per-frame rigid Procrustes rotation of one
  view's pelvis-relative joints onto the other's (`procrustes`);
- a shuffled-frame control: one view's front-end features permuted in time before the model
  (everything else the same) -> its agreement with the other views, to compare with the real
  view's;
- a 3D reference: MediaPipe's 2D landmarks of the four views (the front-end's detections at the
  frames the model sees, pixel coordinates of the original video) triangulated by weighted DLT
  (visibility weights; per frame and view MediaPipe's left/right labelling is checked against the
  other views, and views that disagree are down-weighted iteratively), with the reprojection
  error; the predicted joints mapped to MediaPipe's hips, knees, ankles, shoulders, elbows and
  wrists (`MEDIAPIPE_OF_JOINT`) are compared with it in world coordinates: MPJPE after aligning
  the hip midpoint (with the extrinsics' rotation) and PA-MPJPE (per-frame similarity Procrustes).

Camera model (`read_qca`): Qualisys stores image quantities in sub-pixels (64 per pixel: sensorMaxU
= 1087 x 64), so f = focalLength / 64 and the principal point = centerPoint / 64 minus the video
field of view's left / top; distortion (k1, k2, k3 radial, p1, p2 tangential) applies to normalised
coordinates as in OpenCV; the transform holds the camera position (mm) and a rotation whose rows
are the camera axes in the world, for a camera looking along its -z with y up in the image, so
OpenCV's camera (x right, y down, z forward) is R = diag(1, -1, -1) R_qca, t = -R position.
"""

from __future__ import annotations

import itertools
import json
import os
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from biohuman.errors import InputFormatError

SUBPIXELS = 64
"""Qualisys sub-pixels per pixel in .qca image quantities (focal lengths, centre point, sensor)."""
QCA_TO_OPENCV = np.diag([1.0, -1.0, -1.0])
"""Qualisys camera axes (looking along -z, y up) -> OpenCV camera axes (z forward, y down)."""
DEMO = Path("pose2sim") / "Pose2Sim" / "Demo_SinglePerson"
"""The pose2sim demo inside the external reference data folder."""
VIEWS = ("cam01", "cam02", "cam03", "cam04")
LANDMARK_JOINTS = ("shoulder_l", "shoulder_r", "elbow_l", "elbow_r", "wrist_l", "wrist_r",
                   "hip_l", "hip_r", "knee_l", "knee_r", "ankle_l", "ankle_r")
"""Predicted joints compared with triangulated MediaPipe landmarks (`MEDIAPIPE_OF_JOINT` gives the
landmark of each: MediaPipe's left_shoulder (11) <-> shoulder_l, ... left_ankle (27) <-> ankle_l)."""
MEDIAPIPE_NAMES = {11: "left_shoulder", 12: "right_shoulder", 13: "left_elbow", 14: "right_elbow", 15: "left_wrist",
                   16: "right_wrist", 23: "left_hip", 24: "right_hip", 25: "left_knee", 26: "right_knee",
                   27: "left_ankle", 28: "right_ankle"}
"""MediaPipe Pose's names of the landmarks compared (its left = the subject's left)."""
PELVIS_ANGLES = ("pelvis_tilt", "pelvis_list", "pelvis_rotation")
VARYING_STD = 1e-4
"""A muscle's activation 'varies' in a view when its standard deviation over time exceeds this."""
IRLS_SCALE_PX = 20.0
"""Cauchy scale (px) of the iterative down-weighting of views that disagree in triangulation."""


def default_pose2sim_dir() -> Path:
    """`$BIOHUMAN_EXTERNAL/pose2sim/Pose2Sim/Demo_SinglePerson` (default external folder:
    ../shared/data/external beside the repository)."""
    ext = os.environ.get("BIOHUMAN_EXTERNAL", Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "external")
    return (Path(ext) / DEMO).resolve()


# ------------------------------------------------------------------------------------------------
# Calibration and geometry
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Camera:
    """A pinhole camera with Brown distortion, OpenCV conventions: x_cam = R X_world + t (m),
    (u, v) = K (distorted x/z, y/z). dist = (k1, k2, p1, p2, k3); size = (width, height) px."""

    name: str
    K: np.ndarray
    R: np.ndarray
    t: np.ndarray
    dist: np.ndarray
    size: tuple[int, int]

    @property
    def position(self) -> np.ndarray:
        """Camera centre in world coordinates (m)."""
        return -self.R.T @ self.t

    @property
    def Rt(self) -> np.ndarray:
        """(3, 4) [R | t]: world -> camera (projection of normalised image coordinates)."""
        return np.hstack([self.R, self.t[:, None]])

    def distort(self, xy: np.ndarray) -> np.ndarray:
        """Normalised undistorted (..., 2) -> normalised distorted coordinates."""
        k1, k2, p1, p2, k3 = self.dist
        x, y = xy[..., 0], xy[..., 1]
        r2 = x * x + y * y
        radial = 1 + k1 * r2 + k2 * r2 ** 2 + k3 * r2 ** 3
        return np.stack([x * radial + 2 * p1 * x * y + p2 * (r2 + 2 * x * x),
                         y * radial + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y], axis=-1)

    def project(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """World points (..., 3) m -> pixels (..., 2) and depth (...,) m (positive in front)."""
        xc = np.asarray(X, np.float64) @ self.R.T + self.t
        z = xc[..., 2]
        xy = self.distort(xc[..., :2] / z[..., None])
        uv = xy @ self.K[:2, :2].T + self.K[:2, 2]
        return uv, z

    def normalise(self, uv: np.ndarray, iterations: int = 20) -> np.ndarray:
        """Pixels (..., 2) -> undistorted normalised coordinates (..., 2) (fixed-point inverse of
        `distort`)."""
        xd = (np.asarray(uv, np.float64) - self.K[:2, 2]) @ np.linalg.inv(self.K[:2, :2]).T
        xy = xd.copy()
        for _ in range(iterations):
            xy = xy + (xd - self.distort(xy))
        return xy


def read_qca(path: str | Path) -> dict[str, Camera]:
    """Active cameras of a Qualisys .qca.txt calibration (see the module docstring for the
    conventions), in file order, keyed by serial. Raises InputFormatError naming the file."""
    path = Path(path)
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError) as exc:
        raise InputFormatError(f"cannot read Qualisys calibration: {exc}", path) from exc
    cams: dict[str, Camera] = {}
    for el in root.iter("camera"):
        name = el.get("serial") or f"cam{len(cams) + 1:02d}"
        try:
            tr, it, fov = el.find("transform").attrib, el.find("intrinsic").attrib, el.find("fov_video").attrib
            rq = np.array([[float(tr[f"r{i}{j}"]) for j in (1, 2, 3)] for i in (1, 2, 3)])
            pos = np.array([float(tr[k]) for k in "xyz"]) / 1000.0
            left, top = float(fov["left"]), float(fov["top"])
            size = (int(round(float(fov["right"]) - left)) + 1, int(round(float(fov["bottom"]) - top)) + 1)
            fu, fv = float(it["focalLengthU"]) / SUBPIXELS, float(it["focalLengthV"]) / SUBPIXELS
            cu, cv = float(it["centerPointU"]) / SUBPIXELS - left, float(it["centerPointV"]) / SUBPIXELS - top
            dist = np.array([float(it.get(k, 0.0)) for k in ("radialDistortion1", "radialDistortion2",
                             "tangentalDistortion1", "tangentalDistortion2", "radialDistortion3")])
            rotation = int(float(el.get("viewrotation", "0")))
        except (AttributeError, KeyError, ValueError) as exc:
            raise InputFormatError(f"camera {name}: incomplete calibration ({exc})", path) from exc
        if rotation:
            raise InputFormatError(f"camera {name}: viewrotation {rotation} is not supported", path)
        if el.get("active", "1") == "0":
            continue
        if not np.allclose(rq @ rq.T, np.eye(3), atol=1e-4) or np.linalg.det(rq) < 0:
            raise InputFormatError(f"camera {name}: the transform's rotation is not orthonormal", path)
        R = QCA_TO_OPENCV @ rq
        K = np.array([[fu, 0.0, cu], [0.0, fv, cv], [0.0, 0.0, 1.0]])
        cams[name] = Camera(name, K, R, -R @ pos, dist, size)
    if not cams:
        raise InputFormatError("no cameras in the calibration", path)
    return cams


def triangulate(cams: list[Camera], uv: np.ndarray, weight: np.ndarray | None = None) -> np.ndarray:
    """Weighted linear (DLT) triangulation: pixels `uv (V, ..., 2)` of the same points in V
    cameras, weights `(V, ...)` (0 = not seen) -> world points `(..., 3)`; NaN where fewer than two
    views have weight. Works on undistorted normalised coordinates."""
    uv = np.asarray(uv, np.float64)
    V = len(cams)
    w = np.ones(uv.shape[:-1]) if weight is None else np.asarray(weight, np.float64)
    xy = np.stack([cams[v].normalise(uv[v]) for v in range(V)])               # (V, ..., 2)
    P = np.stack([c.Rt for c in cams])                                          # (V, 3, 4)
    P = P.reshape((V,) + (1,) * (uv.ndim - 2) + (3, 4))
    rows_x = w[..., None] * (xy[..., 0:1] * P[..., 2, :] - P[..., 0, :])       # (V, ..., 4)
    rows_y = w[..., None] * (xy[..., 1:2] * P[..., 2, :] - P[..., 1, :])
    A = np.moveaxis(np.concatenate([rows_x, rows_y], axis=0), 0, -2)           # (..., 2V, 4)
    A = np.nan_to_num(A)
    _, _, vt = np.linalg.svd(A)
    h = vt[..., -1, :]
    with np.errstate(divide="ignore", invalid="ignore"):
        X = h[..., :3] / h[..., 3:4]
    X[(w > 0).sum(0) < 2] = np.nan
    return X


def reprojection_errors(cams: list[Camera], X: np.ndarray, uv: np.ndarray) -> np.ndarray:
    """Pixel distances (V, ...) between the projections of world points X (..., 3) and uv (V, ..., 2)."""
    return np.stack([np.linalg.norm(c.project(X)[0] - uv[v], axis=-1) for v, c in enumerate(cams)])


def _swap_index(names: tuple[str, ...]) -> np.ndarray:
    """Index that exchanges left and right joints in `names` (`_l` <-> `_r`)."""
    flip = {n: n[:-2] + ("_r" if n.endswith("_l") else "_l") if n[-2:] in ("_l", "_r") else n for n in names}
    return np.array([names.index(flip[n]) for n in names])


def triangulate_landmarks(cams: list[Camera], uv: np.ndarray, weight: np.ndarray, names: tuple[str, ...] = LANDMARK_JOINTS,
                          *, resolve_swaps: bool = True, irls_iterations: int = 3) -> dict[str, np.ndarray]:
    """Triangulate per-frame 2D detections `uv (V, T, L, 2)` px with weights `(V, T, L)` (e.g.
    MediaPipe visibility; 0 = missed) of landmarks named `names`.

    resolve_swaps: per frame, every combination of exchanging a view's left and right labels is
    triangulated and the one with the smallest median reprojection error kept (2D pose estimators
    confuse the sides of a person seen from behind); the labels of the majority of views are kept
    as they are. Then `irls_iterations` rounds of Cauchy reweighting (scale `IRLS_SCALE_PX`) damp
    views that still disagree. Returns `points (T, L, 3)` m, `errors (V, T, L)` px (against the
    possibly exchanged labels), `swapped (V, T)` bool, and `uv`, `weight` as used."""
    uv = np.asarray(uv, np.float64).copy()
    w = np.asarray(weight, np.float64).copy()
    V, T = uv.shape[:2]
    swap = _swap_index(names)
    swapped = np.zeros((V, T), bool)
    if resolve_swaps and V > 2:
        best_err = np.full(T, np.inf)
        for combo in itertools.product((False, True), repeat=V - 1):
            flags = np.array((False, *combo))
            u = np.stack([uv[v][..., swap, :] if flags[v] else uv[v] for v in range(V)])
            ww = np.stack([w[v][..., swap] if flags[v] else w[v] for v in range(V)])
            e = reprojection_errors(cams, triangulate(cams, u, ww), u)
            e = np.where(ww > 0, e, np.nan)
            with np.errstate(all="ignore"):
                med = np.nanmedian(e.transpose(1, 0, 2).reshape(T, -1), axis=1)
            med = np.where(np.isfinite(med), med, np.inf)
            better = med < best_err - 1e-9
            best_err[better] = med[better]
            swapped[:, better] = flags[:, None]
        # keep the labels of the majority (the first view is not special)
        flip_all = swapped.sum(0) * 2 > V
        swapped[:, flip_all] = ~swapped[:, flip_all]
        for v in range(V):
            uv[v, swapped[v]] = uv[v, swapped[v]][:, swap]
            w[v, swapped[v]] = w[v, swapped[v]][:, swap]
    ww = w.copy()
    X = triangulate(cams, uv, ww)
    for _ in range(irls_iterations):
        e = np.nan_to_num(reprojection_errors(cams, X, uv), nan=1e6)
        ww = w / (1.0 + (e / IRLS_SCALE_PX) ** 2)
        X = triangulate(cams, uv, ww)
    err = reprojection_errors(cams, X, uv)
    err[w <= 0] = np.nan
    return {"points": X, "errors": err, "swapped": swapped, "uv": uv, "weight": w}


# ------------------------------------------------------------------------------------------------
# Comparisons
# ------------------------------------------------------------------------------------------------


def pcc(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson correlation over axis 0 of (T, K) arrays, per column; NaN where either is constant."""
    a = a - a.mean(0)
    b = b - b.mean(0)
    den = np.sqrt((a * a).sum(0) * (b * b).sum(0))
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, (a * b).sum(0) / den, np.nan)


def procrustes(A: np.ndarray, B: np.ndarray, *, scale: bool = True, translate: bool = True) -> np.ndarray:
    """A (..., N, 3) aligned onto B (..., N, 3) per leading index by the rotation (+ uniform scale,
    + translation) minimising the squared distances (Umeyama 1991); returns the aligned A."""
    ma = A.mean(-2, keepdims=True) if translate else np.zeros_like(A[..., :1, :])
    mb = B.mean(-2, keepdims=True) if translate else np.zeros_like(B[..., :1, :])
    a, b = A - ma, B - mb
    H = np.swapaxes(a, -1, -2) @ b                                  # (..., 3, 3)
    U, S, Vt = np.linalg.svd(H)
    d = np.sign(np.linalg.det(np.swapaxes(Vt, -1, -2) @ np.swapaxes(U, -1, -2)))
    D = np.ones(S.shape)
    D[..., -1] = d
    R = np.swapaxes(Vt, -1, -2) @ (D[..., :, None] * np.swapaxes(U, -1, -2))   # (..., 3, 3)
    s = ((S * D).sum(-1) / np.maximum((a * a).sum((-1, -2)), 1e-12))[..., None, None] if scale else 1.0
    return s * a @ np.swapaxes(R, -1, -2) + mb


def camera_to_world(joints: np.ndarray, cam: Camera) -> np.ndarray:
    """Camera-frame vectors (..., 3) (OpenCV axes) -> world-frame vectors (rotation only)."""
    return joints @ cam.R


def _rel(joints: np.ndarray, names: list[str], root: tuple[str, ...]) -> np.ndarray:
    idx = [names.index(r) for r in root]
    return joints - joints[:, idx].mean(1, keepdims=True)


def pair_agreement(a: dict[str, Any], b: dict[str, Any], cam_a: Camera | None, cam_b: Camera | None) -> dict[str, Any]:
    """Agreement of two views' predictions (`view_arrays` dicts on the same frames): activation
    PCC (median over muscles varying in both), joint-angle RMSE (deg, non-root coordinates) and
    pelvis-aligned 3D joint error (mm) in the world frame (`world`, with the cameras' rotations;
    None without cameras) and after a per-frame rigid rotation (`procrustes`)."""
    out: dict[str, Any] = {}
    n = min(len(a["time"]), len(b["time"]))
    if "activation" in a and "activation" in b:
        xa, xb = a["activation"][:n], b["activation"][:n]
        varying = (xa.std(0) > VARYING_STD) & (xb.std(0) > VARYING_STD)
        r = pcc(xa[:, varying], xb[:, varying])
        out["activation_pcc_median"] = float(np.nanmedian(r)) if np.isfinite(r).any() else float("nan")
        out["activation_pcc_mean"] = float(np.nanmean(r)) if np.isfinite(r).any() else float("nan")
        out["n_muscles_varying"] = int(varying.sum())
        out["activation_mae"] = float(np.abs(xa - xb).mean())
    if "angles" in a and "angles" in b:
        d = a["angles"][:n] - b["angles"][:n]
        out["joint_angle_rmse_deg"] = float(np.sqrt(np.mean(d ** 2)))
    if "joints" in a and "joints" in b:
        names = a["joint_names"]
        keep = [i for i, j in enumerate(names) if j != "pelvis"]
        ra = a["joints"][:n] - a["joints"][:n, [names.index("pelvis")]]
        rb = b["joints"][:n] - b["joints"][:n, [names.index("pelvis")]]
        ra, rb = ra[:, keep], rb[:, keep]
        if cam_a is not None and cam_b is not None:
            d3 = camera_to_world(ra, cam_a) - camera_to_world(rb, cam_b)
            out["joint_error_world_mm"] = float(1000 * np.linalg.norm(d3, axis=-1).mean())
        else:
            out["joint_error_world_mm"] = None
        out["joint_error_procrustes_mm"] = float(1000 * np.linalg.norm(procrustes(ra, rb, scale=False, translate=False) - rb,
                                                                       axis=-1).mean())
    return out


def landmark_mpjpe(view: dict[str, Any], cam: Camera | None, ref: np.ndarray) -> dict[str, Any]:
    """MPJPE (mm) of a view's predicted joints (`LANDMARK_JOINTS`) against triangulated landmarks
    `ref (T, 12, 3)` (world, m) on the same frames: `mpjpe_mm` with the hip midpoints aligned and
    the camera's rotation to world (None without a camera), `pa_mpjpe_mm` after a per-frame
    similarity Procrustes, and `mpjpe_per_joint_mm`. Frames with any NaN landmark are left out."""
    names = view["joint_names"]
    n = min(len(view["joints"]), len(ref))
    J = view["joints"][:n, [names.index(j) for j in LANDMARK_JOINTS]]
    ref = ref[:n]
    ok = np.isfinite(ref).all((1, 2))
    J, ref = J[ok], ref[ok]
    root = ("hip_l", "hip_r")
    pr = _rel(J, list(LANDMARK_JOINTS), root)
    rr = _rel(ref, list(LANDMARK_JOINTS), root)
    out: dict[str, Any] = {"n_frames": int(ok.sum())}
    if cam is not None and len(J):
        e = np.linalg.norm(camera_to_world(pr, cam) - rr, axis=-1)
        out["mpjpe_mm"] = float(1000 * e.mean())
        out["mpjpe_per_joint_mm"] = {j: float(1000 * e[:, i].mean()) for i, j in enumerate(LANDMARK_JOINTS)}
    else:
        out["mpjpe_mm"] = None
    out["pa_mpjpe_mm"] = float(1000 * np.linalg.norm(procrustes(J, ref) - ref, axis=-1).mean()) if len(J) else None
    return out


# ------------------------------------------------------------------------------------------------
# Predictions
# ------------------------------------------------------------------------------------------------


def view_arrays(ds) -> dict[str, Any]:  # noqa: ANN001 - xarray.Dataset
    """Arrays of a predicted trial used by the comparisons: time, activation (T, M), non-root
    joint angles (T, C) deg, joint positions (T, J, 3) m with their names."""
    out: dict[str, Any] = {"time": ds.time.to_numpy().astype(np.float64)}
    if "activation" in ds:
        out["activation"] = ds.activation.to_numpy().astype(np.float64)
        out["muscles"] = [str(m) for m in ds.muscle.values]
    if "joint_angle" in ds:
        coords = [str(c) for c in ds.coordinate.values]
        keep = [i for i, c in enumerate(coords) if c not in PELVIS_ANGLES]
        out["angles"] = ds.joint_angle.to_numpy()[:, keep].astype(np.float64)
        out["coordinates"] = [coords[i] for i in keep]
    if "joint_position" in ds:
        out["joints"] = ds.joint_position.to_numpy().astype(np.float64)
        out["joint_names"] = [str(j) for j in ds.joint.values]
    return out


def view_features(video: Path, frontend: str, step: int, cache: Path | None = None) -> dict[str, np.ndarray]:
    """The front-end arrays of the frames `biohuman predict` feeds the model (every `step`-th
    frame; the same extractor, so the same MediaPipe detections), plus `time`, `frame_index` and
    `image_size` [W, H]; cached as .npz at `cache` when given."""
    from biohuman.nn.frontend import torch_threads
    from biohuman.nn.predict import video_features

    source = f"{Path(video).resolve()}:{Path(video).stat().st_size}"
    if cache is not None and cache.is_file():
        with np.load(cache, allow_pickle=False) as z:
            if "source" in z.files and str(z["source"]) == source:
                return {k: z[k] for k in z.files if k != "source"}
    with torch_threads(1):
        feats, _ = video_features(video, frontend, step)
    if cache is not None:
        from biohuman.io.atomic import atomic_path

        cache.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(cache) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, source=np.array(source), **feats)
    return feats


def predict_from_features(model, feats: dict[str, np.ndarray], *, height_m: float, window: int, video: str,  # noqa: ANN001
                          checkpoint: str, order: np.ndarray | None = None):  # noqa: ANN201 - xarray.Dataset
    """The predicted trial of front-end arrays, as `predict_video` makes it (same windows, same
    dataset); with `order`, the per-frame arrays are taken in that order first (time unchanged)."""
    from biohuman.nn.frontend import torch_threads
    from biohuman.nn.predict import predicted_dataset, run_windows

    f = dict(feats)
    n = len(f["time"])
    if order is not None:
        for k, v in feats.items():
            if k not in ("time", "frame_index", "image_size") and isinstance(v, np.ndarray) and v.ndim and len(v) == n:
                f[k] = v[order]
    with torch_threads(1):
        out = run_windows(model, f, height_m, window=window, stride=max(1, window // 2), image_size=f["image_size"])
        return predicted_dataset(model, out, f["time"], height_m=height_m, mass_kg=70.0, detected=f.get("detected"),
                                 trial_id=Path(video).stem, source_video=str(video), checkpoint=str(checkpoint))


def _summary(x: np.ndarray) -> dict[str, float]:
    x = np.asarray(x, np.float64)
    x = x[np.isfinite(x)]
    if not len(x):
        return {"median": float("nan"), "mean": float("nan"), "p90": float("nan"), "n": 0}
    return {"median": float(np.median(x)), "mean": float(x.mean()), "p90": float(np.percentile(x, 90)), "n": int(len(x))}


def _mean_over(d: dict[str, dict[str, Any]], key: str) -> float:
    vals = [v[key] for v in d.values() if v.get(key) is not None and np.isfinite(v[key])]
    return float(np.mean(vals)) if vals else float("nan")


AGREEMENT_KEYS = ("activation_pcc_median", "joint_angle_rmse_deg", "joint_error_world_mm", "joint_error_procrustes_mm")


def run_multiview(checkpoint: str | Path, out_dir: str | Path, pose2sim: str | Path | None = None, *,
                  views: tuple[str, ...] = VIEWS, height_m: float = 1.70, shuffle_seed: int = 0,
                  predict: bool = True) -> dict[str, Any]:
    """Run the comparisons of the module docstring; writes `{out_dir}/multiview.json` (and the
    per-view predicted NetCDFs under `{out_dir}/predictions/`, front-end caches under
    `{out_dir}/features/`). Returns the figures (NaN as float('nan'); the JSON has null).

    checkpoint: a trained BioHumanNet; pose2sim: the Demo_SinglePerson folder (default
    `default_pose2sim_dir()`); height_m: the subject's height for the skeleton; shuffle_seed:
    the permutation of the shuffled-frame control; predict: run `predict_video` on each view
    (False: build the predictions from the cached front-end arrays only, the same numbers)."""
    import biohuman.io as bio
    from biohuman.nn.model import BioHumanNet
    from biohuman.nn.predict import MEDIAPIPE_OF_JOINT, MODEL_FPS, predict_video

    pose2sim = Path(pose2sim) if pose2sim is not None else default_pose2sim_dir()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    calib_path = pose2sim / "calibration" / "Calib.qca.txt"
    all_cams = read_qca(calib_path)
    missing = [v for v in views if v not in all_cams]
    if missing:
        raise InputFormatError(f"no calibration for {', '.join(missing)} (has {', '.join(all_cams)})", calib_path)
    cams = [all_cams[v] for v in views]
    videos = [pose2sim / "videos" / f"{v}.mp4" for v in views]
    for p in videos:
        if not p.is_file():
            raise InputFormatError("video file does not exist", p)

    model = BioHumanNet.from_checkpoint(checkpoint)
    info = getattr(model, "checkpoint_info", {}) or {}
    train_cfg = info.get("train_cfg") or {}
    pose_frame = str(train_cfg.get("pose_frame", "camera"))
    window = int(model.cfg.get("window") or train_cfg.get("window") or 64)
    model_fps = float(model.cfg.get("fps") or MODEL_FPS)
    import av

    with av.open(str(videos[0])) as c:
        video_fps = float(c.streams.video[0].average_rate or model_fps)
    step = max(1, int(round(video_fps / model_fps)))

    # front-end arrays (the model's inputs, incl. the MediaPipe landmarks) and predictions per view
    feats, preds, runs = {}, {}, {}
    for v, video in zip(views, videos):
        feats[v] = view_features(video, model.cfg["frontend"], step,
                                 out_dir / "features" / f"{v}_{model.cfg['frontend']}_step{step}.npz")
        if predict:
            nc = out_dir / "predictions" / f"{v}.nc"
            nc.parent.mkdir(parents=True, exist_ok=True)
            r = predict_video(video, checkpoint, nc, height_m=height_m, plot=False, overlay=False)
            runs[v] = {k: r[k] for k in ("n_video_frames", "n_frames", "stride", "detection_rate", "seconds_to_netcdf")}
            preds[v] = view_arrays(bio.open_trial(nc))
        else:
            preds[v] = view_arrays(predict_from_features(model, feats[v], height_m=height_m, window=window,
                                                         video=str(video), checkpoint=str(checkpoint)))
    n = min(len(p["time"]) for p in preds.values())
    times = np.stack([p["time"][:n] for p in preds.values()])
    result: dict[str, Any] = {
        "checkpoint": str(checkpoint), "pose2sim": str(pose2sim), "views": list(views), "height_m": height_m,
        "frontend": model.cfg["frontend"], "pose_frame": pose_frame, "window": window, "step": step,
        "n_frames": int(n), "time_spread_s": float(np.ptp(times, axis=0).max()),
        "joint_mapping": {j: f"{MEDIAPIPE_NAMES[MEDIAPIPE_OF_JOINT[j]]} ({MEDIAPIPE_OF_JOINT[j]})" for j in LANDMARK_JOINTS},
        "world_alignment": ("extrinsics: pelvis-relative camera-frame joints rotated by each camera's R^T"
                            if pose_frame == "camera" else
                            "none: the model predicts ground-frame poses; only Procrustes figures apply"),
    }
    use_cams = pose_frame == "camera"

    # calibration
    result["calibration"] = {
        c.name: {"fx": float(c.K[0, 0]), "fy": float(c.K[1, 1]), "cx": float(c.K[0, 2]), "cy": float(c.K[1, 2]),
                 "dist_k1_k2_p1_p2_k3": c.dist.tolist(), "position_m": c.position.tolist(),
                 "calibration_size": list(c.size), "video_size": [int(s) for s in feats[v]["image_size"]]}
        for v, c in zip(views, cams)}

    # the camera model alone: world points seen by every camera (inside every image) projected and
    # triangulated back
    X = np.random.default_rng(0).normal([0.0, 0.0, 1.0], 1.0, (2000, 3))
    proj = [c.project(X) for c in cams]
    inside = np.all([(z > 0.5) & (uv >= 0).all(-1) & (uv < c.size).all(-1) for c, (uv, z) in zip(cams, proj)], axis=0)
    uv = np.stack([p[0][inside] for p in proj])
    result["calibration_round_trip_max_m"] = float(np.abs(triangulate(cams, uv) - X[inside]).max())
    result["calibration_round_trip_n_points"] = int(inside.sum())

    # predictions: shapes and ranges
    per_view: dict[str, Any] = {}
    for v in views:
        p = preds[v]
        d: dict[str, Any] = {"n_frames": int(len(p["time"]))}
        if "activation" in p:
            d.update(n_muscles=int(p["activation"].shape[1]), activation_min=float(p["activation"].min()),
                     activation_max=float(p["activation"].max()), activation_mean=float(p["activation"].mean()))
        if "joints" in p:
            d["joints_finite"] = bool(np.isfinite(p["joints"]).all())
            d["n_joints"] = int(p["joints"].shape[1])
        if v in runs:
            d.update(runs[v])
        per_view[v] = d
    result["predictions"] = per_view

    # the feature path reproduces predict (the shuffled control uses it)
    if predict:
        v0 = views[0]
        same = view_arrays(predict_from_features(model, feats[v0], height_m=height_m, window=window,
                                                 video=str(videos[0]), checkpoint=str(checkpoint)))
        result["feature_path_max_abs_diff"] = {
            k: float(np.abs(same[k][:n] - preds[v0][k][:n]).max()) for k in ("activation", "angles", "joints") if k in same}

    # cross-view agreement
    cam_of = dict(zip(views, cams))
    pairs = {}
    for a, b in itertools.combinations(views, 2):
        pairs[f"{a}-{b}"] = pair_agreement(preds[a], preds[b], cam_of[a] if use_cams else None,
                                           cam_of[b] if use_cams else None)
    result["pairs"] = pairs
    result["agreement_mean"] = {k: _mean_over(pairs, k) for k in AGREEMENT_KEYS}

    # shuffled-frame control: each view's features permuted in time, against the other views
    rng = np.random.default_rng(shuffle_seed)
    control: dict[str, Any] = {}
    for v, video in zip(views, videos):
        order = rng.permutation(len(feats[v]["time"]))
        shuf = view_arrays(predict_from_features(model, feats[v], height_m=height_m, window=window, video=str(video),
                                                 checkpoint=str(checkpoint), order=order))
        real_pairs = {o: pair_agreement(preds[v], preds[o], cam_of[v] if use_cams else None,
                                        cam_of[o] if use_cams else None) for o in views if o != v}
        shuf_pairs = {o: pair_agreement(shuf, preds[o], cam_of[v] if use_cams else None,
                                        cam_of[o] if use_cams else None) for o in views if o != v}
        control[v] = {"real": {k: _mean_over(real_pairs, k) for k in AGREEMENT_KEYS},
                      "shuffled": {k: _mean_over(shuf_pairs, k) for k in AGREEMENT_KEYS}}
    result["shuffled_control"] = control
    result["shuffled_control_mean"] = {
        which: {k: float(np.nanmean([control[v][which][k] for v in views])) for k in AGREEMENT_KEYS}
        for which in ("real", "shuffled")}

    # triangulated MediaPipe landmarks
    if all("landmarks" in feats[v] for v in views):
        lm_idx = [MEDIAPIPE_OF_JOINT[j] for j in LANDMARK_JOINTS]
        uv = np.stack([feats[v]["landmarks"][:n][:, lm_idx, :2] * feats[v]["image_size"][None, None, :2].astype(np.float64)
                       for v in views])
        vis = np.stack([feats[v]["landmarks"][:n][:, lm_idx, 3] * feats[v]["detected"][:n, None] for v in views])
        tri = triangulate_landmarks(cams, uv, np.clip(vis, 0.0, 1.0))
        plain = triangulate_landmarks(cams, uv, np.clip(vis, 0.0, 1.0), resolve_swaps=False, irls_iterations=0)
        err = tri["errors"]
        result["triangulation"] = {
            "reprojection_px": _summary(err),
            "reprojection_px_plain_dlt": _summary(plain["errors"]),
            "reprojection_px_per_view": {v: _summary(err[i]) for i, v in enumerate(views)},
            "reprojection_px_per_landmark": {j: float(np.nanmedian(err[:, :, i])) for i, j in enumerate(LANDMARK_JOINTS)},
            "frames_with_sides_exchanged": {v: int(tri["swapped"][i].sum()) for i, v in enumerate(views)},
            "n_frames_triangulated": int(np.isfinite(tri["points"]).all((1, 2)).sum()),
        }
        result["mpjpe"] = {v: landmark_mpjpe(preds[v], cam_of[v] if use_cams else None, tri["points"]) for v in views}
        result["mpjpe_mean"] = {k: _mean_over(result["mpjpe"], k) for k in ("mpjpe_mm", "pa_mpjpe_mm")}
        np.savez(out_dir / "triangulated_landmarks.npz", points=tri["points"], errors=err, swapped=tri["swapped"],
                 time=times[0], landmarks=np.array(LANDMARK_JOINTS))
    from biohuman.io.atomic import atomic_write_text
    from biohuman.validation.report import to_json

    atomic_write_text(out_dir / "multiview.json", json.dumps(to_json(result), indent=1))
    return result


def summary_lines(r: dict[str, Any]) -> list[str]:
    """Human-readable lines of `run_multiview`'s figures."""
    def f(x: Any, fmt: str = ".3f") -> str:
        return "n/a" if x is None or (isinstance(x, float) and not np.isfinite(x)) else format(x, fmt)

    lines = [f"multiview: {len(r['views'])} views, {r['n_frames']} frames each, checkpoint {r['checkpoint']} "
             f"(front-end {r['frontend']}, pose frame {r['pose_frame']})"]
    for pair, d in r["pairs"].items():
        lines.append(f"  {pair}: activation PCC {f(d.get('activation_pcc_median'))}, joint-angle RMSE "
                     f"{f(d.get('joint_angle_rmse_deg'), '.1f')} deg, "
                     f"3D joints {f(d.get('joint_error_world_mm'), '.0f')} mm "
                     f"(world) / {f(d.get('joint_error_procrustes_mm'), '.0f')} mm (Procrustes)")
    m = r["agreement_mean"]
    lines.append(f"  mean over pairs: activation PCC {f(m['activation_pcc_median'])}, joint-angle RMSE "
                 f"{f(m['joint_angle_rmse_deg'], '.1f')} deg, 3D joints {f(m['joint_error_world_mm'], '.0f')} mm (world) / "
                 f"{f(m['joint_error_procrustes_mm'], '.0f')} mm (Procrustes)")
    c = r["shuffled_control_mean"]
    lines.append(f"  shuffled-frame control (mean over views): activation PCC {f(c['real']['activation_pcc_median'])} "
                 f"real vs {f(c['shuffled']['activation_pcc_median'])} shuffled; joint-angle RMSE "
                 f"{f(c['real']['joint_angle_rmse_deg'], '.1f')} vs {f(c['shuffled']['joint_angle_rmse_deg'], '.1f')} deg; "
                 f"3D joints (world) {f(c['real']['joint_error_world_mm'], '.0f')} vs "
                 f"{f(c['shuffled']['joint_error_world_mm'], '.0f')} mm")
    if "triangulation" in r:
        t = r["triangulation"]
        lines.append("  triangulated MediaPipe landmarks: reprojection error median "
                     f"{f(t['reprojection_px']['median'], '.1f')} px "
                     f"(p90 {f(t['reprojection_px']['p90'], '.1f')}), per view "
                     + ", ".join(f"{v} {f(s['median'], '.1f')}" for v, s in t["reprojection_px_per_view"].items()))
        for v, d in r["mpjpe"].items():
            lines.append(f"  {v} vs triangulated landmarks: MPJPE {f(d.get('mpjpe_mm'), '.0f')} mm, "
                         f"PA-MPJPE {f(d.get('pa_mpjpe_mm'), '.0f')} mm")
    return lines
