"""Offscreen OpenGL rasteriser (moderngl, EGL): one vertex buffer per mesh, linear-blend or rigid
skinning in the vertex shader, one draw call per frame.

`Renderer.render` returns the RGB image and a part-label image (0 = background, k + 1 = body k),
from which silhouettes and joint visibility follow. On a machine without a GPU, EGL runs on
Mesa's llvmpipe (CPU); with a GPU driver's EGL present, that device is used.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from biohuman.errors import ConfigError

MAX_BONES = 32

_MESH_VS = """
#version 330
uniform mat4 bones[%d];
uniform mat4 view;
uniform mat4 proj;
in vec3 in_pos;
in vec3 in_nrm;
in vec3 in_col;
in ivec4 in_bone;
in vec4 in_w;
in float in_part;
out vec3 v_nrm;
out vec3 v_col;
out vec3 v_cam;
flat out float v_part;
void main() {
    mat4 s = in_w.x * bones[in_bone.x] + in_w.y * bones[in_bone.y]
           + in_w.z * bones[in_bone.z] + in_w.w * bones[in_bone.w];
    vec4 cam = view * (s * vec4(in_pos, 1.0));
    v_cam = cam.xyz;
    v_nrm = mat3(view) * (mat3(s) * in_nrm);
    v_col = in_col;
    v_part = in_part;
    gl_Position = proj * cam;
}
""" % MAX_BONES

_MESH_FS = """
#version 330
uniform vec3 light_dir;
uniform float light_intensity;
uniform float ambient;
in vec3 v_nrm;
in vec3 v_col;
in vec3 v_cam;
flat in float v_part;
layout(location = 0) out vec4 f_color;
layout(location = 1) out vec4 f_part;
void main() {
    vec3 n = normalize(v_nrm);
    vec3 eye = normalize(-v_cam);
    if (dot(n, eye) < 0.0) n = -n;
    float diff = max(dot(n, light_dir), 0.0);
    float fill = 0.25 * max(dot(n, eye), 0.0);
    vec3 h = normalize(light_dir + eye);
    float spec = 0.08 * pow(max(dot(n, h), 0.0), 24.0);
    vec3 c = v_col * (ambient + light_intensity * diff + fill) + spec * light_intensity;
    f_color = vec4(pow(clamp(c, 0.0, 1.0), vec3(1.0 / 1.1)), 1.0);
    f_part = vec4(v_part / 255.0, 0.0, 0.0, 1.0);
}
"""

_BG_VS = """
#version 330
in vec2 in_xy;
out vec2 v_uv;
void main() { v_uv = in_xy * 0.5 + 0.5; gl_Position = vec4(in_xy, 0.9999, 1.0); }
"""

_BG_FS = """
#version 330
uniform sampler2D tex;
in vec2 v_uv;
layout(location = 0) out vec4 f_color;
layout(location = 1) out vec4 f_part;
void main() { f_color = vec4(texture(tex, vec2(v_uv.x, 1.0 - v_uv.y)).rgb, 1.0); f_part = vec4(0.0); }
"""

_FLOOR_VS = """
#version 330
uniform mat4 view;
uniform mat4 proj;
in vec3 in_pos;
out vec3 v_world;
out vec3 v_cam;
void main() { v_world = in_pos; vec4 c = view * vec4(in_pos, 1.0); v_cam = c.xyz; gl_Position = proj * c; }
"""

_FLOOR_FS = """
#version 330
uniform vec3 c0;
uniform vec3 c1;
uniform float tile;
in vec3 v_world;
in vec3 v_cam;
layout(location = 0) out vec4 f_color;
layout(location = 1) out vec4 f_part;
void main() {
    float k = mod(floor(v_world.x / tile) + floor(v_world.z / tile), 2.0);
    float fade = clamp(length(v_cam) / 25.0, 0.0, 1.0);
    vec3 c = mix(mix(c0, c1, k), 0.5 * (c0 + c1), fade);
    f_color = vec4(c, 1.0);
    f_part = vec4(0.0);
}
"""

_LINE_VS = """
#version 330
uniform mat4 view;
uniform mat4 proj;
in vec3 in_pos;
in vec3 in_col;
out vec3 v_col;
void main() { v_col = in_col; gl_Position = proj * (view * vec4(in_pos, 1.0)); }
"""

_LINE_FS = """
#version 330
in vec3 v_col;
layout(location = 0) out vec4 f_color;
layout(location = 1) out vec4 f_part;
void main() { f_color = vec4(v_col, 1.0); f_part = vec4(0.0); }
"""


def create_context(backend: str | None = None, device_index: int | None = None):  # noqa: ANN201 - moderngl.Context
    """A standalone OpenGL 3.3+ context: EGL (default; GPU driver's EGL when present, else Mesa
    llvmpipe). Set BIOHUMAN_EGL_DEVICE to pick an EGL device index.

    Raises ConfigError naming the missing library when no context can be made.
    """
    try:
        import moderngl
    except ImportError as exc:
        raise ConfigError("moderngl is not installed (pip install moderngl)") from exc
    kwargs: dict = {"backend": backend or os.environ.get("BIOHUMAN_GL_BACKEND", "egl")}
    dev = device_index if device_index is not None else os.environ.get("BIOHUMAN_EGL_DEVICE")
    if dev is not None:
        kwargs["device_index"] = int(dev)
    try:
        return moderngl.create_standalone_context(require=330, **kwargs)
    except Exception as exc:  # noqa: BLE001 - glcontext raises plain Exceptions
        raise ConfigError(f"cannot create an offscreen OpenGL context ({kwargs}): {exc}. On Debian/Ubuntu: "
                          "apt-get install libegl1 libegl-mesa0 libgl1-mesa-dri") from exc


@dataclass
class SkinnedMesh:
    """Mesh data for the renderer: vertices (N, 3) at rest, normals (N, 3), faces (F, 3),
    colours (N, 3) 0..1, bone indices / weights (N, 4), part label (N,) (0 = background)."""

    vertices: np.ndarray
    normals: np.ndarray
    faces: np.ndarray
    colors: np.ndarray
    bone_index: np.ndarray
    bone_weight: np.ndarray
    part: np.ndarray


class Renderer:
    """Offscreen renderer of one skinned mesh (plus background, floor and optional lines)."""

    def __init__(self, width: int = 256, height: int = 256, ctx=None) -> None:  # noqa: ANN001
        self.ctx = ctx or create_context()
        self.width, self.height = int(width), int(height)
        ctx = self.ctx
        self.prog = ctx.program(vertex_shader=_MESH_VS, fragment_shader=_MESH_FS)
        self.bg_prog = ctx.program(vertex_shader=_BG_VS, fragment_shader=_BG_FS)
        self.floor_prog = ctx.program(vertex_shader=_FLOOR_VS, fragment_shader=_FLOOR_FS)
        self.line_prog = ctx.program(vertex_shader=_LINE_VS, fragment_shader=_LINE_FS)
        self.fbo = ctx.framebuffer(
            color_attachments=[ctx.renderbuffer((self.width, self.height), 4),
                               ctx.renderbuffer((self.width, self.height), 4)],
            depth_attachment=ctx.depth_renderbuffer((self.width, self.height)))
        quad = np.array([-1, -1, 1, -1, -1, 1, 1, 1], dtype="f4")
        self.bg_vao = ctx.vertex_array(self.bg_prog, [(ctx.buffer(quad.tobytes()), "2f", "in_xy")])
        self.bg_tex = None
        self.vao = None
        self.floor_vao = None
        self.line_vbo = None
        self.line_vao = None
        self.n_lines = 0
        self.floor_on = False

    @property
    def info(self) -> dict[str, str]:
        """GL vendor / renderer / version strings."""
        return {k: str(self.ctx.info[k]) for k in ("GL_VENDOR", "GL_RENDERER", "GL_VERSION")}

    def set_mesh(self, mesh: SkinnedMesh) -> None:
        """Upload the mesh once: one interleaved vertex buffer and one index buffer."""
        n = len(mesh.vertices)
        if mesh.bone_index.max(initial=0) >= MAX_BONES:
            raise ConfigError(f"the renderer supports at most {MAX_BONES} bones")
        floats = np.concatenate([mesh.vertices, mesh.normals, mesh.colors], axis=1).astype("f4")
        ints = np.asarray(mesh.bone_index, dtype="i4").reshape(n, 4)
        w = np.asarray(mesh.bone_weight, dtype="f4").reshape(n, 4)
        part = np.asarray(mesh.part, dtype="f4").reshape(n)
        rec = np.empty(n, dtype=[("f", "f4", 9), ("b", "i4", 4), ("w", "f4", 4), ("p", "f4")])
        rec["f"], rec["b"], rec["w"], rec["p"] = floats, ints, w, part
        vbo = self.ctx.buffer(rec.tobytes())
        ibo = self.ctx.buffer(np.asarray(mesh.faces, dtype="i4").tobytes())
        self.vao = self.ctx.vertex_array(
            self.prog, [(vbo, "3f 3f 3f 4i 4f 1f", "in_pos", "in_nrm", "in_col", "in_bone", "in_w", "in_part")],
            index_buffer=ibo, index_element_size=4)

    def set_background(self, image: np.ndarray) -> None:
        """Screen-space background image (H, W, 3) uint8 (top row first)."""
        img = np.ascontiguousarray(image[..., :3], dtype=np.uint8)
        import moderngl

        self.bg_tex = self.ctx.texture((img.shape[1], img.shape[0]), 3, img.tobytes(), alignment=1)
        self.bg_tex.filter = (moderngl.LINEAR, moderngl.LINEAR)

    def set_floor(self, on: bool, c0: np.ndarray | None = None, c1: np.ndarray | None = None, tile: float = 0.5,
                  center: tuple[float, float] = (0.0, 0.0), size: float = 30.0, y: float = 0.0) -> None:
        """A checkered floor plane at height y (ground frame, m), or none."""
        self.floor_on = on
        if not on:
            return
        cx, cz = center
        quad = np.array([[cx - size, y, cz - size], [cx + size, y, cz - size], [cx - size, y, cz + size],
                         [cx + size, y, cz + size]], dtype="f4")
        self.floor_vao = self.ctx.vertex_array(self.floor_prog, [(self.ctx.buffer(quad.tobytes()), "3f", "in_pos")])
        self.floor_prog["c0"].value = tuple(map(float, c0 if c0 is not None else (0.6, 0.6, 0.6)))
        self.floor_prog["c1"].value = tuple(map(float, c1 if c1 is not None else (0.4, 0.4, 0.4)))
        self.floor_prog["tile"].value = float(tile)

    def set_lines(self, segments: np.ndarray | None, colors: np.ndarray | None = None, width: float = 3.0) -> None:
        """Line segments (L, 2, 3) in ground with colours (L, 3), drawn with depth test (e.g. muscles)."""
        if segments is None or len(segments) == 0:
            self.n_lines = 0
            return
        data = np.concatenate([np.asarray(segments, "f4").reshape(-1, 3),
                               np.repeat(np.asarray(colors, "f4"), 2, axis=0)], axis=1).astype("f4")
        if self.line_vbo is None or self.line_vbo.size < data.nbytes:
            self.line_vbo = self.ctx.buffer(reserve=max(data.nbytes, 1 << 16), dynamic=True)
            self.line_vao = self.ctx.vertex_array(self.line_prog, [(self.line_vbo, "3f 3f", "in_pos", "in_col")])
        self.line_vbo.write(data.tobytes())
        self.n_lines = len(segments)
        self.line_width = float(width)

    def set_light(self, direction: np.ndarray, intensity: float = 0.9, ambient: float = 0.35) -> None:
        """Directional light (towards the light, camera frame with OpenGL axes), intensity, ambient."""
        d = np.asarray(direction, float)
        self.prog["light_dir"].value = tuple(map(float, d / np.linalg.norm(d)))
        self.prog["light_intensity"].value = float(intensity)
        self.prog["ambient"].value = float(ambient)

    def render(self, skin_matrices: np.ndarray, view: np.ndarray, proj: np.ndarray,
               background: tuple[float, float, float] = (0.0, 0.0, 0.0), depth: bool = False
               ) -> tuple[np.ndarray, ...]:
        """Draw one frame: skin matrices (B, 4, 4), view and projection (4, 4).

        Returns rgb (H, W, 3) uint8 and part labels (H, W) uint8, top row first, and with `depth`
        also the distance along the optical axis (H, W) float32 in metres (inf = nothing drawn).
        """
        import moderngl

        ctx = self.ctx
        self.fbo.use()
        self.fbo.clear(*background, 1.0, depth=1.0)
        if self.bg_tex is not None:
            ctx.disable(moderngl.DEPTH_TEST)
            self.bg_tex.use(0)
            self.bg_prog["tex"].value = 0
            self.bg_vao.render(moderngl.TRIANGLE_STRIP)
        ctx.enable(moderngl.DEPTH_TEST)
        v = np.ascontiguousarray(view, dtype="f4").T.tobytes()
        p = np.ascontiguousarray(proj, dtype="f4").T.tobytes()
        if self.floor_on and self.floor_vao is not None:
            self.floor_prog["view"].write(v)
            self.floor_prog["proj"].write(p)
            self.floor_vao.render(moderngl.TRIANGLE_STRIP)
        if self.vao is not None:
            bones = np.zeros((MAX_BONES, 4, 4), dtype="f4")
            bones[:] = np.eye(4, dtype="f4")
            bones[:len(skin_matrices)] = skin_matrices
            self.prog["bones"].write(np.ascontiguousarray(bones.transpose(0, 2, 1)).tobytes())
            self.prog["view"].write(v)
            self.prog["proj"].write(p)
            self.vao.render(moderngl.TRIANGLES)
        if self.n_lines:
            self.line_prog["view"].write(v)
            self.line_prog["proj"].write(p)
            ctx.line_width = self.line_width
            self.line_vao.render(moderngl.LINES, vertices=2 * self.n_lines)
        rgb = np.frombuffer(self.fbo.read(components=3, attachment=0, alignment=1), np.uint8)
        part = np.frombuffer(self.fbo.read(components=1, attachment=1, alignment=1), np.uint8)
        rgb = rgb.reshape(self.height, self.width, 3)[::-1].copy()
        part = part.reshape(self.height, self.width)[::-1].copy()
        if not depth:
            return rgb, part
        d = np.frombuffer(self.fbo.read(components=1, attachment=-1, dtype="f4", alignment=1), np.float32)
        d = d.reshape(self.height, self.width)[::-1].astype(np.float64)
        a, b = proj[2, 2], proj[2, 3]  # z_ndc = (a z + b) / -z for camera-space z < 0
        z_ndc = 2.0 * d - 1.0
        with np.errstate(divide="ignore"):
            lin = b / (z_ndc + a)
        lin = np.where(d >= 1.0, np.inf, lin).astype(np.float32)
        return rgb, part, lin

    def release(self) -> None:
        """Free the GL objects and the context."""
        self.ctx.release()
