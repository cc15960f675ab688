"""OpenSim bone geometry: a small PLY reader (fan-triangulates polygons that trimesh cannot read)
and the bones of a (scaled) model gathered into one mesh expressed in body frames.

The Rajagopal2015 meshes ship inside nimblephysics as `<name>.vtp.ply` (VTK-exported binary PLY);
ten of them hold polygons with more than three corners. Geometry scale factors written by the
ScaleTool are applied, and so is the offset of the frame a mesh is attached to.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from biohuman.errors import InputFormatError
from biohuman.osim.model import geometry_dir, load_model, opensim

_PLY_TYPES = {
    "char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1", "short": "i2", "int16": "i2",
    "ushort": "u2", "uint16": "u2", "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4",
    "float": "f4", "float32": "f4", "double": "f8", "float64": "f8",
}


def _fan(polygons: list[np.ndarray]) -> np.ndarray:
    """Triangulate polygons as fans from their first corner: (F, 3) int32."""
    tris = [np.stack([p[0].repeat(len(p) - 2), p[1:-1], p[2:]], axis=1) for p in polygons if len(p) >= 3]
    return np.concatenate(tris).astype(np.int32) if tris else np.zeros((0, 3), np.int32)


def read_ply(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Read a PLY mesh (ASCII or binary): vertices (N, 3) float32 and triangles (F, 3) int32.

    Faces with more than three corners are split into fans. Raises InputFormatError naming the
    file for anything that is not a vertex/face PLY.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise InputFormatError(f"cannot read mesh: {exc}", path) from exc
    end = raw.find(b"end_header")
    if not raw.startswith(b"ply") or end < 0:
        raise InputFormatError("not a PLY file (no 'ply' magic or no end_header)", path)
    header = raw[:end].decode("ascii", errors="replace").splitlines()
    body_start = raw.index(b"\n", end) + 1
    fmt = None
    elements: list[tuple[str, int, list[tuple]]] = []
    for line in header:
        parts = line.split()
        if not parts:
            continue
        if parts[0] == "format":
            fmt = parts[1]
        elif parts[0] == "element":
            elements.append((parts[1], int(parts[2]), []))
        elif parts[0] == "property" and elements:
            elements[-1][2].append(tuple(parts[1:]))
    if fmt not in ("ascii", "binary_little_endian", "binary_big_endian"):
        raise InputFormatError(f"unsupported PLY format {fmt!r}", path)
    endian = ">" if fmt == "binary_big_endian" else "<"
    vertices = None
    polygons: list[np.ndarray] = []
    if fmt == "ascii":
        tokens = raw[body_start:].split()
        pos = 0
        for name, count, props in elements:
            if name == "vertex":
                n = len(props)
                vals = np.array(tokens[pos:pos + n * count], dtype=float).reshape(count, n)
                pos += n * count
                names = [p[-1] for p in props]
                vertices = vals[:, [names.index(a) for a in "xyz"]].astype(np.float32)
            else:
                for _ in range(count):
                    for p in props:
                        if p[0] == "list":
                            k = int(tokens[pos])
                            if name == "face":
                                polygons.append(np.array(tokens[pos + 1:pos + 1 + k], dtype=np.int64))
                            pos += 1 + k
                        else:
                            pos += 1
    else:
        buf = memoryview(raw)[body_start:]
        pos = 0
        for name, count, props in elements:
            if all(p[0] != "list" for p in props):
                dtype = np.dtype([(p[1], endian + _PLY_TYPES[p[0]]) for p in props])
                arr = np.frombuffer(buf, dtype=dtype, count=count, offset=pos)
                pos += dtype.itemsize * count
                if name == "vertex":
                    vertices = np.stack([arr[a] for a in "xyz"], axis=1).astype(np.float32)
                continue
            if len(props) != 1 or name != "face":
                raise InputFormatError(f"unsupported PLY element {name!r} with list properties", path)
            _, count_t, index_t, _ = props[0]
            ct, it = np.dtype(endian + _PLY_TYPES[count_t]), np.dtype(endian + _PLY_TYPES[index_t])
            for _ in range(count):
                k = int(np.frombuffer(buf, ct, 1, pos)[0])
                pos += ct.itemsize
                polygons.append(np.frombuffer(buf, it, k, pos).astype(np.int64))
                pos += it.itemsize * k
    if vertices is None:
        raise InputFormatError("PLY file has no vertex element", path)
    faces = _fan(polygons)
    if faces.size and (faces.min() < 0 or faces.max() >= len(vertices)):
        raise InputFormatError("PLY face indices out of range", path)
    return vertices, faces


@dataclass(frozen=True)
class SkeletonMesh:
    """All bone meshes of a model in one buffer, each vertex in the frame of the body it rides on.

    vertices: (N, 3) float32, m, in body frames. normals: (N, 3) float32. faces: (F, 3) int32.
    body_index: (N,) int32 index into `bodies`. bodies: body names (model order).
    file_index: (N,) int32 index into `files` (mesh file names, e.g. 'r_femur.vtp.ply').
    """

    vertices: np.ndarray
    normals: np.ndarray
    faces: np.ndarray
    body_index: np.ndarray
    bodies: tuple[str, ...]
    files: tuple[str, ...]
    file_index: np.ndarray

    def file_vertices(self, stem: str) -> np.ndarray:
        """Vertices (K, 3) of the mesh whose file name starts with `stem` (empty if none)."""
        hits = [i for i, f in enumerate(self.files) if f.split(".")[0] == stem]
        return self.vertices[np.isin(self.file_index, hits)]


def vertex_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Area-weighted vertex normals (N, 3) float32 of a triangle mesh."""
    v = vertices.astype(np.float64)
    fn = np.cross(v[faces[:, 1]] - v[faces[:, 0]], v[faces[:, 2]] - v[faces[:, 0]])
    n = np.zeros_like(v)
    for k in range(3):
        np.add.at(n, faces[:, k], fn)
    norm = np.linalg.norm(n, axis=1, keepdims=True)
    return (n / np.where(norm > 0, norm, 1.0)).astype(np.float32)


def _mesh_path(name: str, search: list[Path]) -> Path | None:
    for folder in search:
        for candidate in (folder / name, folder / f"{name}.ply", folder / Path(name).with_suffix(".ply")):
            if candidate.is_file() and candidate.suffix == ".ply":
                return candidate
    return None


def _frame_offset(frame, body) -> np.ndarray:  # noqa: ANN001 - OpenSim frames
    """4x4 transform of `frame` in the frame of `body` (identity when they are the same)."""
    t = frame.findTransformInBaseFrame()
    out = np.eye(4)
    out[:3, :3] = np.array([[t.R().get(i, j) for j in range(3)] for i in range(3)])
    out[:3, 3] = [t.p().get(i) for i in range(3)]
    return out


@functools.lru_cache(maxsize=8)
def skeleton_mesh(model_path: str | Path | None = None) -> SkeletonMesh:
    """The bone meshes attached to the bodies of a model, scaled, in body frames.

    Meshes are looked up beside the model (`Geometry/`), then in the packaged Rajagopal2015
    geometry folder. A mesh that cannot be found raises InputFormatError naming it.
    """
    osim = opensim()
    model = load_model(model_path)
    model_dir = Path(model_path).parent if model_path is not None else geometry_dir().parent
    search = [model_dir / "Geometry", model_dir, geometry_dir()]
    bodies = model.getBodySet()
    names = [bodies.get(i).getName() for i in range(bodies.getSize())]
    verts, norms, faces, index, files, file_index = [], [], [], [], [], []
    offset = 0
    for bi in range(bodies.getSize()):
        body = bodies.get(bi)
        prop = body.getPropertyByName("attached_geometry")
        for gi in range(prop.size()):
            geom = body.get_attached_geometry(gi)
            mesh = osim.Mesh.safeDownCast(geom)
            if mesh is None:
                continue
            file = mesh.get_mesh_file()
            path = _mesh_path(file, search)
            if path is None:
                raise InputFormatError(f"bone mesh {file!r} of body {body.getName()!r} not found in {search}",
                                       model_path)
            v, f = read_ply(path)
            scale = np.array([geom.get_scale_factors().get(i) for i in range(3)], dtype=np.float64)
            off = _frame_offset(geom.getFrame(), body)
            vb = (v.astype(np.float64) * scale) @ off[:3, :3].T + off[:3, 3]
            verts.append(vb.astype(np.float32))
            norms.append(vertex_normals(vb, f))
            faces.append(f + offset)
            index.append(np.full(len(v), bi, np.int32))
            file_index.append(np.full(len(v), len(files), np.int32))
            files.append(path.name)
            offset += len(v)
    return SkeletonMesh(
        vertices=np.concatenate(verts), normals=np.concatenate(norms), faces=np.concatenate(faces),
        body_index=np.concatenate(index), bodies=tuple(names), files=tuple(files),
        file_index=np.concatenate(file_index),
    )
