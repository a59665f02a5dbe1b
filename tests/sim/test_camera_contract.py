"""The camera contract every render backend present on this machine must meet (shared/notes/renderers.md).

A thin square plate at a known pose is rendered through random pinhole cameras (off-centre principal points,
fx != fy, several sizes and focal lengths). Its mask must equal the analytic projection pixel for pixel, and its
depth must match the ray-plane intersection within 1e-4 m.
"""

from __future__ import annotations

import numpy as np
import pytest

from assets.mesh import Mesh
from sim.camera import Camera
from sim.geometry import exp_so3, look_at, make_pose
from sim.render import BACKENDS, make_renderer
from sim.scene import LightSpec, MaterialSpec, ObjectSpec, SceneSpec

HALF = 0.05  # plate half-size, metres
OFFSET = np.array([0.03, -0.02, 0.0])  # plate centre in its object frame: poses must not assume a centred mesh
TIE_PX = 0.01  # a pixel centre this close to an edge is a rasteriser tie, not an error
DEPTH_TOL = 1e-4


def _backends() -> list[str]:
    found = []
    for name in BACKENDS:
        try:
            make_renderer(name, 16, 16).close()
            found.append(name)
        except (ImportError, RuntimeError, NotImplementedError):
            continue
    return found


PRESENT = _backends()


def _plate() -> Mesh:
    corners = np.array([[x, y, z] for z in (-5e-7, 5e-7) for y in (-HALF, HALF) for x in (-HALF, HALF)]) + OFFSET
    # 12 outward triangles of a box with corners indexed by (x, y, z) bits.
    faces = [
        [0, 2, 3], [0, 3, 1], [4, 5, 7], [4, 7, 6], [0, 1, 5], [0, 5, 4],
        [2, 6, 7], [2, 7, 3], [0, 4, 6], [0, 6, 2], [1, 3, 7], [1, 7, 5],
    ]  # fmt: skip
    return Mesh("plate", corners, np.array(faces))


def _analytic(cam: Camera, wTc: np.ndarray, wTo: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    u, v = np.meshgrid(np.arange(cam.width), np.arange(cam.height))
    uv = np.stack([u.ravel(), v.ravel()], axis=1).astype(float)
    rays = np.concatenate([cam.normalize(uv), np.ones((len(uv), 1))], axis=1) @ wTc[:3, :3].T
    centre = wTo[:3, :3] @ OFFSET + wTo[:3, 3]
    n, C = wTo[:3, 2], wTc[:3, 3]
    z = ((centre - C) @ n) / (rays @ n)  # ray direction has unit z in the camera, so s is the z-depth
    local = (C + z[:, None] * rays - centre) @ wTo[:3, :3]
    inside = (np.abs(local[:, 0]) < HALF) & (np.abs(local[:, 1]) < HALF) & (z > 0)
    # Distance (px) from each pixel centre to the projected outline, to tell ties from errors.
    corners = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]]) * HALF
    cw = (wTo @ np.c_[corners + OFFSET[:2], np.zeros(4), np.ones(4)].T).T[:, :3]
    uvc, _ = cam.project_world(cw, wTc)
    dist = np.full(len(uv), np.inf)
    for a, b in zip(uvc, np.roll(uvc, -1, axis=0), strict=True):
        t = np.clip((uv - a) @ (b - a) / ((b - a) @ (b - a)), 0.0, 1.0)
        dist = np.minimum(dist, np.linalg.norm(uv - (a + t[:, None] * (b - a)), axis=1))
    shape = (cam.height, cam.width)
    return inside.reshape(shape), z.reshape(shape), dist.reshape(shape)


def _case(rng: np.random.Generator, W: int, H: int) -> tuple[Camera, np.ndarray, np.ndarray]:
    wTo = make_pose(exp_so3(rng.normal(0.0, 0.4, 3)), rng.uniform(-0.1, 0.1, 3))
    centre = wTo[:3, :3] @ OFFSET + wTo[:3, 3]
    eye = centre + wTo[:3, 2] * rng.uniform(0.25, 0.8) + rng.normal(0.0, 0.08, 3)
    wTc = look_at(eye, centre + rng.normal(0.0, 0.02, 3), up=rng.normal(0.0, 1.0, 3))
    fx = rng.uniform(0.5, 1.6) * W
    cam = Camera.from_focal(
        fx,
        W,
        H,
        fy=fx * rng.uniform(0.9, 1.1),
        cx=W / 2 + rng.uniform(-0.08, 0.08) * W,
        cy=H / 2 + rng.uniform(-0.08, 0.08) * H,
    )
    return cam, wTc, wTo


@pytest.mark.skipif(not PRESENT, reason="no render backend can create a context on this machine")
@pytest.mark.parametrize("backend", PRESENT)
@pytest.mark.parametrize("size", [(224, 224), (256, 256), (512, 512), (320, 240)])
def test_plate_projects_exactly(backend: str, size: tuple[int, int]) -> None:
    W, H = size
    rng = np.random.default_rng(W * 1000 + H)
    renderer = make_renderer(backend, W, H)
    try:
        for _ in range(4):
            cam, wTc, wTo = _case(rng, W, H)
            scene = SceneSpec(
                objects=(ObjectSpec(_plate(), MaterialSpec(), wTo),),
                lights=(LightSpec((0.0, 0.0, -1.0), (1.0, 1.0, 1.0)),),
                ambient=(1.0, 1.0, 1.0),
            )
            renderer.load(scene)
            frame = renderer.render(cam.K, wTc)
            mask = frame.rgb.max(axis=2) > 0
            expected, z, dist = _analytic(cam, wTc, wTo)
            assert expected.sum() > 200, "the case generator should keep the plate in view"
            wrong = (mask != expected) & (dist > TIE_PX)
            assert wrong.sum() == 0, f"{wrong.sum()} pixels differ from the analytic projection ({cam})"
            both = mask & expected & (dist > TIE_PX)
            assert np.abs(frame.depth[both] - z[both]).max() <= DEPTH_TOL
            assert np.isinf(frame.depth[~mask]).all()
            np.testing.assert_array_equal(frame.K, cam.K)
            np.testing.assert_array_equal(frame.wTc, wTc)
            # The check is sensitive: half a pixel of principal-point error must show up as many wrong pixels.
            shifted, _, _ = _analytic(Camera.from_focal(cam.fx, W, H, cam.fy, cam.cx + 0.5, cam.cy), wTc, wTo)
            assert (mask != shifted).sum() >= 5
    finally:
        renderer.close()
