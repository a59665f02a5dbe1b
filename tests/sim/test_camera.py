"""The pinhole camera: projection, normalisation, resizing and field of view."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from sim.camera import Camera
from sim.geometry import look_at

pytestmark = pytest.mark.unit

cameras = st.builds(
    lambda fx, fy, w, h, ox, oy: Camera.from_focal(fx, w, h, fy=fy, cx=w / 2 + ox * w, cy=h / 2 + oy * h),
    st.floats(50, 2000),
    st.floats(50, 2000),
    st.integers(16, 1024),
    st.integers(16, 1024),
    st.floats(-0.08, 0.08),
    st.floats(-0.08, 0.08),
)


def test_canonical_camera_is_the_unit_world_camera() -> None:
    cam = Camera.canonical(512)
    np.testing.assert_array_equal(cam.K, [[512, 0, 256], [0, 512, 256], [0, 0, 1]])
    assert cam.focal_scale == 1.0
    fovx, fovy = cam.fov_deg
    assert fovx == pytest.approx(53.13, abs=0.01) and fovy == pytest.approx(fovx)
    assert Camera.canonical(256, focal_scale=0.5).fx == 128.0
    assert Camera.canonical(320, 240).cy == 120.0


@given(
    cameras,
    st.lists(st.tuples(st.floats(-1, 1), st.floats(-1, 1), st.floats(0.1, 5)), min_size=1, max_size=8),
)
def test_project_then_unproject_round_trips(cam: Camera, pts: list) -> None:
    P = np.asarray(pts)
    uv, z = cam.project(P)
    np.testing.assert_allclose(z, P[:, 2])
    np.testing.assert_allclose(cam.unproject(uv, z), P, atol=1e-9)
    np.testing.assert_allclose(cam.to_pixels(cam.normalize(uv)), uv, atol=1e-9)
    np.testing.assert_allclose(cam.normalize(uv), P[:, :2] / P[:, 2:], atol=1e-12)


def test_project_world_matches_the_camera_frame() -> None:
    cam = Camera.canonical(256)
    wTc = look_at([0.4, -0.2, 0.7], [0.0, 0.0, 0.0])
    uv, z = cam.project_world([[0.0, 0.0, 0.0]], wTc)
    np.testing.assert_allclose(uv, [[cam.cx, cam.cy]], atol=1e-9)
    assert z[0] == pytest.approx(np.linalg.norm([0.4, -0.2, 0.7]))


def test_points_behind_the_camera_project_to_nan() -> None:
    uv, _ = Camera.canonical(64).project([[0.0, 0.0, -1.0], [0.0, 0.0, 1.0]])
    assert np.isnan(uv[0]).all() and np.isfinite(uv[1]).all()
    assert not Camera.canonical(64).in_image(uv)[0]


def test_in_image_uses_pixel_edges() -> None:
    cam = Camera.canonical(32, 16)
    uv = np.array([[-0.5, 0.0], [-0.51, 0.0], [31.49, 15.49], [31.5, 0.0], [0.0, 15.5]])
    np.testing.assert_array_equal(cam.in_image(uv), [True, False, True, False, False])


@pytest.mark.parametrize(("src", "dst"), [((512, 512), (256, 256)), ((320, 240), (160, 120)), ((256, 256), (512, 384))])
def test_resize_matches_what_cv2_resize_does_to_the_pixels(src: tuple[int, int], dst: tuple[int, int]) -> None:
    # An image that is linear in normalised coordinates stays exactly linear under area/bilinear resampling, so the
    # resized image must equal that same function sampled through the resized camera's K.
    cam = Camera.from_focal(300.0, *src, fy=280.0, cx=src[0] * 0.53, cy=src[1] * 0.47)
    u, v = np.meshgrid(np.arange(src[0]), np.arange(src[1]))

    def image(c: Camera, uu: np.ndarray, vv: np.ndarray) -> np.ndarray:
        xy = c.normalize(np.stack([uu.ravel(), vv.ravel()], axis=1).astype(float))
        return (3.0 * xy[:, 0] + 5.0 * xy[:, 1]).reshape(uu.shape).astype(np.float32)

    small = cam.resize(*dst)
    interp = cv2.INTER_AREA if dst[0] < src[0] else cv2.INTER_LINEAR
    resized = cv2.resize(image(cam, u, v), dst, interpolation=interp)
    du, dv = np.meshgrid(np.arange(dst[0]), np.arange(dst[1]))
    inner = (slice(2, -2), slice(2, -2))  # cv2 replicates borders when upsampling
    np.testing.assert_allclose(resized[inner], image(small, du, dv)[inner], atol=2e-5)


def test_resize_keeps_the_field_of_view() -> None:
    cam = Camera.from_focal(400.0, 320, 240, cx=150.0, cy=130.0)
    np.testing.assert_allclose(cam.resize(640, 480).fov_deg, cam.fov_deg, atol=1e-9)


@pytest.mark.parametrize(
    ("K", "w", "h", "match"),
    [
        (np.eye(3), 0, 10, "must be > 0"),
        (np.diag([-1.0, 1.0, 1.0]), 10, 10, "focal"),
        ([[100, 1, 5], [0, 100, 5], [0, 0, 1]], 10, 10, "expected"),
        (np.eye(2), 10, 10, "shape"),
        ([[np.nan, 0, 5], [0, 100, 5], [0, 0, 1]], 10, 10, "NaN"),
        (np.eye(3), 10.5, 10, "integers"),
    ],
)
def test_bad_intrinsics_raise(K: object, w: int, h: int, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        Camera(np.asarray(K, float), w, h)


def test_camera_is_immutable_and_comparable() -> None:
    cam = Camera.canonical(64)
    with pytest.raises(ValueError):
        cam.K[0, 0] = 1.0
    assert cam == Camera.canonical(64) and cam != Camera.canonical(64, focal_scale=2.0)
    assert len({cam, Camera.canonical(64)}) == 1
