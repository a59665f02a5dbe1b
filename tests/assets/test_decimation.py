"""Vertex-clustering decimation meets the face budget, keeps the shape, keeps UVs and does not smear UV seams."""

from __future__ import annotations

import numpy as np
import pytest
import trimesh

from assets.decimation import decimate
from assets.procedural_meshes import make_mesh

pytestmark = pytest.mark.unit


def _fine_sphere() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A UV sphere of radius 0.5 with ~20k faces and a seam, like a scan's parameterised surface."""
    rows, cols = 80, 129
    phi = np.linspace(-np.pi / 2, np.pi / 2, rows)[:, None]
    theta = 2 * np.pi * (np.arange(cols) % (cols - 1)) / (cols - 1)
    v = 0.5 * np.stack(
        [np.cos(phi) * np.cos(theta), np.cos(phi) * np.sin(theta), np.broadcast_to(np.sin(phi), (rows, cols))], axis=-1
    ).reshape(-1, 3)
    u, w = np.meshgrid(np.arange(cols) / (cols - 1), np.linspace(0, 1, rows))
    uv = np.stack([u, w], axis=-1).reshape(-1, 2)
    i, j = np.meshgrid(np.arange(1, rows - 2), np.arange(cols - 1), indexing="ij")
    a = (i * cols + j).ravel()
    faces = np.concatenate([np.stack([a, a + 1, a + cols + 1], 1), np.stack([a, a + cols + 1, a + cols], 1)])
    return v, faces, uv


def test_meets_the_budget_and_keeps_the_shape_and_uvs() -> None:
    v, f, uv = _fine_sphere()
    assert len(f) > 19_000
    v2, f2, uv2 = decimate(v, f, uv, 2000)
    assert 500 < len(f2) <= 2000
    assert uv2 is not None and uv2.shape == (len(v2), 2) and f2.max() < len(v2) and f2.dtype == np.int32
    radius = np.linalg.norm(v2, axis=1)
    assert np.abs(radius - 0.5).max() < 0.03  # vertices stay on the sphere
    # No coarse triangle straddles the seam (u 0 -> 1), which would smear the whole texture across it.
    assert np.ptp(uv2[f2][:, :, 0], axis=1).max() < 0.25
    # Orientation survives: the normals still point outward.
    tri = v2[f2]
    normals = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    assert (np.einsum("ij,ij->i", normals, tri.mean(axis=1)) > 0).mean() > 0.99


def test_closed_mesh_stays_closed_without_uvs() -> None:
    tm = trimesh.creation.icosphere(subdivisions=5)
    v2, f2, uv2 = decimate(tm.vertices, tm.faces, None, 1500)
    assert uv2 is None and len(f2) <= 1500
    small = trimesh.Trimesh(v2, f2, process=True)
    assert small.volume == pytest.approx(tm.volume, rel=0.05)


def test_small_meshes_are_untouched_and_budget_is_checked() -> None:
    m = make_mesh("box", np.random.default_rng(0))
    v, f, uv = decimate(m.vertices, m.faces, m.uv, 10_000)
    assert v is m.vertices and f is m.faces and uv is m.uv
    with pytest.raises(ValueError, match="max_faces"):
        decimate(m.vertices, m.faces, m.uv, 2)
