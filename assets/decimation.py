"""Reduce a triangle mesh to a face budget by vertex clustering, keeping its UVs.

Scanned objects have 100k+ faces, too many for a CPU renderer. trimesh's quadric decimation needs the optional
`fast_simplification` package and drops UVs, so this module does the simplest UV-preserving reduction: snap vertices to
a uniform grid, average each cell, and drop triangles that collapse. Vertices of one cell that lie on different sides of
a UV seam keep separate UVs (they are split by a coarse UV grid) but share one position, so the surface never cracks.
"""

from __future__ import annotations

import numpy as np


def decimate(
    vertices: np.ndarray, faces: np.ndarray, uv: np.ndarray | None, max_faces: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(vertices, faces, uv) with at most about `max_faces` faces; unchanged when already within the budget."""
    if max_faces < 4:
        raise ValueError(f"max_faces must be at least 4, got {max_faces}")
    if len(faces) <= max_faces:
        return vertices, faces, uv
    tri = vertices[faces]
    area = 0.5 * float(np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1).sum())
    # A surface cut by cells of size h has about area / h^2 cells and two triangles per cell after clustering.
    cell = np.sqrt(2.0 * area / max_faces) if area > 0 else float(np.ptp(vertices, axis=0).max()) / 32
    best = (vertices, faces, uv)
    for _ in range(16):
        best = _cluster(vertices, faces, uv, cell)
        if len(best[1]) <= max_faces:
            break
        cell *= 1.25
    return best


def _cluster(
    vertices: np.ndarray, faces: np.ndarray, uv: np.ndarray | None, cell: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    lo = vertices.min(axis=0)
    idx = np.floor((vertices - lo) / cell).astype(np.int64)
    dims = idx.max(axis=0) + 1
    key = idx[:, 0] + dims[0] * (idx[:, 1] + dims[1] * idx[:, 2])
    _, spatial = np.unique(key, return_inverse=True)
    counts = np.bincount(spatial).astype(np.float64)
    position = np.stack([np.bincount(spatial, vertices[:, k]) for k in range(3)], axis=1) / counts[:, None]

    if uv is None:
        out_id = spatial
        out_uv = None
    else:
        # UV cells twice as large as one spatial cell's footprint in texture space: a continuous chart stays together,
        # while the two sides of a seam (far apart in UV) stay apart.
        e1, e2 = uv[faces[:, 1]] - uv[faces[:, 0]], uv[faces[:, 2]] - uv[faces[:, 0]]
        uv_area = 0.5 * np.abs(e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]).sum()
        tri = vertices[faces]
        area = 0.5 * np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1).sum()
        uv_cell = 2.0 * cell * np.sqrt(max(uv_area, 1e-12) / max(area, 1e-12))
        uv_idx = np.floor(uv / uv_cell).astype(np.int64)
        uv_idx -= uv_idx.min(axis=0)
        combined = np.stack([spatial, uv_idx[:, 0], uv_idx[:, 1]], axis=1)
        _, out_id = np.unique(combined, axis=0, return_inverse=True)
        out_id = out_id.ravel()
        n_out = int(out_id.max()) + 1
        out_counts = np.bincount(out_id, minlength=n_out).astype(np.float64)
        out_uv = np.stack([np.bincount(out_id, uv[:, k], minlength=n_out) for k in range(2)], axis=1)
        out_uv /= out_counts[:, None]
        first = np.zeros(n_out, dtype=np.int64)
        first[out_id] = spatial  # every member of an output vertex shares one spatial cell
        position = position[first]

    s = spatial[faces]
    keep = (s[:, 0] != s[:, 1]) & (s[:, 1] != s[:, 2]) & (s[:, 2] != s[:, 0])
    new_faces = out_id[faces[keep]]
    # Several fine triangles often collapse onto the same coarse one; keep one of each.
    _, first_face = np.unique(np.sort(spatial[faces[keep]], axis=1), axis=0, return_index=True)
    new_faces = new_faces[np.sort(first_face)]

    used = np.unique(new_faces)
    remap = np.full(len(position), -1, dtype=np.int64)
    remap[used] = np.arange(len(used))
    out_uv = None if out_uv is None else out_uv[used].astype(np.float32)
    return position[used], remap[new_faces].astype(np.int32), out_uv
