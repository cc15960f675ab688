"""Video front-ends: per-frame pose landmarks (MediaPipe Pose, the model inside its wheel) and image
features (EfficientNet-Lite0 on a person crop), cached per (trial, camera) as one .npz so that
training never reruns them.

Front-ends (`FRONTENDS`): `mediapipe_effnet` (default: landmarks + crop features), `mediapipe`
(landmarks only), `effnet` (pixels only: features of the whole frame, letterboxed to a square).
Output keys (T = frames): `time (T,)` s, `landmarks (T, 33, 4)` [x, y normalised to the image
width / height, z (MediaPipe's relative depth, hip-centred, image-width units), visibility],
`world (T, 33, 3)` m (MediaPipe world landmarks, hip-centred), `cnn (T, 1280)`, `bbox (T, 4)`
[x0, y0, x1, y1] px of the original image, `detected (T,)` bool, plus `frontend` (str) and
`image_size` ([width, height] px of the original video). Keys a front-end does not produce are
absent. Undetected frames have NaN-free zeros in landmarks/world and detected False.

Deterministic: the same video gives the same arrays (MediaPipe tracking only depends on the frames
before; torch runs in eval mode).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from biohuman.errors import ConfigError, InputFormatError

FRONTENDS: dict[str, tuple[str, ...]] = {
    "mediapipe_effnet": ("mediapipe", "effnet"),
    "mediapipe": ("mediapipe",),
    "effnet": ("effnet",),
}
"""Front-end name -> the streams it computes."""

N_LANDMARKS = 33
PROCESS_MAX_SIDE = 640
"""Frames are downscaled (never upscaled) to this longest side before MediaPipe and cropping."""
CROP_SIZE = 224
"""Side (px) of the square person crop fed to EfficientNet-Lite0."""
CROP_MARGIN = 1.3
"""The crop side is this times the larger extent of the landmarks."""
BATCH = 32
"""Crops per EfficientNet batch."""


def _check_frontend(frontend: str) -> tuple[str, ...]:
    if frontend not in FRONTENDS:
        raise ConfigError(f"unknown front-end {frontend!r} (known: {', '.join(FRONTENDS)})")
    return FRONTENDS[frontend]


def iter_video(path: str | Path, max_side: int = PROCESS_MAX_SIDE,
               step: int = 1) -> Iterator[tuple[np.ndarray | None, float, tuple[int, int]]]:
    """Decode an MP4 frame by frame: (RGB uint8 (h, w, 3) downscaled so that max(h, w) <= max_side,
    presentation time s, (width, height) of the original video). With step > 1 only every
    `step`-th frame is converted; the others come as (None, time, size). Raises InputFormatError."""
    import av

    path = Path(path)
    if not path.is_file():
        raise InputFormatError("video file does not exist", path)
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            for i, frame in enumerate(container.decode(stream)):
                w, h = frame.width, frame.height
                t = float(frame.pts * stream.time_base) if frame.pts is not None else float("nan")
                if i % step:
                    yield None, t, (w, h)
                    continue
                f = min(1.0, max_side / max(w, h))
                sw, sh = max(2, int(round(w * f))), max(2, int(round(h * f)))
                img = frame.to_ndarray(format="rgb24") if f == 1.0 else frame.to_ndarray(
                    width=sw, height=sh, format="rgb24")
                yield img, t, (w, h)
    except (av.error.FFmpegError, IndexError) as exc:  # type: ignore[attr-defined]
        raise InputFormatError(f"cannot read video: {exc}", path) from exc


def landmark_box(landmarks: np.ndarray, width: int, height: int, margin: float = CROP_MARGIN) -> np.ndarray:
    """Square box [x0, y0, x1, y1] (px) around normalised landmarks (33, >=2) of an image of this
    size: centred on the landmarks' extent, side = margin x its larger dimension."""
    x = landmarks[:, 0] * width
    y = landmarks[:, 1] * height
    cx, cy = (x.min() + x.max()) / 2, (y.min() + y.max()) / 2
    side = max(x.max() - x.min(), y.max() - y.min(), 8.0) * margin
    return np.array([cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2], dtype=np.float32)


def full_box(width: int, height: int) -> np.ndarray:
    """The square box (px) that letterboxes the whole image (centred, side = the longer side)."""
    side = float(max(width, height))
    cx, cy = width / 2, height / 2
    return np.array([cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2], dtype=np.float32)


def crop(image: np.ndarray, box: np.ndarray, size: int = CROP_SIZE) -> np.ndarray:
    """Square crop (size, size, 3) of `image` inside `box` [x0, y0, x1, y1] (px of this image),
    zero-padded where the box leaves the image."""
    import cv2

    h, w = image.shape[:2]
    x0, y0, x1, y1 = (int(round(v)) for v in box)
    side = max(x1 - x0, y1 - y0, 1)
    x1, y1 = x0 + side, y0 + side
    out = np.zeros((side, side, 3), dtype=np.uint8)
    sx0, sy0, sx1, sy1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
    if sx1 > sx0 and sy1 > sy0:
        out[sy0 - y0:sy1 - y0, sx0 - x0:sx1 - x0] = image[sy0:sy1, sx0:sx1]
    interp = cv2.INTER_AREA if side > size else cv2.INTER_LINEAR
    return cv2.resize(out, (size, size), interpolation=interp)


class FeatureExtractor:
    """Runs one front-end over the frames of one video (create one per video: MediaPipe tracks).

    `add(frame)` per frame (RGB uint8, any size), then `result()` -> the arrays of the module
    docstring in the frame's pixel units; `scale` converts boxes to the original image's pixels.
    """

    def __init__(self, frontend: str = "mediapipe_effnet", *, crop: bool = True,
                 model_complexity: int = 1) -> None:
        self.frontend = frontend
        self.streams = _check_frontend(frontend)
        self.use_crop = crop and "mediapipe" in self.streams
        self._pose = None
        self.has_pose = "mediapipe" in self.streams
        if self.has_pose:
            try:
                import mediapipe as mp
            except ImportError as exc:  # pragma: no cover - only without mediapipe
                raise ConfigError("mediapipe is not installed (pip install mediapipe==0.10.21)") from exc
            self._pose = mp.solutions.pose.Pose(static_image_mode=False, model_complexity=model_complexity,
                                                smooth_landmarks=True, enable_segmentation=False,
                                                min_detection_confidence=0.5, min_tracking_confidence=0.5)
        self._net = None
        if "effnet" in self.streams:
            self._net = _shared_effnet()
        self.landmarks: list[np.ndarray] = []
        self.world: list[np.ndarray] = []
        self.detected: list[bool] = []
        self.boxes: list[np.ndarray] = []
        self._crops: list[np.ndarray] = []
        self._feats: list[Any] = []  # futures of (n, 1280) arrays, in frame order
        self._pool = None
        if self._net is not None:
            from concurrent.futures import ThreadPoolExecutor

            # EfficientNet runs beside MediaPipe and decoding (torch releases the GIL)
            self._pool = ThreadPoolExecutor(max_workers=1)
        self._last_box: np.ndarray | None = None

    def add(self, image: np.ndarray) -> None:
        """Process one RGB frame (h, w, 3) uint8."""
        h, w = image.shape[:2]
        box = None
        if self._pose is not None:
            res = self._pose.process(np.ascontiguousarray(image))
            if res.pose_landmarks is not None:
                lm = np.array([(p.x, p.y, p.z, p.visibility) for p in res.pose_landmarks.landmark], np.float32)
                wl = np.array([(p.x, p.y, p.z) for p in res.pose_world_landmarks.landmark], np.float32)
                self.landmarks.append(lm)
                self.world.append(wl)
                self.detected.append(True)
                box = landmark_box(lm, w, h)
                self._last_box = box
            else:
                self.landmarks.append(np.zeros((N_LANDMARKS, 4), np.float32))
                self.world.append(np.zeros((N_LANDMARKS, 3), np.float32))
                self.detected.append(False)
        if box is None:
            box = self._last_box if (self.use_crop and self._last_box is not None) else full_box(w, h)
        if not self.use_crop:
            box = full_box(w, h)
        self.boxes.append(box)
        if self._net is not None:
            self._crops.append(crop(image, box))
            if len(self._crops) >= BATCH:
                self._flush()

    def _flush(self) -> None:
        if not self._crops or self._pool is None:
            return
        self._feats.append(self._pool.submit(_features, self._net, np.stack(self._crops)))
        self._crops = []

    def result(self, scale: float = 1.0) -> dict[str, np.ndarray]:
        """Arrays of every frame added so far; boxes multiplied by `scale` (to original pixels)."""
        self._flush()
        out: dict[str, np.ndarray] = {"bbox": (np.array(self.boxes, np.float32).reshape(-1, 4) * scale)}
        if self.has_pose:
            out["landmarks"] = np.array(self.landmarks, np.float32).reshape(-1, N_LANDMARKS, 4)
            out["world"] = np.array(self.world, np.float32).reshape(-1, N_LANDMARKS, 3)
            out["detected"] = np.array(self.detected, bool)
        if self._net is not None:
            feats = [f.result() for f in self._feats]
            out["cnn"] = np.concatenate(feats) if feats else np.zeros((0, 1280), np.float32)
        return out

    def close(self) -> None:
        """Release MediaPipe's graph and the feature thread (pending features are still computed)."""
        if self._pose is not None:
            self._pose.close()
            self._pose = None
        if self._pool is not None:
            self._flush()
            self._pool.shutdown(wait=True)


def _features(net, crops: np.ndarray) -> np.ndarray:  # noqa: ANN001 - EfficientNetLite0
    """Pooled EfficientNet-Lite0 features (n, 1280) float32 of uint8 crops (n, S, S, 3)."""
    import torch

    from biohuman.nn.effnet import normalize

    with torch.inference_mode():
        x = normalize(crops).contiguous(memory_format=torch.channels_last)
        return net.features(x).numpy().astype(np.float32)


_EFFNET: list[Any] = []


def _shared_effnet():  # noqa: ANN202 - EfficientNetLite0 | None
    """One EfficientNet-Lite0 per process (batch norms folded, channels-last: ~1.5x faster)."""
    if not _EFFNET:
        import torch

        from biohuman.nn.effnet import fuse_batchnorm, load_efficientnet_lite0

        _EFFNET.append(fuse_batchnorm(load_efficientnet_lite0()).to(memory_format=torch.channels_last))
    return _EFFNET[0]


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Set torch's intra-op threads to `n` inside the block (None: unchanged), then restore.

    The front-end parallelises across stages (FFmpeg decoding threads, MediaPipe's graph,
    EfficientNet in a worker thread), so one torch thread is fastest: measured on the shared
    2-core machine, intra-op threads made EfficientNet ~3x and the small transformer ~100x slower
    (spin-waiting on busy cores)."""
    import torch

    old = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(old)


def extract_video_features(video_path: str | Path, frontend: str = "mediapipe_effnet", *,
                           crop: bool = True, threads: int | None = 1) -> dict[str, np.ndarray]:
    """Run a front-end over a whole video: the arrays of the module docstring, `time` = the frames'
    presentation times (s). crop: EfficientNet sees the person crop (needs MediaPipe), else the
    whole frame. threads: torch threads meanwhile (see `torch_threads`)."""
    with torch_threads(threads):
        return _extract(video_path, frontend, crop)


def _extract(video_path: str | Path, frontend: str, crop: bool) -> dict[str, np.ndarray]:
    ext = FeatureExtractor(frontend, crop=crop)
    times = []
    size = None
    scale = 1.0
    try:
        for img, t, size in iter_video(video_path):
            ext.add(img)
            times.append(t)
            scale = size[0] / img.shape[1]
    finally:
        ext.close()
    if size is None:
        raise InputFormatError("video has no frames", video_path)
    out = ext.result(scale)
    out["time"] = np.array(times, np.float64)
    out["frontend"] = np.array(frontend)
    out["image_size"] = np.array(size, np.int64)
    return out


def cache_features(trial_nc: str | Path, camera: str | int, out_npz: str | Path,
                   frontend: str = "mediapipe_effnet") -> Path:
    """Front-end arrays of one camera of a labelled trial, saved atomically to `out_npz` with
    `time` = the trial's `video_time` (label time of each frame). Raises InputFormatError when the
    trial has no such video or its frame count differs from `video_time`."""
    from biohuman.io.atomic import atomic_path
    from biohuman.io.dataset import open_trial

    trial_nc = Path(trial_nc)
    ds = open_trial(trial_nc)
    if "video_file" not in ds:
        raise InputFormatError("trial has no video", trial_nc)
    cams = [str(c) for c in ds["camera"].values]
    name = cams[camera] if isinstance(camera, int) else str(camera)
    if name not in cams:
        raise InputFormatError(f"no camera {name!r}; cameras: {', '.join(cams)}", trial_nc)
    video = trial_nc.parent / str(ds["video_file"].sel(camera=name).item())
    feats = extract_video_features(video, frontend)
    vt = ds["video_time"].to_numpy().astype(np.float64)
    if len(vt) != len(feats["time"]):
        raise InputFormatError(f"video has {len(feats['time'])} frames, the trial lists {len(vt)}", video)
    feats["time"] = vt
    with atomic_path(out_npz) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **feats)
    return Path(out_npz)


def load_features(path: str | Path) -> dict[str, np.ndarray]:
    """Read a cached .npz (all keys, loaded into memory). Raises InputFormatError naming the file."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (OSError, ValueError) as exc:
        raise InputFormatError(f"cannot read front-end cache: {exc}", path) from exc
