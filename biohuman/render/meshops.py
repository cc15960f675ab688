"""Small mesh geometry helpers: closest points on a triangle mesh, linear-blend skinning in numpy."""

from __future__ import annotations

import numpy as np


def _closest_on_triangles(p: np.ndarray, a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Closest points (..., 3) on triangles (a, b, c) to points p (Ericson, Real-Time Collision
    Detection 5.1.5), vectorised over leading dims."""
    ab, ac, ap = b - a, c - a, p - a
    d1, d2 = (ab * ap).sum(-1), (ac * ap).sum(-1)
    bp = p - b
    d3, d4 = (ab * bp).sum(-1), (ac * bp).sum(-1)
    cp = p - c
    d5, d6 = (ab * cp).sum(-1), (ac * cp).sum(-1)
    va = d3 * d6 - d5 * d4
    vb = d5 * d2 - d1 * d6
    vc = d1 * d4 - d3 * d2
    denom = va + vb + vc
    denom = np.where(np.abs(denom) > 1e-30, denom, 1e-30)
    v = vb / denom
    w = vc / denom
    out = a + ab * v[..., None] + ac * w[..., None]  # interior
    # edges and vertices, later assignments win where their region applies
    with np.errstate(divide="ignore", invalid="ignore"):
        t_bc = np.clip((d4 - d3) / ((d4 - d3) + (d5 - d6)), 0, 1)
        e_bc = b + (c - b) * t_bc[..., None]
        t_ac = np.clip(d2 / (d2 - d6), 0, 1)
        e_ac = a + ac * t_ac[..., None]
        t_ab = np.clip(d1 / (d1 - d3), 0, 1)
        e_ab = a + ab * t_ab[..., None]
    out = np.where(((va <= 0) & (d4 - d3 >= 0) & (d5 - d6 >= 0))[..., None], e_bc, out)
    out = np.where(((vb <= 0) & (d2 >= 0) & (d6 <= 0))[..., None], e_ac, out)
    out = np.where(((vc <= 0) & (d1 >= 0) & (d3 <= 0))[..., None], e_ab, out)
    out = np.where(((d6 >= 0) & (d5 <= d6))[..., None], c, out)
    out = np.where(((d3 >= 0) & (d4 <= d3))[..., None], b, out)
    out = np.where(((d1 <= 0) & (d2 <= 0))[..., None], a, out)
    return out


class MeshQuery:
    """Closest-point queries on a triangle mesh whose vertices move but whose faces do not.

    faces: (F, 3) int. The k nearest vertices of a query point (KD-tree on the current vertices)
    nominate their incident triangles, and the exact closest point among those is returned.
    """

    def __init__(self, faces: np.ndarray, n_vertices: int, k: int = 12) -> None:
        self.faces = np.asarray(faces, dtype=np.int64)
        self.k = k
        order = np.argsort(self.faces.ravel(), kind="stable")
        counts = np.bincount(self.faces.ravel(), minlength=n_vertices)
        self._start = np.concatenate([[0], np.cumsum(counts)])
        self._faces_of = order // 3
        self._max_deg = int(counts.max()) if counts.size else 0

    def _incident(self, verts: np.ndarray) -> np.ndarray:
        """Face ids (M, k * max_degree) incident to vertex ids (M, k), padded with -1."""
        m, k = verts.shape
        out = np.full((m, k, self._max_deg), -1, np.int64)
        start, end = self._start[verts], self._start[verts + 1]
        for d in range(self._max_deg):
            ok = start + d < end
            out[..., d][ok] = self._faces_of[(start + d)[ok]]
        return out.reshape(m, -1)

    def closest(self, vertices: np.ndarray, points: np.ndarray, mask: np.ndarray | None = None
                ) -> tuple[np.ndarray, np.ndarray]:
        """Closest surface points (P, 3) and distances (P,) from points (P, 3) to the mesh.

        mask: optional (N,) bool restricting the candidate vertices (e.g. one body part).
        """
        from scipy.spatial import cKDTree

        vertices = np.asarray(vertices, dtype=np.float64)
        points = np.asarray(points, dtype=np.float64).reshape(-1, 3)
        ids = np.arange(len(vertices)) if mask is None else np.flatnonzero(mask)
        k = min(self.k, len(ids))
        _, nn = cKDTree(vertices[ids]).query(points, k=k)
        nn = ids[np.asarray(nn).reshape(len(points), k)]
        cand = self._incident(nn)  # (P, C)
        valid = cand >= 0
        tri = self.faces[np.where(valid, cand, 0)]  # (P, C, 3)
        q = _closest_on_triangles(points[:, None, :], vertices[tri[..., 0]], vertices[tri[..., 1]],
                                  vertices[tri[..., 2]])
        d = np.linalg.norm(q - points[:, None, :], axis=-1)
        d = np.where(valid, d, np.inf)
        best = np.argmin(d, axis=1)
        rows = np.arange(len(points))
        return q[rows, best], d[rows, best]


def skin(vertices: np.ndarray, bone_index: np.ndarray, bone_weight: np.ndarray, skin_matrices: np.ndarray
         ) -> np.ndarray:
    """Linear-blend skinning: (T, N, 3) = sum_k w[n, k] * S[t, idx[n, k]] @ [v[n], 1].

    vertices: (N, 3) rest positions; bone_index, bone_weight: (N, K); skin_matrices: (T, B, 4, 4).
    """
    s = np.asarray(skin_matrices)
    out = np.zeros((s.shape[0], len(vertices), 3))
    for k in range(bone_index.shape[1]):
        m = s[:, bone_index[:, k]]  # (T, N, 4, 4)
        out += bone_weight[None, :, k, None] * (np.einsum("tnij,nj->tni", m[..., :3, :3], vertices) + m[..., :3, 3])
    return out
