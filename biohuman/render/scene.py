"""Scene appearance: lights, skin and clothing colours, backgrounds (solid, gradient, procedural
textures), sampled reproducibly from a config dict."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from biohuman.errors import ConfigError

SCENE_DEFAULTS: dict[str, Any] = {
    "backgrounds": ["solid", "gradient", "checker", "stripes", "noise"],  # drawn uniformly
    "floor": True,  # a textured floor plane at y = 0
    "light_elevation_deg": [20.0, 70.0],
    "light_azimuth_deg": [-180.0, 180.0],  # relative to the camera's azimuth
    "light_intensity": [0.7, 1.0],
    "ambient": [0.25, 0.45],
    "sleeve": [0.0, 1.0],  # sleeve length as a fraction of the upper arm (0 = none) .. forearm (>1)
    "trouser": [0.3, 1.9],  # trouser length: fraction of the thigh (<1) .. shank (>1)
}
"""Scene config keys with their defaults ([lo, hi] = uniform draw)."""

SKIN_TONES = np.array([  # linear-ish sRGB, light to dark (approximate Fitzpatrick I..VI)
    [0.96, 0.80, 0.69], [0.91, 0.72, 0.58], [0.80, 0.60, 0.45], [0.66, 0.46, 0.32], [0.48, 0.32, 0.22],
    [0.33, 0.22, 0.15]])


@dataclass(frozen=True)
class Scene:
    """Appearance of one rendered video (colours as RGB floats 0..1)."""

    skin: np.ndarray
    top: np.ndarray
    bottom: np.ndarray
    shoes: np.ndarray
    sleeve: float
    trouser: float
    light_dir: np.ndarray  # (3,) unit vector towards the light, camera frame (OpenGL axes)
    light_intensity: float
    ambient: float
    background: str
    bg_colors: np.ndarray  # (2, 3)
    bg_scale: float
    floor: bool
    floor_colors: np.ndarray  # (2, 3)
    seed: int

    def params(self) -> dict[str, Any]:
        """Plain-data description for provenance."""
        return {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in self.__dict__.items()}


def scene_config(config: Mapping[str, Any] | None) -> dict[str, Any]:
    """Config with defaults; unknown keys raise ConfigError."""
    cfg = dict(SCENE_DEFAULTS)
    for k, v in (config or {}).items():
        if k not in SCENE_DEFAULTS:
            raise ConfigError(f"unknown scene config key {k!r} (known: {sorted(SCENE_DEFAULTS)})")
        cfg[k] = v
    bad = set(cfg["backgrounds"]) - {"solid", "gradient", "checker", "stripes", "noise"}
    if bad or not cfg["backgrounds"]:
        raise ConfigError(f"unknown or empty backgrounds: {sorted(bad) or cfg['backgrounds']}")
    return cfg


def _u(v: Any, rng: np.random.Generator) -> float:
    if isinstance(v, (int, float)):
        return float(v)
    return float(rng.uniform(float(v[0]), float(v[1])))


def _color(rng: np.random.Generator, sat: tuple[float, float] = (0.2, 0.8), val: tuple[float, float] = (0.15, 0.9)
           ) -> np.ndarray:
    import colorsys

    return np.array(colorsys.hsv_to_rgb(rng.uniform(0, 1), rng.uniform(*sat), rng.uniform(*val)))


def sample_scene(config: Mapping[str, Any] | None, rng: np.random.Generator) -> Scene:
    """Draw lights, skin and clothing colours and a background."""
    cfg = scene_config(config)
    el = np.deg2rad(_u(cfg["light_elevation_deg"], rng))
    az = np.deg2rad(_u(cfg["light_azimuth_deg"], rng) * 0.5)  # keep the key light mostly frontal
    light = np.array([np.sin(az) * np.cos(el), np.sin(el), np.cos(az) * np.cos(el)])
    skin = SKIN_TONES[rng.integers(len(SKIN_TONES))] * rng.uniform(0.92, 1.05)
    bg = str(cfg["backgrounds"][rng.integers(len(cfg["backgrounds"]))])
    bg_colors = np.stack([_color(rng, (0.0, 0.5), (0.3, 0.95)), _color(rng, (0.0, 0.6), (0.2, 0.9))])
    return Scene(
        skin=np.clip(skin, 0, 1), top=_color(rng), bottom=_color(rng, (0.1, 0.7), (0.1, 0.6)),
        shoes=_color(rng, (0.0, 0.4), (0.05, 0.5)), sleeve=_u(cfg["sleeve"], rng), trouser=_u(cfg["trouser"], rng),
        light_dir=light / np.linalg.norm(light), light_intensity=_u(cfg["light_intensity"], rng),
        ambient=_u(cfg["ambient"], rng), background=bg, bg_colors=bg_colors, bg_scale=float(rng.uniform(6, 24)),
        floor=bool(cfg["floor"]), floor_colors=np.stack([_color(rng, (0.0, 0.3), (0.3, 0.8)),
                                                         _color(rng, (0.0, 0.3), (0.2, 0.7))]),
        seed=int(rng.integers(0, 2**31 - 1)),
    )


def background_image(scene: Scene, width: int, height: int) -> np.ndarray:
    """Background (height, width, 3) uint8: solid, vertical gradient, checker, stripes or value noise."""
    rng = np.random.default_rng(scene.seed)
    c0, c1 = scene.bg_colors
    yy, xx = np.mgrid[0:height, 0:width] / max(width, height)
    if scene.background == "solid":
        t = np.zeros((height, width))
    elif scene.background == "gradient":
        t = yy * (height / max(width, height)) ** -1
    elif scene.background == "checker":
        s = scene.bg_scale
        t = ((np.floor(xx * s) + np.floor(yy * s)) % 2).astype(float)
    elif scene.background == "stripes":
        ang = rng.uniform(0, np.pi)
        t = 0.5 + 0.5 * np.sin(2 * np.pi * scene.bg_scale * (np.cos(ang) * xx + np.sin(ang) * yy))
    elif scene.background == "noise":
        t = np.zeros((height, width))
        for octave, amp in ((4, 0.5), (8, 0.25), (16, 0.15), (32, 0.1)):
            g = rng.uniform(0, 1, (octave + 1, octave + 1))
            gy, gx = yy * octave, xx * octave
            i, j = np.minimum(gy.astype(int), octave - 1), np.minimum(gx.astype(int), octave - 1)
            fy, fx = gy - i, gx - j
            fy, fx = fy * fy * (3 - 2 * fy), fx * fx * (3 - 2 * fx)
            t += amp * ((g[i, j] * (1 - fx) + g[i, j + 1] * fx) * (1 - fy) + (g[i + 1, j] * (1 - fx) + g[i + 1, j + 1] * fx) * fy)
    else:
        raise ConfigError(f"unknown background {scene.background!r}")
    img = c0[None, None] * (1 - t[..., None]) + c1[None, None] * t[..., None]
    return (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)


def vertex_colors(scene: Scene, part_names: list[str], part: np.ndarray, fraction: np.ndarray) -> np.ndarray:
    """Per-vertex RGB (N, 3) float32: skin, a top (torso + sleeves), trousers/shorts and shoes.

    part: (N,) index into part_names (OpenSim body of each vertex); fraction: (N,) position along
    that body from its parent joint (0) to its child joint (1).
    """
    names = np.array(part_names)[part]
    col = np.tile(scene.skin, (len(part), 1))
    base = np.array([n.rsplit("_", 1)[0] for n in names])
    top = (base == "torso") & (fraction < 0.78)  # neck and head stay skin
    top |= (base == "humerus") & (fraction < scene.sleeve)
    top |= np.isin(base, ("ulna", "radius")) & (fraction < scene.sleeve - 1.0)
    bottom = base == "pelvis"
    bottom |= (base == "femur") & (fraction < scene.trouser)
    bottom |= (base == "tibia") & (fraction < scene.trouser - 1.0)
    shoes = np.isin(base, ("calcn", "toes", "talus")) | ((base == "tibia") & (fraction > 0.93))
    col[top] = scene.top
    col[bottom] = scene.bottom
    col[shoes] = scene.shoes
    return col.astype(np.float32)
