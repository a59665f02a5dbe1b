"""Procedural mesh families: closed, outward-wound triangle meshes with UVs and random proportions.

Every family returns a `Mesh` centred at its bounding-box centre with its largest extent equal to 1 (the scene sampler
rescales). UVs lie in [0, 1]. Vertices on UV seams and on sharp creases are duplicated, so each vertex has one UV and
flat faces shade flat; merged by position, every mesh is watertight with consistent outward winding (the tests check
this with trimesh).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import trimesh

from assets.mesh import Mesh

MESH_FAMILIES: tuple[str, ...] = (
    "box",
    "cylinder",
    "sphere",
    "capsule",
    "cone",
    "torus",
    "convex_hull",
    "extrusion",
    "superquadric",
    "vase",
)

# Segments around an axis of revolution. 48 is divisible by 8, so superquadric corners (at 45 degrees) get a vertex.
_AROUND = 48


@dataclass
class _Part:
    """A piece of surface whose triangles are wound consistently among themselves (not yet outward)."""

    vertices: np.ndarray  # (V, 3)
    uv: np.ndarray  # (V, 2)
    faces: np.ndarray  # (F, 3)


def make_mesh(family: str, rng: np.random.Generator, name: str | None = None) -> Mesh:
    """A random mesh of `family`, centred at its bounding-box centre, largest extent 1, UVs in [0, 1]."""
    builder = _BUILDERS.get(family)
    if builder is None:
        raise ValueError(f"unknown mesh family {family!r}; expected one of: {', '.join(MESH_FAMILIES)}")
    parts = builder(rng)
    offsets = np.cumsum([0] + [len(p.vertices) for p in parts[:-1]])
    vertices = np.concatenate([p.vertices for p in parts])
    uv = np.concatenate([p.uv for p in parts])
    faces = np.concatenate([p.faces + o for p, o in zip(parts, offsets, strict=True)])
    # A pole row keeps one copy of the pole that no triangle uses; drop unused vertices so renderers and hulls
    # see only the surface.
    used, faces = np.unique(faces, return_inverse=True)
    vertices, uv, faces = vertices[used], uv[used], faces.reshape(-1, 3)
    lo, hi = vertices.min(axis=0), vertices.max(axis=0)
    vertices = (vertices - (lo + hi) / 2) / float((hi - lo).max())
    return Mesh(name or f"proc/{family}", vertices, faces.astype(np.int32), np.clip(uv, 0.0, 1.0))


# ---------------------------------------------------------------------------------------------------------------------
# building blocks


def _grid_faces(rows: int, cols: int, pole_first: bool = False, pole_last: bool = False) -> np.ndarray:
    """Two triangles per cell of a rows x cols vertex grid (row-major), all wound the same way."""
    i, j = np.meshgrid(np.arange(rows - 1), np.arange(cols - 1), indexing="ij")
    a = i * cols + j
    lower = np.stack([a, a + 1, a + cols + 1], axis=-1)
    upper = np.stack([a, a + cols + 1, a + cols], axis=-1)
    keep_lower = np.ones(rows - 1, dtype=bool)
    keep_upper = np.ones(rows - 1, dtype=bool)
    # A pole row is one point repeated; the triangle with two corners on it would have zero area, so drop it.
    if pole_first:
        keep_lower[0] = False
    if pole_last:
        keep_upper[-1] = False
    return np.concatenate([lower[keep_lower].reshape(-1, 3), upper[keep_upper].reshape(-1, 3)])


def _outward(vertices: np.ndarray, faces: np.ndarray, hint: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """Flip a consistently wound part if its normals mostly point against `hint` (an outward direction per centroid).

    Choosing the winding by a vote, instead of deriving it by hand for each family, makes a sign slip impossible.
    """
    tri = vertices[faces]
    normals = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    if np.einsum("ij,ij->", normals, hint(tri.mean(axis=1))) < 0:
        return faces[:, ::-1].copy()
    return faces


def _ring(n: int) -> tuple[np.ndarray, np.ndarray]:
    """cos and sin of n + 1 angles around a circle; the last equals the first bit for bit (the UV seam duplicate)."""
    k = np.arange(n + 1) % n
    angle = 2.0 * np.pi * k / n
    return np.cos(angle), np.sin(angle)


def _radial(c: np.ndarray) -> np.ndarray:
    return np.stack([c[:, 0], c[:, 1], np.zeros(len(c))], axis=1)


def _lathe(r: np.ndarray, z: np.ndarray, n: int = _AROUND) -> _Part:
    """Surface of revolution of the profile (r, z) about the z axis; r == 0 at an end closes it with a pole."""
    cos, sin = _ring(n)
    rows = len(r)
    vertices = np.stack(
        [r[:, None] * cos[None, :], r[:, None] * sin[None, :], np.broadcast_to(z[:, None], (rows, n + 1))], axis=-1
    ).reshape(-1, 3)
    arc = np.concatenate([[0.0], np.cumsum(np.hypot(np.diff(r), np.diff(z)))])
    u, v = np.meshgrid(np.arange(n + 1) / n, arc / arc[-1])
    uv = np.stack([u, v], axis=-1).reshape(-1, 2)
    faces = _grid_faces(rows, n + 1, pole_first=r[0] == 0.0, pole_last=r[-1] == 0.0)
    # The outward normal of a surface of revolution always has a positive radial component, even near a pole.
    return _Part(vertices, uv, _outward(vertices, faces, _radial))


def _disk(radius: float, z: float, up: bool, n: int = _AROUND) -> _Part:
    """A flat fan closing a surface of revolution; its ring coincides with the lathe's ring at the same radius."""
    cos, sin = _ring(n)
    cos, sin = cos[:n], sin[:n]
    vertices = np.concatenate([[[0.0, 0.0, z]], np.stack([radius * cos, radius * sin, np.full(n, z)], axis=1)])
    uv = np.concatenate([[[0.5, 0.5]], np.stack([0.5 + 0.5 * cos, 0.5 + 0.5 * sin], axis=1)])
    k = np.arange(n)
    faces = np.stack([np.zeros(n, dtype=np.int64), 1 + k, 1 + (k + 1) % n], axis=1)
    normal = np.array([0.0, 0.0, 1.0 if up else -1.0])
    return _Part(vertices, uv, _outward(vertices, faces, lambda c: np.broadcast_to(normal, c.shape)))


def _scaled(parts: list[_Part], scale: np.ndarray) -> list[_Part]:
    # A positive diagonal scale keeps every winding, so it may come after orientation.
    return [_Part(p.vertices * scale, p.uv, p.faces) for p in parts]


# ---------------------------------------------------------------------------------------------------------------------
# families


def _box(rng: np.random.Generator) -> list[_Part]:
    half = rng.uniform(0.25, 1.0, size=3) / 2
    longest = 2 * half.max()
    n = 4  # cells per side: renderers that light per vertex need more than one quad per face
    s = np.linspace(-1.0, 1.0, n + 1)
    parts = []
    for axis in range(3):
        b, c = (axis + 1) % 3, (axis + 2) % 3
        for sign in (-1.0, 1.0):
            sb, sc = np.meshgrid(s, s)
            p = np.zeros((n + 1, n + 1, 3))
            p[..., axis] = sign * half[axis]
            p[..., b] = sb * half[b]
            p[..., c] = sc * half[c]
            # UVs in metres / longest side: the texture keeps one scale on every face and stays within [0, 1].
            uv = np.stack([(sb + 1) * half[b] / longest, (sc + 1) * half[c] / longest], axis=-1)
            vertices = p.reshape(-1, 3)
            normal = np.eye(3)[axis] * sign
            faces = _outward(vertices, _grid_faces(n + 1, n + 1), lambda x, d=normal: np.broadcast_to(d, x.shape))
            parts.append(_Part(vertices, uv.reshape(-1, 2), faces))
    return parts


def _frustum(r_bottom: float, r_top: float, height: float) -> list[_Part]:
    """A cylinder, truncated cone or cone (r_top == 0) with flat caps, standing on z = 0."""
    rows = 5
    r = np.linspace(r_bottom, r_top, rows)
    if r_top == 0.0:
        r[-1] = 0.0
    parts = [_lathe(r, np.linspace(0.0, height, rows)), _disk(r_bottom, 0.0, up=False)]
    if r_top > 0.0:
        parts.append(_disk(r_top, height, up=True))
    return parts


def _cylinder(rng: np.random.Generator) -> list[_Part]:
    radius, height = 0.5, rng.uniform(0.3, 2.5)
    # A mildly elliptical cross-section breaks the rotational symmetry, which the servo task otherwise cannot resolve.
    ellipse = np.array([1.0, rng.uniform(0.6, 1.0), 1.0])
    return _scaled(_frustum(radius, radius, height), ellipse)


def _cone(rng: np.random.Generator) -> list[_Part]:
    radius, height = 0.5, rng.uniform(0.5, 2.0)
    top = 0.0 if rng.random() < 0.5 else radius * rng.uniform(0.15, 0.7)
    return _frustum(radius, top, height)


def _sphere(rng: np.random.Generator) -> list[_Part]:
    phi = np.linspace(-np.pi / 2, np.pi / 2, 25)
    r, z = np.cos(phi), np.sin(phi)
    r[0] = r[-1] = 0.0  # cos(+-pi/2) is 6e-17, not 0: make the poles exact so they close the surface
    return _scaled([_lathe(r, z)], rng.uniform(0.55, 1.0, size=3))


def _capsule(rng: np.random.Generator) -> list[_Part]:
    radius, length = 0.5, rng.uniform(0.2, 2.0)
    phi = np.linspace(-np.pi / 2, 0.0, 12)
    straight = np.linspace(0.0, length, 6)[1:-1]  # inner rows on the straight part, for per-vertex lighting
    r = np.concatenate([np.cos(phi), np.ones(len(straight)), np.cos(phi[::-1])]) * radius
    z = np.concatenate([np.sin(phi) * radius, straight, length - np.sin(phi[::-1]) * radius])
    r[0] = r[-1] = 0.0
    return [_lathe(r, z)]


def _vase(rng: np.random.Generator) -> list[_Part]:
    height, rows = rng.uniform(0.8, 2.0), 32
    t = np.linspace(0.0, 1.0, rows)
    # A few low-frequency sine bumps give bottles, vases and spools; the floor keeps the radius clear of zero.
    waves = sum(
        rng.uniform(-0.35, 0.35) * np.sin(2 * np.pi * rng.uniform(0.3, 1.6) * t + rng.uniform(0, 2 * np.pi))
        for _ in range(3)
    )
    r = 0.5 * np.maximum(1.0 + waves + rng.uniform(-0.4, 0.4) * t, 0.25)
    z = t * height
    return [_lathe(r, z), _disk(float(r[0]), 0.0, up=False), _disk(float(r[-1]), height, up=True)]


def _torus(rng: np.random.Generator) -> list[_Part]:
    big, small = 1.0, rng.uniform(0.15, 0.5)
    squash = rng.uniform(0.6, 1.3)
    n, m = _AROUND, 24
    cos_t, sin_t = _ring(n)
    cos_p, sin_p = _ring(m)
    ring = big + small * cos_p[:, None]
    vertices = np.stack(
        [
            ring * cos_t[None, :],
            ring * sin_t[None, :],
            np.broadcast_to(squash * small * sin_p[:, None], (m + 1, n + 1)),
        ],
        axis=-1,
    ).reshape(-1, 3)
    u, v = np.meshgrid(np.arange(n + 1) / n, np.arange(m + 1) / m)
    uv = np.stack([u, v], axis=-1).reshape(-1, 2)

    def away_from_core(c: np.ndarray) -> np.ndarray:
        rho = np.maximum(np.hypot(c[:, 0], c[:, 1]), 1e-12)
        core = np.stack([big * c[:, 0] / rho, big * c[:, 1] / rho, np.zeros(len(c))], axis=1)
        return c - core

    faces = _outward(vertices, _grid_faces(m + 1, n + 1), away_from_core)
    return [_Part(vertices, uv, faces)]


def _superquadric(rng: np.random.Generator) -> list[_Part]:
    # Exponents below 1 go boxy, above 1 pinched; beyond 2 the shape turns concave and thin, so stop there.
    e1, e2 = rng.uniform(0.25, 1.9, size=2)
    size = rng.uniform(0.5, 1.0, size=3)
    rows, n = 25, _AROUND
    eta = np.linspace(-np.pi / 2, np.pi / 2, rows)
    ce, se = np.cos(eta), np.sin(eta)
    ce[0] = ce[-1] = 0.0
    cw, sw = _ring(n)

    def spow(x: np.ndarray, e: float) -> np.ndarray:
        return np.sign(x) * np.abs(x) ** e

    x = size[0] * spow(ce, e1)[:, None] * spow(cw, e2)[None, :]
    y = size[1] * spow(ce, e1)[:, None] * spow(sw, e2)[None, :]
    z = np.broadcast_to(size[2] * spow(se, e1)[:, None], x.shape)
    vertices = np.stack([x, y, z], axis=-1).reshape(-1, 3)
    u, v = np.meshgrid(np.arange(n + 1) / n, np.arange(rows) / (rows - 1))
    uv = np.stack([u, v], axis=-1).reshape(-1, 2)
    # A superquadric is star-shaped about its centre, so the centroid direction is outward.
    faces = _outward(vertices, _grid_faces(rows, n + 1, pole_first=True, pole_last=True), lambda c: c)
    return [_Part(vertices, uv, faces)]


def _convex_hull(rng: np.random.Generator) -> list[_Part]:
    points = rng.normal(size=(int(rng.integers(8, 40)), 3)) * rng.uniform(0.4, 1.0, size=3)
    hull = trimesh.convex.convex_hull(points)  # scipy's Qhull; trimesh winds the faces outward
    # One vertex per face corner: hull facets shade flat and each can take its own box projection without seams.
    vertices = hull.vertices[hull.faces].reshape(-1, 3)
    tri = vertices.reshape(-1, 3, 3)
    normals = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    dominant = np.abs(normals).argmax(axis=1)
    lo = points.min(axis=0)
    longest = float(np.ptp(points, axis=0).max())
    axes = np.stack([(dominant + 1) % 3, (dominant + 2) % 3], axis=1).repeat(3, axis=0)
    uv = (np.take_along_axis(vertices, axes, axis=1) - lo[axes]) / longest
    return [_Part(vertices, uv, np.arange(len(vertices)).reshape(-1, 3))]


def _extrusion(rng: np.random.Generator) -> list[_Part]:
    n = int(rng.integers(5, 15))
    # Increasing angles with gaps below pi and positive radii give a polygon that is star-shaped about the origin:
    # simple, counter-clockwise, and fan-triangulable from the origin.
    angle = 2 * np.pi * (np.arange(n) + rng.uniform(-0.35, 0.35, size=n)) / n + rng.uniform(0, 2 * np.pi)
    if rng.random() < 0.4 and n % 2 == 0:
        radius = np.where(np.arange(n) % 2 == 0, 1.0, rng.uniform(0.35, 0.75))
    else:
        radius = rng.uniform(0.45, 1.0, size=n)
    poly = np.stack([radius * np.cos(angle), radius * np.sin(angle)], axis=1)
    height, taper = rng.uniform(0.15, 1.5), rng.uniform(0.6, 1.0)
    rows = 5
    t = np.linspace(0.0, 1.0, rows)
    scale = 1.0 + (taper - 1.0) * t
    scale[-1] = taper  # bit-identical to the top cap's ring, so the two meet exactly
    lo, span = poly.min(axis=0), float(np.ptp(poly, axis=0).max())
    perimeter = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.roll(poly, -1, axis=0) - poly, axis=1))])
    parts = []
    for k in range(n):
        # Each wall is its own grid so the crease between walls stays sharp (duplicated vertices).
        ends = np.stack([poly[k], poly[(k + 1) % n]])
        xy = scale[:, None, None] * ends[None, :, :]
        vertices = np.concatenate([xy, np.broadcast_to(t[:, None, None] * height, (rows, 2, 1))], axis=-1).reshape(
            -1, 3
        )
        u, v = np.meshgrid(perimeter[k : k + 2] / perimeter[-1], t)
        edge = ends[1] - ends[0]
        normal = np.array([edge[1], -edge[0], 0.0])  # outward for a counter-clockwise polygon
        faces = _outward(vertices, _grid_faces(rows, 2), lambda c, d=normal: np.broadcast_to(d, c.shape))
        parts.append(_Part(vertices, np.stack([u, v], axis=-1).reshape(-1, 2), faces))
    for z, s, up in ((0.0, 1.0, False), (height, taper, True)):
        vertices = np.concatenate([[[0.0, 0.0, z]], np.concatenate([s * poly, np.full((n, 1), z)], axis=1)])
        uv = np.concatenate([[(-lo) / span], (poly - lo) / span])
        k = np.arange(n)
        faces = np.stack([np.zeros(n, dtype=np.int64), 1 + k, 1 + (k + 1) % n], axis=1)
        normal = np.array([0.0, 0.0, 1.0 if up else -1.0])
        parts.append(_Part(vertices, uv, _outward(vertices, faces, lambda c, d=normal: np.broadcast_to(d, c.shape))))
    return parts


_BUILDERS: dict[str, Callable[[np.random.Generator], list[_Part]]] = {
    "box": _box,
    "cylinder": _cylinder,
    "sphere": _sphere,
    "capsule": _capsule,
    "cone": _cone,
    "torus": _torus,
    "convex_hull": _convex_hull,
    "extrusion": _extrusion,
    "superquadric": _superquadric,
    "vase": _vase,
}
assert set(_BUILDERS) == set(MESH_FAMILIES)
