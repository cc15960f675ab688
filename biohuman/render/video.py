"""MP4 video writing and reading (PyAV, H.264, constant frame rate, exact frame timestamps).

Frame i of a video written here has presentation time i / fps, and shows the pose at label time
t0 + i / fps (t0 is stored with the camera parameters, see render_trial).
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from types import TracebackType

import numpy as np

from biohuman.errors import ConfigError, InputFormatError
from biohuman.io.atomic import atomic_path


def _rate(fps: float) -> Fraction:
    return Fraction(fps).limit_denominator(1001)


class VideoWriter:
    """Write RGB frames to an MP4 atomically (temporary name, renamed on close).

        with VideoWriter(path, fps=30, width=256, height=256) as w:
            w.write(rgb)  # (H, W, 3) uint8

    crf: x264 quality (lower = better; 18 is visually lossless). Odd sizes are rejected (yuv420p).
    """

    def __init__(self, path: str | Path, fps: float = 30.0, width: int = 256, height: int = 256,
                 crf: int = 18, codec: str = "libx264") -> None:
        if width % 2 or height % 2:
            raise ConfigError(f"video size must be even for yuv420p, got {width}x{height}")
        self.path = Path(path)
        self.fps, self.width, self.height, self.crf, self.codec = fps, width, height, crf, codec
        self.n = 0
        self._ctx = None
        self._container = None

    def __enter__(self) -> VideoWriter:
        import av

        self._ctx = atomic_path(self.path)
        tmp = self._ctx.__enter__()
        self._container = av.open(str(tmp), mode="w", format="mp4")
        stream = self._container.add_stream(self.codec, rate=_rate(self.fps))
        stream.width, stream.height = self.width, self.height
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": str(self.crf), "preset": "veryfast", "tune": "animation", "threads": "1"}
        stream.codec_context.time_base = 1 / _rate(self.fps)
        self._stream = stream
        return self

    def write(self, rgb: np.ndarray) -> None:
        """Append one frame (H, W, 3) uint8."""
        import av

        if rgb.shape != (self.height, self.width, 3):
            raise ConfigError(f"frame shape {rgb.shape} does not match the video {self.height}x{self.width}x3")
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
        frame.pts = self.n
        frame.time_base = self._stream.codec_context.time_base
        for packet in self._stream.encode(frame):
            self._container.mux(packet)
        self.n += 1

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        try:
            if exc_type is None:
                for packet in self._stream.encode():
                    self._container.mux(packet)
            self._container.close()
        finally:
            self._ctx.__exit__(exc_type, exc, tb)


def read_video(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """All frames (T, H, W, 3) uint8 and their presentation times (T,) in seconds."""
    import av

    path = Path(path)
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            frames, times = [], []
            for frame in container.decode(stream):
                frames.append(frame.to_ndarray(format="rgb24"))
                times.append(float(frame.pts * stream.time_base))
    except (av.error.FFmpegError, IndexError) as exc:  # type: ignore[attr-defined]
        raise InputFormatError(f"cannot read video: {exc}", path) from exc
    return np.stack(frames), np.array(times)
