"""Any undistorted pinhole camera, seen as the canonical camera the network was trained on.

The network was trained on square pixels, a centred principal point (cx = w/2, cy = h/2) and its input size w x h.
A real camera differs in resolution, aspect, fx != fy and principal point. Two pinhole cameras at the same centre
differ by a homography, u_src = K_src K_t^-1 u_t, so the image can be remapped exactly to a target camera

    K_t = [[f_t, 0, w/2], [0, f_t, h/2], [0, 0, 1]]

with f_t the smallest focal length whose view the source covers, edge to edge: a crop, never a border of invented
pixels. What the crop leaves out is lost to the network.
f_t / w is then the focal scale s_f of Eq. 18-21. Lens distortion must be removed before (e.g. cv2.undistort).
"""

from __future__ import annotations

import cv2
import numpy as np
from numpy.typing import ArrayLike

from sim.camera import Camera


def canonical_target(camera: Camera, width: int, height: int) -> Camera:
    """The camera with square pixels and a centred principal point, at width x height, whose view `camera` covers.

    Raises ValueError when the principal point is not strictly inside the source image (no centred view exists).
    """
    fx, fy, cx, cy = camera.fx, camera.fy, camera.cx, camera.cy
    W, H = camera.width, camera.height
    if not (-0.5 < cx < W - 0.5 and -0.5 < cy < H - 0.5):
        raise ValueError(f"principal point ({cx:g}, {cy:g}) must lie inside the {W}x{H} image to centre a view on it")
    # Per side, the target's extent from the optical axis to its image edge (pixels / f_t) may not exceed the
    # source's (pixels / f_src): the image spans [-0.5, W - 0.5], so the edges lie half a pixel beyond the centres.
    need = [
        (width / 2.0 + 0.5) * fx / (cx + 0.5),
        (width / 2.0 - 0.5) * fx / (W - 0.5 - cx),
        (height / 2.0 + 0.5) * fy / (cy + 0.5),
        (height / 2.0 - 0.5) * fy / (H - 0.5 - cy),
    ]
    return Camera.from_focal(max(need), width, height)


class CanonicalRemap:
    """Maps images of `camera` to `canonical_target(camera, *size)` and network pixels back to the caller's.

    `__call__(rgb)`: (H, W, 3) uint8 of the source camera -> (h, w, 3) uint8 of the target camera. Shrinking is done
    first by area averaging (no aliasing), then the remaining homography by bilinear warping; a camera that already is
    the target passes through unchanged, bit for bit.
    """

    def __init__(self, camera: Camera, size: tuple[int, int]) -> None:
        self.source = camera
        self.size = (int(size[0]), int(size[1]))
        self.target = canonical_target(camera, *self.size)
        f = self.target.fx
        # Area-average down to about the target's pixel pitch first; the warp then only resamples by about 1x.
        sx, sy = min(1.0, f / camera.fx), min(1.0, f / camera.fy)
        mid = (max(1, round(camera.width * sx)), max(1, round(camera.height * sy)))
        self._mid = camera.resize(*mid) if mid != (camera.width, camera.height) else camera
        self._warp = self._mid.K @ np.linalg.inv(self.target.K)  # target pixel -> mid pixel
        self._identity = mid == self.size and np.allclose(self._warp, np.eye(3), rtol=0.0, atol=1e-9)
        self._to_source = camera.K @ np.linalg.inv(self.target.K)  # target pixel -> source pixel

    @property
    def focal_scale(self) -> float:
        """s_f = f_t / w: the target's focal length in units of its width (1 for the unit world's camera)."""
        return self.target.fx / self.size[0]

    @property
    def crop(self) -> tuple[float, float, float, float]:
        """The part of the source image the network sees: (left, top, right, bottom) pixel-edge coordinates."""
        w, h = self.size
        (u0, v0), (u1, v1) = self.to_source_px([[-0.5, -0.5], [w - 0.5, h - 0.5]])
        return float(u0), float(v0), float(u1), float(v1)

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        src = self.source
        if rgb.shape[:2] != (src.height, src.width):
            raise ValueError(
                f"rgb: expected {src.width}x{src.height} like the camera, got {rgb.shape[1]}x{rgb.shape[0]}"
            )
        img = rgb
        if (self._mid.width, self._mid.height) != (src.width, src.height):
            img = cv2.resize(img, (self._mid.width, self._mid.height), interpolation=cv2.INTER_AREA)
        if self._identity:
            return img
        return cv2.warpPerspective(
            img, self._warp, self.size, flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REPLICATE
        )

    def to_source_px(self, uv: ArrayLike) -> np.ndarray:
        """(N, 2) pixels of the target (network) image -> (N, 2) pixels of the caller's image, exactly."""
        uv = np.asarray(uv, dtype=np.float64).reshape(-1, 2)
        p = np.c_[uv, np.ones(len(uv))] @ self._to_source.T
        return p[:, :2] / p[:, 2:]


__all__ = ["CanonicalRemap", "canonical_target"]
