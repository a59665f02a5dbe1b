"""Every procedural mesh family is a closed, outward-wound, UV-mapped unit mesh, reproducible from its seed."""

from __future__ import annotations

import numpy as np
import pytest
import trimesh

from assets.mesh import Mesh
from assets.procedural_meshes import MESH_FAMILIES, make_mesh

pytestmark = pytest.mark.unit

SEEDS = range(6)
# Families whose UVs wrap around an axis (and so have a seam); the others project UVs per flat face.
WRAPPED = ("cylinder", "sphere", "capsule", "cone", "torus", "superquadric", "vase")
CONVEX = ("box", "cylinder", "sphere", "capsule", "cone", "convex_hull", "superquadric")


def _merged(mesh: Mesh) -> trimesh.Trimesh:
    # Seam and crease vertices are duplicated on purpose (one UV per vertex); merged by position the surface is closed.
    return trimesh.Trimesh(mesh.vertices, mesh.faces, process=True)


def test_there_are_at_least_nine_families() -> None:
    assert len(MESH_FAMILIES) >= 9
    assert len(set(MESH_FAMILIES)) == len(MESH_FAMILIES)


@pytest.mark.parametrize("family", MESH_FAMILIES)
def test_closed_consistently_wound_with_positive_volume(family: str) -> None:
    for seed in SEEDS:
        mesh = make_mesh(family, np.random.default_rng(seed))
        tm = _merged(mesh)
        assert tm.is_watertight, (family, seed)
        assert tm.is_winding_consistent, (family, seed)
        assert tm.volume > 1e-3, (family, seed, tm.volume)
        tri = mesh.vertices[mesh.faces]
        area = 0.5 * np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)
        assert area.min() > 1e-9, f"{family} seed {seed} has a degenerate triangle"


@pytest.mark.parametrize("family", CONVEX)
def test_normals_of_convex_families_point_away_from_the_centre_of_mass(family: str) -> None:
    for seed in SEEDS:
        mesh = make_mesh(family, np.random.default_rng(seed))
        inside = _merged(mesh).center_mass
        tri = mesh.vertices[mesh.faces]
        normals = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
        assert np.all(np.einsum("ij,ij->i", normals, tri.mean(axis=1) - inside) > 0), (family, seed)


@pytest.mark.parametrize("family", MESH_FAMILIES)
def test_unit_extent_centred_uvs_per_vertex_and_modest_size(family: str) -> None:
    for seed in SEEDS:
        mesh = make_mesh(family, np.random.default_rng(seed))
        assert mesh.name == f"proc/{family}"
        assert mesh.extent.max() == pytest.approx(1.0, abs=1e-12)
        centre = (mesh.vertices.max(axis=0) + mesh.vertices.min(axis=0)) / 2
        np.testing.assert_allclose(centre, 0.0, atol=1e-12)
        assert mesh.uv is not None and mesh.uv.shape == (len(mesh.vertices), 2)
        assert np.all(np.isfinite(mesh.uv)) and mesh.uv.min() >= 0.0 and mesh.uv.max() <= 1.0
        assert np.ptp(mesh.uv, axis=0).min() > 0.3, "UVs should spread over the texture"
        if family in WRAPPED:
            # A triangle that straddled the seam of a wrapped-around UV would span almost the whole texture.
            uv_span = np.ptp(mesh.uv[mesh.faces], axis=1)
            assert uv_span.max() <= 0.5 + 1e-6, (family, seed, uv_span.max())
        assert len(mesh.vertices) < 3000 and mesh.texture is None
        assert np.array_equal(np.unique(mesh.faces), np.arange(len(mesh.vertices))), "unused vertices"


@pytest.mark.parametrize("family", MESH_FAMILIES)
def test_same_seed_same_mesh_and_different_seeds_differ(family: str) -> None:
    a = make_mesh(family, np.random.default_rng(7))
    b = make_mesh(family, np.random.default_rng(7))
    c = make_mesh(family, np.random.default_rng(8))
    assert np.array_equal(a.vertices, b.vertices) and np.array_equal(a.faces, b.faces) and np.array_equal(a.uv, b.uv)
    assert a.vertices.shape != c.vertices.shape or not np.allclose(a.vertices, c.vertices)


def test_random_proportions_vary_between_seeds() -> None:
    extents = np.array([make_mesh("box", np.random.default_rng(s)).extent for s in range(20)])
    assert np.ptp(np.sort(extents, axis=1)[:, 0]) > 0.2  # the shortest side is not always the same


def test_custom_name() -> None:
    assert make_mesh("torus", np.random.default_rng(0), name="proc/torus/3").name == "proc/torus/3"


def test_unknown_family_lists_the_families() -> None:
    with pytest.raises(ValueError, match=r"unknown mesh family 'blob'.*box.*superquadric"):
        make_mesh("blob", np.random.default_rng(0))
