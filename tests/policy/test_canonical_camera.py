"""Remapping a real pinhole camera to the network's canonical camera: exact geometry, a crop, and a pass-through."""

from __future__ import annotations

import numpy as np
import pytest

from policy.canonical_camera import CanonicalRemap, canonical_target
from sim.camera import Camera

pytestmark = pytest.mark.unit

# (K row-major fx, fy, cx, cy, width, height): a RealSense-like colour camera, the same camera with another aspect
# and a shifted principal point, a wide 16:9 one, and a small one the remap must enlarge.
REAL = {
    "d435 640x480": (611.0, 609.2, 316.5, 238.1, 640, 480),
    "portrait 480x640": (605.0, 612.0, 250.0, 330.0, 480, 640),
    "wide 1280x720": (640.0, 636.0, 655.0, 350.0, 1280, 720),
    "small 160x120": (150.0, 152.0, 77.0, 63.0, 160, 120),
}


def _camera(fx: float, fy: float, cx: float, cy: float, w: int, h: int) -> Camera:
    return Camera(np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]]), w, h)


def _blobs(cam: Camera, uv: np.ndarray, sigma: float) -> np.ndarray:
    """A float image with one Gaussian spot per pixel position (pixel centres at integers)."""
    ys, xs = np.mgrid[0 : cam.height, 0 : cam.width].astype(np.float64)
    img = np.zeros((cam.height, cam.width))
    for u, v in uv:
        img += np.exp(-((xs - u) ** 2 + (ys - v) ** 2) / (2 * sigma**2))
    return img


@pytest.mark.parametrize("name", list(REAL))
def test_the_remapped_image_is_the_canonical_cameras_view_of_the_same_points(name: str) -> None:
    cam = _camera(*REAL[name])
    remap = CanonicalRemap(cam, (256, 256))
    target = remap.target
    assert target.fx == target.fy and (target.cx, target.cy) == (128.0, 128.0)
    # 3-D points on a 3x3 grid over the target's view (spots apart and off the borders), at depths 0.5-3.
    rng = np.random.default_rng(0)
    grid = np.stack(np.meshgrid([-0.7, 0.0, 0.7], [-0.7, 0.0, 0.7]), axis=-1).reshape(-1, 2)
    xy = (grid + rng.uniform(-0.1, 0.1, grid.shape)) * (128 / target.fx)
    Z = rng.uniform(0.5, 3.0, len(xy))
    P = np.c_[xy * Z[:, None], Z]
    uv_src, _ = cam.project(P)
    uv_net, _ = target.project(P)
    np.testing.assert_allclose(remap.to_source_px(uv_net), uv_src, atol=1e-9)

    # Spots of about 1.5 px in whichever image is coarser; centroids over +-4 sigma of the target image.
    sigma = max(1.5, 1.5 * target.fx / cam.fx)  # target pixels
    img = np.round(_blobs(cam, uv_src, sigma * cam.fx / target.fx) * 250).astype(np.uint8)
    out = remap(np.repeat(img[..., None], 3, axis=2))[..., 0].astype(np.float64)
    assert out.shape == (256, 256)
    ys, xs = np.mgrid[0:256, 0:256]
    for u, v in uv_net:
        win = (np.abs(xs - u) <= 4 * sigma) & (np.abs(ys - v) <= 4 * sigma)
        wts = out * win
        centroid = np.array([(wts * xs).sum(), (wts * ys).sum()]) / wts.sum()
        assert np.linalg.norm(centroid - [u, v]) < 0.05, (name, centroid, (u, v))


def test_the_canonical_camera_passes_through_bit_for_bit() -> None:
    rgb = np.random.default_rng(1).integers(0, 256, (256, 256, 3), dtype=np.uint8)
    remap = CanonicalRemap(Camera.canonical(256), (256, 256))
    assert remap.focal_scale == 1.0 and remap(rgb) is rgb
    assert CanonicalRemap(Camera.canonical(256, focal_scale=0.5), (256, 256)).focal_scale == 0.5


def test_a_resized_canonical_view_is_the_canonical_camera_again() -> None:
    big = Camera.canonical(128).resize(256, 256)
    target = canonical_target(big, 128, 128)
    np.testing.assert_allclose(target.K, Camera.canonical(128).K, atol=1e-12)


def test_another_aspect_is_cropped_never_padded() -> None:
    remap = CanonicalRemap(_camera(*REAL["d435 640x480"]), (256, 256))
    left, top, right, bottom = remap.crop
    # The vertical view is the limit: the crop spans the full height and the central part of the width.
    assert top == pytest.approx(-0.5, abs=0.5) and bottom <= 479.5 + 1e-9 and bottom > 474
    assert 70 < left and right < 570 and left >= -0.5 and right <= 639.5
    assert remap.focal_scale == pytest.approx(1.2816, abs=1e-3)


def test_a_principal_point_outside_the_image_is_refused() -> None:
    with pytest.raises(ValueError, match="principal point"):
        canonical_target(_camera(500.0, 500.0, 700.0, 240.0, 640, 480), 256, 256)
    with pytest.raises(ValueError, match="expected 640x480"):
        CanonicalRemap(_camera(*REAL["d435 640x480"]), (256, 256))(np.zeros((256, 256, 3), np.uint8))
