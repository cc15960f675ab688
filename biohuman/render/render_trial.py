"""Render one trial: scaled .osim + coordinates (+ activations) -> one MP4 per camera and one
labels NetCDF (camera parameters, 2D projections of joints and markers with visibility, part /
silhouette masks), frame-for-frame aligned with the label time base.

Frame i of every video shows the pose at t0 + i / fps, t0 being the first label time; the pose is
linearly interpolated from the label rate (e.g. 100 Hz). `video_time(frame)` stores those times.
"""

from __future__ import annotations

import json
import time as _time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from biohuman.errors import ConfigError, InputFormatError
from biohuman.io.atomic import atomic_path
from biohuman.render.camera import Camera, camera_config, look_at, sample_cameras
from biohuman.render.pose import (DEFAULT_JOINTS, body_transforms, frame_times, joint_points, marker_points,
                                  resample_coordinates)
from biohuman.render.scene import background_image, sample_scene, scene_config, vertex_colors

RENDER_DEFAULTS: dict[str, Any] = {
    "width": 256,  # px
    "height": 256,  # px
    "fps": 30.0,  # video frame rate; frame i shows the pose at t0 + i / fps
    "mode": "body",  # "body" (Anny mesh fitted to the model) or "skeleton" (OpenSim bone meshes)
    "crf": 18,  # H.264 quality
    "masks": True,  # store part masks (silhouettes) in the labels file
    "anny_cache_dir": None,  # None: $ANNY_CACHE_DIR or ~/.cache/anny
    "phenotype": {},  # fixed Anny phenotype values (gender, age, muscle, proportions), 0..1
    "cameras": {},  # see biohuman.render.camera.CAMERA_DEFAULTS
    "scene": {},  # see biohuman.render.scene.SCENE_DEFAULTS
}
"""Render config keys and defaults (the lead's config.yaml `render:` section mirrors these)."""

VISIBILITY_FLAGS = (0, 1, 2)
VISIBILITY_MEANINGS = "occluded visible outside_image"

# Bodies whose surface may cover a point on a given body without occluding it (joint neighbours).
_NEIGHBOURS: dict[str, tuple[str, ...]] = {
    "pelvis": ("femur_r", "femur_l", "torso"), "torso": ("pelvis", "humerus_r", "humerus_l"),
}
for _s in "rl":
    _NEIGHBOURS.update({
        f"femur_{_s}": ("pelvis", f"tibia_{_s}", f"patella_{_s}"), f"tibia_{_s}": (f"femur_{_s}", f"talus_{_s}", f"calcn_{_s}", f"patella_{_s}"),
        f"patella_{_s}": (f"femur_{_s}", f"tibia_{_s}"), f"talus_{_s}": (f"tibia_{_s}", f"calcn_{_s}"),
        f"calcn_{_s}": (f"talus_{_s}", f"tibia_{_s}", f"toes_{_s}"), f"toes_{_s}": (f"calcn_{_s}",),
        f"humerus_{_s}": ("torso", f"ulna_{_s}", f"radius_{_s}"), f"ulna_{_s}": (f"humerus_{_s}", f"radius_{_s}", f"hand_{_s}"),
        f"radius_{_s}": (f"humerus_{_s}", f"ulna_{_s}", f"hand_{_s}"), f"hand_{_s}": (f"radius_{_s}", f"ulna_{_s}"),
    })


def render_config(config: Mapping[str, Any] | None) -> dict[str, Any]:
    """Render config with defaults filled in; unknown keys raise ConfigError."""
    cfg = dict(RENDER_DEFAULTS)
    for k, v in (config or {}).items():
        if k not in RENDER_DEFAULTS:
            raise ConfigError(f"unknown render config key {k!r} (known: {sorted(RENDER_DEFAULTS)})")
        cfg[k] = v
    if cfg["mode"] not in ("body", "skeleton"):
        raise ConfigError(f"render mode must be 'body' or 'skeleton', got {cfg['mode']!r}")
    if int(cfg["width"]) < 16 or int(cfg["height"]) < 16 or int(cfg["width"]) % 2 or int(cfg["height"]) % 2:
        raise ConfigError(f"image size must be even and >= 16 px, got {cfg['width']}x{cfg['height']}")
    if float(cfg["fps"]) <= 0:
        raise ConfigError(f"fps must be positive, got {cfg['fps']}")
    cfg["cameras"] = camera_config(cfg["cameras"])
    cfg["scene"] = scene_config(cfg["scene"])
    return cfg


@dataclass
class Actor:
    """What is drawn: a skinned mesh over the model's bodies and how to pose it."""

    mode: str
    bodies: tuple[str, ...]
    vertices: np.ndarray
    normals: np.ndarray
    faces: np.ndarray
    bone_index: np.ndarray
    bone_weight: np.ndarray
    part: np.ndarray  # (N,) body index
    fraction: np.ndarray  # (N,) position along the body (clothing)
    rest_inverse: np.ndarray  # (B, 4, 4): skin matrix = T_b(t) @ rest_inverse[b]
    stature_m: float
    info: dict[str, Any] = field(default_factory=dict)

    def skin_matrices(self, transforms: np.ndarray) -> np.ndarray:
        """(T, B, 4, 4) skinning matrices from body transforms (T, B, 4, 4)."""
        return np.asarray(transforms) @ self.rest_inverse[None]

    def colors(self, scene: Any) -> np.ndarray:  # noqa: ANN401 - Scene
        """Vertex colours for a scene (bone ivory in skeleton mode)."""
        if self.mode == "skeleton":
            return np.tile(np.array([0.89, 0.85, 0.76], np.float32), (len(self.vertices), 1))
        return vertex_colors(scene, list(self.bodies), self.part, self.fraction)


def make_actor(model_path: str | Path | None, mode: str = "body", *, height_m: float | None = None,
               mass_kg: float | None = None, phenotype: Mapping[str, float] | None = None,
               anny_cache_dir: str | Path | None = None) -> Actor:
    """The Anny body fitted to the model (mode "body") or the model's bone meshes ("skeleton")."""
    if mode == "body":
        from biohuman.render.body import fit_body

        body = fit_body(model_path, height_m=height_m, mass_kg=mass_kg, phenotype=phenotype,
                        cache_dir=anny_cache_dir)
        return Actor("body", body.bodies, body.vertices, body.normals, body.faces, body.bone_index,
                     body.bone_weight, body.part, body.segment_fraction, np.linalg.inv(body.rest_transforms),
                     body.stature_m, {"phenotype": body.phenotype, "body": body})
    if mode == "skeleton":
        from biohuman.render.pose import default_transforms
        from biohuman.render.skeleton import skeleton_mesh

        sk = skeleton_mesh(model_path)
        n = len(sk.vertices)
        idx = np.zeros((n, 4), np.int32)
        idx[:, 0] = sk.body_index
        w = np.zeros((n, 4), np.float32)
        w[:, 0] = 1.0
        names, rest = default_transforms(model_path, sk.bodies)
        ground_y = np.einsum("nj,nj->n", rest[sk.body_index, 1, :3], sk.vertices) + rest[sk.body_index, 1, 3]
        stature = float(height_m) if height_m else float(ground_y.max() - ground_y.min())
        return Actor("skeleton", sk.bodies, sk.vertices, sk.normals, sk.faces, idx, w, sk.body_index.copy(),
                     np.zeros(n, np.float32), np.tile(np.eye(4), (len(sk.bodies), 1, 1)), stature, {})
    raise ConfigError(f"render mode must be 'body' or 'skeleton', got {mode!r}")


def _visibility(uv: np.ndarray, depth: np.ndarray, part_img: np.ndarray, depth_img: np.ndarray | None,
                point_body: np.ndarray, bodies: tuple[str, ...], surface_tol: float | None) -> np.ndarray:
    """Flags (T, P): 2 outside the image, 0 occluded, 1 visible.

    Joints (surface_tol None): occluded when the surface at the pixel belongs to a body that is
    neither the point's body nor a neighbour. Markers (surface_tol in m): visible when the drawn
    surface at the pixel lies within surface_tol of the marker's depth.
    """
    T, P = uv.shape[:2]
    h, w = part_img.shape[1:]
    col = np.rint(uv[..., 0]).astype(int)
    row = np.rint(uv[..., 1]).astype(int)
    inside = (col >= 0) & (col < w) & (row >= 0) & (row < h) & (depth > 0)
    flags = np.full((T, P), 2, np.int8)
    tt = np.broadcast_to(np.arange(T)[:, None], (T, P))
    lab = np.zeros((T, P), np.int64)
    lab[inside] = part_img[tt[inside], row[inside], col[inside]]
    if surface_tol is None:
        ok = np.zeros((len(bodies) + 1, len(bodies)), bool)  # [label, body]
        ok[0, :] = True
        for b, name in enumerate(bodies):
            ok[b + 1, b] = True
            for nb in _NEIGHBOURS.get(name, ()):
                if nb in bodies:
                    ok[bodies.index(nb) + 1, b] = True
        vis = ok[lab, np.broadcast_to(point_body[None], (T, P))]
    else:
        surf = np.full((T, P), np.inf)
        surf[inside] = depth_img[tt[inside], row[inside], col[inside]]
        vis = surf >= depth - surface_tol
    flags[inside] = vis[inside].astype(np.int8)
    return flags


@dataclass
class RenderResult:
    """Paths written by render_trial and summary numbers."""

    videos: dict[str, Path]
    labels: Path
    n_frames: int
    fps: float
    seconds: float
    silhouette_hit_rate: dict[str, float]
    gl_renderer: str


def render_trial(model_path: str | Path | None, coordinates: pd.DataFrame, out_dir: str | Path, *,
                 config: Mapping[str, Any] | None = None, seed: int = 0, trial_id: str = "trial",
                 height_m: float | None = None, mass_kg: float | None = None,
                 actor: Actor | None = None, cameras: list[Camera] | None = None) -> RenderResult:
    """Render a trial from every sampled camera.

    model_path: the subject's scaled .osim (None = generic Rajagopal2015). coordinates: IK
    coordinates, time index (s) x coordinate columns (radians / metres). out_dir receives
    `{trial_id}_{camera}.mp4` per camera and `{trial_id}_render.nc` (see docs/rendering.md).
    config: see RENDER_DEFAULTS. seed: draws cameras and scenes (same seed -> same videos).
    actor / cameras: reuse a fitted body or fixed cameras (tests, benchmarks).
    """
    from biohuman.render.gl import Renderer, SkinnedMesh
    from biohuman.render.video import VideoWriter

    t_start = _time.perf_counter()
    cfg = render_config(config)
    out_dir = Path(out_dir)
    if not isinstance(coordinates, pd.DataFrame) or len(coordinates) < 1:
        raise InputFormatError("coordinates must be a non-empty DataFrame (time index, coordinate columns)",
                               model_path)
    w, h, fps = int(cfg["width"]), int(cfg["height"]), float(cfg["fps"])
    t = np.asarray(coordinates.index, float)
    times = frame_times(float(t[0]), float(t[-1]), fps)
    if actor is None:
        actor = make_actor(model_path, cfg["mode"], height_m=height_m, mass_kg=mass_kg,
                           phenotype=cfg["phenotype"], anny_cache_dir=cfg["anny_cache_dir"])
    names, tr = body_transforms(model_path, resample_coordinates(coordinates, times), actor.bodies)
    skin = actor.skin_matrices(tr).astype(np.float32)
    jp = joint_points(model_path, DEFAULT_JOINTS, bodies=actor.bodies)
    mp = marker_points(model_path, None, bodies=actor.bodies)
    joints3d, markers3d = jp.in_ground(tr), mp.in_ground(tr)
    rng = np.random.default_rng(seed)
    pelvis = tr[:, actor.bodies.index("pelvis"), :3, 3] if "pelvis" in actor.bodies else joints3d[:, 0]
    if cameras is None:
        cameras = sample_cameras(cfg["cameras"], rng, pelvis, times, actor.stature_m, w, h)
    # the floor sits at y = 0 unless the feet go lower (IK noise): then just under the lowest foot
    mtp = [jp.names.index(j) for j in ("mtp_r", "mtp_l") if j in jp.names]
    floor_y = min(0.0, float(joints3d[:, mtp, 1].min()) - 0.02) if mtp else 0.0
    renderer = Renderer(w, h)
    gl_name = renderer.info["GL_RENDERER"]
    mesh_args = (actor.vertices, actor.normals, actor.faces)
    n_cam, T = len(cameras), len(times)
    jp_uv = np.zeros((n_cam, T, len(jp.names), 2), np.float32)
    jp_z = np.zeros((n_cam, T, len(jp.names)), np.float32)
    jp_vis = np.zeros((n_cam, T, len(jp.names)), np.int8)
    mk_uv = np.zeros((n_cam, T, len(mp.names), 2), np.float32)
    mk_z = np.zeros((n_cam, T, len(mp.names)), np.float32)
    mk_vis = np.zeros((n_cam, T, len(mp.names)), np.int8)
    masks = np.zeros((n_cam, T, h, w), np.uint8) if cfg["masks"] else None
    videos: dict[str, Path] = {}
    scenes, hit_rate = [], {}
    for c, cam in enumerate(cameras):
        scene = sample_scene(cfg["scene"], rng)
        scenes.append(scene)
        renderer.set_mesh(SkinnedMesh(*mesh_args, actor.colors(scene), actor.bone_index, actor.bone_weight,
                                      actor.part + 1))
        renderer.set_background(background_image(scene, w, h))
        centre = pelvis.mean(axis=0)
        renderer.set_floor(scene.floor, *scene.floor_colors, center=(float(centre[0]), float(centre[2])), y=floor_y)
        renderer.set_light(scene.light_dir, scene.light_intensity, scene.ambient)
        views, proj = cam.gl_view(), cam.gl_projection()
        part_imgs = np.zeros((T, h, w), np.uint8)
        depth_imgs = np.zeros((T, h, w), np.float32)
        path = out_dir / f"{trial_id}_{cam.name}.mp4"
        with VideoWriter(path, fps, w, h, crf=int(cfg["crf"])) as writer:
            for i in range(T):
                rgb, part, depth = renderer.render(skin[i], views[i], proj, depth=True)
                writer.write(rgb)
                part_imgs[i], depth_imgs[i] = part, depth
        videos[cam.name] = path
        uv, z = cam.project(joints3d)
        jp_uv[c], jp_z[c] = uv, z
        jp_vis[c] = _visibility(uv, z, part_imgs, None, jp.body_index, actor.bodies, None)
        uv, z = cam.project(markers3d)
        mk_uv[c], mk_z[c] = uv, z
        mk_vis[c] = _visibility(uv, z, part_imgs, depth_imgs, mp.body_index, actor.bodies, 0.03)
        from biohuman.render.checks import silhouette_hits

        hits = silhouette_hits(jp_uv[c], part_imgs)
        sel = jp_vis[c] == 1
        hit_rate[cam.name] = float(hits[sel].mean()) if sel.any() else float("nan")
        if masks is not None:
            masks[c] = part_imgs
    renderer.release()
    labels = out_dir / f"{trial_id}_render.nc"
    ds = _labels_dataset(cfg, trial_id, seed, times, cameras, scenes, actor, jp.names, mp.names, joints3d,
                         jp_uv, jp_z, jp_vis, mk_uv, mk_z, mk_vis, masks, videos, gl_name, hit_rate)
    with atomic_path(labels) as tmp:
        enc = {k: {"zlib": True, "complevel": 4} for k in ds.data_vars}
        ds.to_netcdf(tmp, engine="netcdf4", encoding=enc)
    return RenderResult(videos=videos, labels=labels, n_frames=T, fps=fps,
                        seconds=_time.perf_counter() - t_start, silhouette_hit_rate=hit_rate, gl_renderer=gl_name)


def _labels_dataset(cfg, trial_id, seed, times, cameras, scenes, actor, joint_names, marker_names, joints3d,  # noqa: ANN001, ANN202, PLR0913
                    jp_uv, jp_z, jp_vis, mk_uv, mk_z, mk_vis, masks, videos, gl_name, hit_rate):
    import xarray as xr

    import biohuman

    flag = {"flag_values": np.array(VISIBILITY_FLAGS, np.int8), "flag_meanings": VISIBILITY_MEANINGS}
    cams = [c.name for c in cameras]
    data = {
        "video_time": (("frame",), times, {"units": "s", "long_name": "label time shown by each video frame (t0 + i / fps)"}),
        "camera_intrinsics": (("camera", "row3", "col3"), np.stack([c.intrinsics for c in cameras]),
                              {"units": "px", "long_name": "pinhole intrinsics K (OpenCV, top-left pixel centre at 0,0)"}),
        "camera_extrinsics": (("camera", "frame", "row4", "col4"), np.stack([c.extrinsics for c in cameras]),
                              {"units": "m", "long_name": "ground (OpenSim, y up) to camera (x right, y down, z forward) per frame"}),
        "joint_projection": (("camera", "frame", "joint", "uv"), jp_uv, {"units": "px", "long_name": "projected OpenSim joint centre"}),
        "joint_depth": (("camera", "frame", "joint"), jp_z, {"units": "m", "long_name": "joint centre depth along the optical axis"}),
        "joint_visibility": (("camera", "frame", "joint"), jp_vis, {"units": "1", "long_name": "joint centre visibility", **flag}),
        "marker_projection": (("camera", "frame", "marker", "uv"), mk_uv, {"units": "px", "long_name": "projected model skin marker"}),
        "marker_depth": (("camera", "frame", "marker"), mk_z, {"units": "m", "long_name": "marker depth along the optical axis"}),
        "marker_visibility": (("camera", "frame", "marker"), mk_vis, {"units": "1", "long_name": "marker visibility (surface within 3 cm)", **flag}),
        "joint_position_video": (("frame", "joint", "axis"), joints3d.astype(np.float32),
                                 {"units": "m", "long_name": "OpenSim joint centre in ground at the video frame times"}),
        "video_file": (("camera",), np.array([videos[c].name for c in cams], dtype=object),
                       {"units": "1", "long_name": "video file name (same folder as this file)"}),
        "camera_params": (("camera",), np.array([json.dumps(c.params) for c in cameras], dtype=object),
                          {"units": "1", "long_name": "sampled camera parameters (JSON)"}),
        "scene_params": (("camera",), np.array([json.dumps(s.params()) for s in scenes], dtype=object),
                         {"units": "1", "long_name": "sampled scene parameters (JSON)"}),
    }
    if masks is not None:
        data["part_mask"] = (("camera", "frame", "row", "col"), masks,
                             {"units": "1", "long_name": "body part per pixel: 0 background, k + 1 body part_name[k]; silhouette = part_mask > 0"})
    ds = xr.Dataset(
        {k: xr.Variable(d, v, a) for k, (d, v, a) in data.items()},
        coords={"camera": cams, "joint": list(joint_names), "marker": list(marker_names), "uv": ["u", "v"],
                "axis": ["x", "y", "z"], "part_name": ("part", list(actor.bodies)), "frame": np.arange(len(times))},
        attrs={"trial_id": trial_id, "fps": float(cfg["fps"]), "width": int(cfg["width"]), "height": int(cfg["height"]),
               "t0": float(times[0]), "render_mode": actor.mode, "seed": int(seed), "gl_renderer": gl_name,
               "biohuman_version": biohuman.__version__, "phenotype": json.dumps(actor.info.get("phenotype", {})),
               "silhouette_hit_rate": json.dumps(hit_rate)},
    )
    return ds


def _muscle_segments(model_path: str | Path | None, coordinates: pd.DataFrame, muscles: list[str]
                     ) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Muscle paths (OpenSim GeometryPath points in ground) per frame as line segments:
    a list over frames of (L_t, 2, 3) arrays, and of (L_t,) muscle indices (via points come and go)."""
    from biohuman.dynamics.kinematics import _prepare
    from biohuman.osim.model import opensim

    osim = opensim()
    posed = _prepare(model_path, coordinates)
    model, state = posed.model, posed.state
    ms = model.getMuscles()
    objs = [ms.get(m) for m in muscles]
    segs_t, owners = [], []
    for t in range(len(posed.time)):
        for k, c in enumerate(posed.coords):
            c.setValue(state, float(posed.values[t, k]), False)
        model.realizePosition(state)
        segs, own = [], []
        for mi, m in enumerate(objs):
            path = osim.GeometryPath.safeDownCast(m.getPath()) if hasattr(m, "getPath") else m.getGeometryPath()
            pts = path.getCurrentPath(state)
            p = np.array([[pts.get(i).getLocationInGround(state).get(j) for j in range(3)] for i in range(pts.getSize())])
            for a, b in zip(p[:-1], p[1:]):
                segs.append((a, b))
                own.append(mi)
        segs_t.append(np.array(segs).reshape(-1, 2, 3))
        owners.append(np.array(own, int))
    return segs_t, owners


def activation_color(a: np.ndarray) -> np.ndarray:
    """Colours (..., 3) for activations 0..1: dark blue (0) -> yellow (0.5) -> red (1)."""
    stops = np.array([[0.15, 0.2, 0.55], [0.95, 0.85, 0.2], [0.9, 0.08, 0.05]])
    x = np.clip(np.asarray(a, float), 0, 1) * 2
    i = np.minimum(x.astype(int), 1)
    f = (x - i)[..., None]
    return stops[i] * (1 - f) + stops[i + 1] * f


def render_preview(model_path: str | Path | None, coordinates: pd.DataFrame, out_path: str | Path, *,
                   activations: pd.DataFrame | None = None, config: Mapping[str, Any] | None = None,
                   azimuth_deg: float = 40.0, frames: int | None = None, seed: int = 0,
                   height_m: float | None = None, mass_kg: float | None = None) -> Path:
    """Side-by-side preview: the rendered body next to the skeleton with muscles coloured by
    activation (0..1, blue -> yellow -> red). `out_path` ending in .mp4 writes a video, .png a
    contact sheet of `frames` frames (default 6) spread over the trial.

    activations: time index (s) x muscle columns; None draws the muscles grey.
    """
    import imageio.v3 as iio

    from biohuman.render.gl import Renderer, SkinnedMesh
    from biohuman.render.video import VideoWriter

    cfg = render_config(config)
    out_path = Path(out_path)
    w, h, fps = int(cfg["width"]), int(cfg["height"]), float(cfg["fps"])
    t = np.asarray(coordinates.index, float)
    times = frame_times(float(t[0]), float(t[-1]), fps)
    sheet = out_path.suffix.lower() == ".png"
    if sheet:
        times = np.linspace(t[0], t[-1], frames or 6)
    elif frames:
        times = times[:frames]
    coords = resample_coordinates(coordinates, times)
    body = make_actor(model_path, "body", height_m=height_m, mass_kg=mass_kg, phenotype=cfg["phenotype"],
                      anny_cache_dir=cfg["anny_cache_dir"])
    skel = make_actor(model_path, "skeleton", height_m=height_m)
    names, tr = body_transforms(model_path, coords, body.bodies)
    _, tr_s = body_transforms(model_path, coords, skel.bodies)
    from biohuman.osim.model import model_info

    muscles = list(model_info(model_path).muscles)
    segs, owner = _muscle_segments(model_path, coords, muscles)
    if activations is not None:
        act = resample_coordinates(activations[[m for m in muscles if m in activations.columns]], times)
        a = np.stack([act[m].to_numpy() if m in act.columns else np.zeros(len(times)) for m in muscles], axis=1)
    else:
        a = None
    pelvis = tr[:, body.bodies.index("pelvis"), :3, 3]
    centre = pelvis.mean(axis=0)
    a_rad = np.deg2rad(azimuth_deg)
    dist = 3.2
    k = np.array([[1.6 * w, 0, (w - 1) / 2], [0, 1.6 * w, (h - 1) / 2], [0, 0, 1.0]])
    ext = np.stack([look_at(np.array([p[0] + dist * np.cos(a_rad), 1.1, p[2] + dist * np.sin(a_rad)]),
                            np.array([p[0], 0.52 * body.stature_m, p[2]])) for p in pelvis])
    cam = Camera("preview", w, h, k, ext, {"azimuth_deg": azimuth_deg})
    rng = np.random.default_rng(seed)
    scene = sample_scene({**cfg["scene"], "backgrounds": ["gradient"]}, rng)
    r = Renderer(w, h)
    rs = Renderer(w, h, ctx=r.ctx)
    for rr in (r, rs):
        rr.set_light(np.array([0.3, 0.7, 0.65]), 0.85, 0.35)
    r.set_mesh(SkinnedMesh(body.vertices, body.normals, body.faces, body.colors(scene), body.bone_index,
                           body.bone_weight, body.part + 1))
    r.set_background(background_image(scene, w, h))
    r.set_floor(True, *scene.floor_colors, center=(float(centre[0]), float(centre[2])))
    rs.set_mesh(SkinnedMesh(skel.vertices, skel.normals, skel.faces, skel.colors(scene), skel.bone_index,
                            skel.bone_weight, skel.part + 1))
    views, proj = cam.gl_view(), cam.gl_projection()
    skin_b, skin_s = body.skin_matrices(tr), skel.skin_matrices(tr_s)
    out_frames = []
    for i in range(len(times)):
        left = r.render(skin_b[i], views[i], proj)[0]
        col = activation_color(a[i][owner[i]]) if a is not None else np.full((len(owner[i]), 3), 0.6)
        rs.set_lines(segs[i], col, width=max(2.0, w / 128))
        right = rs.render(skin_s[i], views[i], proj, background=(0.08, 0.08, 0.1))[0]
        out_frames.append(np.concatenate([left, right], axis=1))
    r.release()
    if sheet:
        cols = min(3, len(out_frames))
        rows = [np.concatenate(out_frames[j:j + cols] + [np.zeros_like(out_frames[0])] * (cols - len(out_frames[j:j + cols])), axis=1)
                for j in range(0, len(out_frames), cols)]
        with atomic_path(out_path) as tmp:
            iio.imwrite(tmp, np.concatenate(rows, axis=0))
    else:
        with VideoWriter(out_path, fps, 2 * w, h, crf=int(cfg["crf"])) as writer:
            for f in out_frames:
                writer.write(f)
    return out_path
