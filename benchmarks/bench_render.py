"""Rendering speed at 256 x 256 with the Anny body, on whatever OpenGL EGL finds (llvmpipe on CPU).

Times the per-frame work of render_trial for one camera: OpenSim forward kinematics at the frame
times, skinning in the vertex shader (one draw call), read-back of colour, part labels and depth,
and H.264 encoding. One-off setup (Anny fit, context creation) is reported separately.

    python benchmarks/bench_render.py [--frames 300]   # Anny cache: $ANNY_CACHE_DIR or <repo>/.cache/anny

The last line is `fps=<x>` (frames per second of the whole per-frame loop).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def main() -> None:
    from _render_data import anny_cache, gait_coordinates

    from biohuman.render.camera import sample_cameras
    from biohuman.render.gl import Renderer, SkinnedMesh
    from biohuman.render.pose import body_transforms, frame_times, resample_coordinates
    from biohuman.render.render_trial import make_actor
    from biohuman.render.scene import background_image, sample_scene
    from biohuman.render.video import VideoWriter

    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=300)
    ap.add_argument("--size", type=int, default=256)
    args = ap.parse_args()
    w = h = args.size
    t = time.perf_counter()
    actor = make_actor(None, "body", anny_cache_dir=anny_cache())  # $ANNY_CACHE_DIR or <repo>/.cache/anny
    setup = time.perf_counter() - t
    coords = gait_coordinates(args.frames / 30.0 + 0.1)
    times = frame_times(coords.index[0], coords.index[0] + (args.frames - 1) / 30.0, 30.0)
    rng = np.random.default_rng(0)
    t = time.perf_counter()
    r = Renderer(w, h)
    ctx_s = time.perf_counter() - t
    scene = sample_scene(None, rng)
    r.set_mesh(SkinnedMesh(actor.vertices, actor.normals, actor.faces, actor.colors(scene), actor.bone_index,
                           actor.bone_weight, actor.part + 1))
    r.set_background(background_image(scene, w, h))
    r.set_floor(True, *scene.floor_colors)
    r.set_light(scene.light_dir, scene.light_intensity, scene.ambient)
    t0 = time.perf_counter()
    _, tr = body_transforms(None, resample_coordinates(coords, times), actor.bodies)
    skin = actor.skin_matrices(tr).astype(np.float32)
    t_fk = time.perf_counter() - t0
    cam = sample_cameras({"count": 1}, rng, tr[:, actor.bodies.index("pelvis"), :3, 3], times, actor.stature_m,
                         w, h)[0]
    views, proj = cam.gl_view(), cam.gl_projection()
    t_draw = t_enc = 0.0
    with tempfile.TemporaryDirectory() as tmp, VideoWriter(Path(tmp) / "b.mp4", 30.0, w, h) as writer:
        for i in range(len(times)):
            a = time.perf_counter()
            rgb, part, depth = r.render(skin[i], views[i], proj, depth=True)
            b = time.perf_counter()
            writer.write(rgb)
            t_enc += time.perf_counter() - b
            t_draw += b - a
    total = t_fk + t_draw + t_enc
    n = len(times)
    print(f"GL: {r.info['GL_RENDERER']} | {r.info['GL_VERSION']}")
    print(f"mesh: {len(actor.vertices)} vertices, {len(actor.faces)} triangles, {len(actor.bodies)} bones")
    print(f"setup: Anny fit {setup:.2f} s, GL context {ctx_s:.2f} s")
    print(f"per frame ({n} frames, {w}x{h}): FK {1e3 * t_fk / n:.2f} ms, draw+readback {1e3 * t_draw / n:.2f} ms, "
          f"encode {1e3 * t_enc / n:.2f} ms")
    print(f"render-only fps={n / t_draw:.1f}")
    print(f"fps={n / total:.1f}")


if __name__ == "__main__":
    main()
