"""The camera contract every render backend must meet (shared/notes/renderers.md), as reusable checks.

A thin square plate at a known pose is rendered through random pinhole cameras (off-centre principal points,
fx != fy, several sizes and focal lengths). Its mask must equal the analytic projection pixel for pixel (pixel
centres closer than TIE_PX to an edge are rasteriser ties), and its depth must match the ray-plane intersection
within DEPTH_TOL. The tests run it on every backend present; `python -m sim.isaac_check` renders the same plate on
Isaac Sim through each way of giving it K.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from assets.mesh import Mesh
from sim.camera import Camera
from sim.geometry import exp_so3, look_at, make_pose
from sim.render import Renderer
from sim.scene import LightSpec, MaterialSpec, ObjectSpec, SceneSpec

HALF = 0.05  # plate half-size, metres
OFFSET = np.array([0.03, -0.02, 0.0])  # plate centre in its object frame: poses must not assume a centred mesh
TIE_PX = 0.01  # a pixel centre this close to an edge is a rasteriser tie, not an error
DEPTH_TOL = 1e-4


@dataclass(frozen=True)
class ContractResult:
    """One rendered case of the contract."""

    camera: Camera
    plate_pixels: int  # pixels the analytic plate covers
    wrong_pixels: int  # mask pixels that differ from the analytic projection (ties excluded)
    depth_error: float  # worst |depth - analytic| over the plate, metres
    background_is_inf: bool  # every pixel off the plate reports infinite depth
    shifted_wrong_pixels: int  # what half a pixel of principal-point error would give: the check's sensitivity

    @property
    def ok(self) -> bool:
        """The case meets the contract."""
        return self.wrong_pixels == 0 and self.depth_error <= DEPTH_TOL and self.background_is_inf


def plate() -> Mesh:
    """A 10 cm square plate, 1 um thick, centred at OFFSET in its own frame."""
    corners = np.array([[x, y, z] for z in (-5e-7, 5e-7) for y in (-HALF, HALF) for x in (-HALF, HALF)]) + OFFSET
    # 12 outward triangles of a box with corners indexed by (x, y, z) bits.
    faces = [
        [0, 2, 3], [0, 3, 1], [4, 5, 7], [4, 7, 6], [0, 1, 5], [0, 5, 4],
        [2, 6, 7], [2, 7, 3], [0, 4, 6], [0, 6, 2], [1, 3, 7], [1, 7, 5],
    ]  # fmt: skip
    return Mesh("plate", corners, np.array(faces))


def analytic(cam: Camera, wTc: np.ndarray, wTo: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The plate's exact mask, z-depth and each pixel centre's distance (px) to the projected outline."""
    u, v = np.meshgrid(np.arange(cam.width), np.arange(cam.height))
    uv = np.stack([u.ravel(), v.ravel()], axis=1).astype(float)
    rays = np.concatenate([cam.normalize(uv), np.ones((len(uv), 1))], axis=1) @ wTc[:3, :3].T
    centre = wTo[:3, :3] @ OFFSET + wTo[:3, 3]
    n, C = wTo[:3, 2], wTc[:3, 3]
    z = ((centre - C) @ n) / (rays @ n)  # ray direction has unit z in the camera, so s is the z-depth
    local = (C + z[:, None] * rays - centre) @ wTo[:3, :3]
    inside = (np.abs(local[:, 0]) < HALF) & (np.abs(local[:, 1]) < HALF) & (z > 0)
    corners = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]]) * HALF
    cw = (wTo @ np.c_[corners + OFFSET[:2], np.zeros(4), np.ones(4)].T).T[:, :3]
    uvc, _ = cam.project_world(cw, wTc)
    dist = np.full(len(uv), np.inf)
    for a, b in zip(uvc, np.roll(uvc, -1, axis=0), strict=True):
        t = np.clip((uv - a) @ (b - a) / ((b - a) @ (b - a)), 0.0, 1.0)
        dist = np.minimum(dist, np.linalg.norm(uv - (a + t[:, None] * (b - a)), axis=1))
    shape = (cam.height, cam.width)
    return inside.reshape(shape), z.reshape(shape), dist.reshape(shape)


def random_case(rng: np.random.Generator, W: int, H: int) -> tuple[Camera, np.ndarray, np.ndarray]:
    """A random camera (K, wTc) looking at the plate at a random pose wTo."""
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


def plate_scene(wTo: np.ndarray, material: MaterialSpec | None = None) -> SceneSpec:
    """The plate at pose wTo (4x4), lit from above, with no ground and no sky."""
    return SceneSpec(
        objects=(ObjectSpec(plate(), material or MaterialSpec(), wTo),),
        lights=(LightSpec((0.0, 0.0, -1.0), (1.0, 1.0, 1.0)),),
        ambient=(1.0, 1.0, 1.0),
    )


def check_case(renderer: Renderer, cam: Camera, wTc: np.ndarray, wTo: np.ndarray) -> ContractResult:
    """Render the plate once through (cam, wTc) and compare it with the analytic projection."""
    renderer.load(plate_scene(wTo))
    frame = renderer.render(cam.K, wTc)
    mask = frame.rgb.max(axis=2) > 0
    expected, z, dist = analytic(cam, wTc, wTo)
    wrong = (mask != expected) & (dist > TIE_PX)
    both = mask & expected & (dist > TIE_PX)
    depth_error = float(np.abs(frame.depth[both] - z[both]).max()) if both.any() else float("inf")
    shifted, _, _ = analytic(Camera.from_focal(cam.fx, cam.width, cam.height, cam.fy, cam.cx + 0.5, cam.cy), wTc, wTo)
    return ContractResult(
        cam, int(expected.sum()), int(wrong.sum()), depth_error, bool(np.isinf(frame.depth[~mask]).all()),
        int((mask != shifted).sum()),
    )  # fmt: skip
