"""The pinhole camera model: intrinsics K with an image size, projection, unprojection and resizing.

Pixel coordinates follow OpenCV: (u, v) with the centre of the top-left pixel at (0, 0), so the image spans
[-0.5, W - 0.5] x [-0.5, H - 0.5]. The canonical camera of the unit world has fx = fy = W and cx = W/2,
cy = H/2 (DESIGN.md), the paper's f = 512 at 512 px.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from sim.validate import as_array, as_pose


@dataclass(frozen=True, eq=False)
class Camera:
    """A pinhole camera without skew or distortion: 3x3 intrinsics K and an image of width x height pixels."""

    K: np.ndarray
    width: int
    height: int

    def __post_init__(self) -> None:
        K = as_array(self.K, (3, 3), "K").copy()
        if not (isinstance(self.width, int | np.integer) and isinstance(self.height, int | np.integer)):
            raise ValueError(f"width/height: expected integers, got {self.width!r}, {self.height!r}")
        if self.width <= 0 or self.height <= 0:
            raise ValueError(f"width/height: must be > 0, got {self.width}x{self.height}")
        if K[0, 0] <= 0 or K[1, 1] <= 0:
            raise ValueError(f"K: focal lengths must be > 0, got fx={K[0, 0]}, fy={K[1, 1]}")
        if K[0, 1] != 0 or K[1, 0] != 0 or not np.array_equal(K[2], [0.0, 0.0, 1.0]):
            raise ValueError(f"K: expected [[fx, 0, cx], [0, fy, cy], [0, 0, 1]], got {K.tolist()}")
        K.setflags(write=False)
        object.__setattr__(self, "K", K)
        object.__setattr__(self, "width", int(self.width))
        object.__setattr__(self, "height", int(self.height))

    @classmethod
    def from_focal(
        cls,
        fx: float,
        width: int,
        height: int,
        fy: float | None = None,
        cx: float | None = None,
        cy: float | None = None,
    ) -> Camera:
        """Return a camera with the given focal lengths; the principal point defaults to (W/2, H/2)."""
        fy = fx if fy is None else fy
        cx = width / 2.0 if cx is None else cx
        cy = height / 2.0 if cy is None else cy
        return cls(np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]]), width, height)

    @classmethod
    def canonical(cls, width: int, height: int | None = None, focal_scale: float = 1.0) -> Camera:
        """Return the unit world's canonical camera, f = focal_scale * W with a centred principal point."""
        height = width if height is None else height
        return cls.from_focal(focal_scale * width, width, height)

    @property
    def fx(self) -> float:
        """Focal length along x, in pixels."""
        return float(self.K[0, 0])

    @property
    def fy(self) -> float:
        """Focal length along y, in pixels."""
        return float(self.K[1, 1])

    @property
    def cx(self) -> float:
        """Principal point x, in pixels."""
        return float(self.K[0, 2])

    @property
    def cy(self) -> float:
        """Principal point y, in pixels."""
        return float(self.K[1, 2])

    @property
    def focal_scale(self) -> float:
        """fx relative to the canonical camera of the same width (fx / W); 1 for the canonical camera."""
        return self.fx / self.width

    @property
    def fov_deg(self) -> tuple[float, float]:
        """The horizontal and vertical field of view in degrees, from pixel edge to pixel edge."""
        fovx = np.arctan((self.cx + 0.5) / self.fx) + np.arctan((self.width - 0.5 - self.cx) / self.fx)
        fovy = np.arctan((self.cy + 0.5) / self.fy) + np.arctan((self.height - 0.5 - self.cy) / self.fy)
        return float(np.degrees(fovx)), float(np.degrees(fovy))

    def normalize(self, uv: ArrayLike) -> np.ndarray:
        """Map (N, 2) pixel coordinates to (N, 2) normalised image coordinates x = X/Z, y = Y/Z."""
        uv = as_array(uv, (None, 2), "uv")
        return np.stack([(uv[:, 0] - self.cx) / self.fx, (uv[:, 1] - self.cy) / self.fy], axis=1)

    def to_pixels(self, xy: ArrayLike) -> np.ndarray:
        """Map (N, 2) normalised image coordinates to (N, 2) pixel coordinates."""
        xy = as_array(xy, (None, 2), "xy")
        return np.stack([self.fx * xy[:, 0] + self.cx, self.fy * xy[:, 1] + self.cy], axis=1)

    def project(self, points: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
        """Project (N, 3) camera-frame points; return (N, 2) pixels (NaN where Z <= 0) and (N,) depths Z."""
        P = as_array(points, (None, 3), "points")
        z = P[:, 2]
        with np.errstate(divide="ignore", invalid="ignore"):
            xy = P[:, :2] / z[:, None]
        xy[z <= 0] = np.nan
        uv = np.stack([self.fx * xy[:, 0] + self.cx, self.fy * xy[:, 1] + self.cy], axis=1)
        return uv, z.copy()

    def project_world(self, points: ArrayLike, wTc: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
        """Project (N, 3) world points through a camera at pose wTc; see `project`."""
        P = as_array(points, (None, 3), "points")
        T = as_pose(wTc, "wTc")
        return self.project((P - T[:3, 3]) @ T[:3, :3])

    def unproject(self, uv: ArrayLike, depth: ArrayLike) -> np.ndarray:
        """Lift (N, 2) pixels with (N,) z-depths to (N, 3) camera-frame points."""
        xy = self.normalize(uv)
        z = as_array(depth, (xy.shape[0],), "depth")
        return np.concatenate([xy * z[:, None], z[:, None]], axis=1)

    def in_image(self, uv: ArrayLike) -> np.ndarray:
        """Return an (N,) mask of pixel coordinates that fall inside the image (NaN is outside)."""
        uv = np.asarray(uv, dtype=np.float64)
        with np.errstate(invalid="ignore"):
            return (
                (uv[:, 0] >= -0.5) & (uv[:, 0] < self.width - 0.5) & (uv[:, 1] >= -0.5) & (uv[:, 1] < self.height - 0.5)
            )

    def resize(self, width: int, height: int) -> Camera:
        """Return the camera of the same view resampled to width x height (pixel-centre aligned, as cv2.resize)."""
        if width <= 0 or height <= 0:
            raise ValueError(f"resize: size must be > 0, got {width}x{height}")
        sx, sy = width / self.width, height / self.height
        # Pixel edges, not pixel centres, are preserved: u' + 0.5 = s (u + 0.5).
        return Camera.from_focal(
            self.fx * sx,
            width,
            height,
            fy=self.fy * sy,
            cx=sx * (self.cx + 0.5) - 0.5,
            cy=sy * (self.cy + 0.5) - 0.5,
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Camera):
            return NotImplemented
        return self.width == other.width and self.height == other.height and np.array_equal(self.K, other.K)

    def __hash__(self) -> int:
        return hash((self.width, self.height, self.K.tobytes()))

    def __repr__(self) -> str:
        return f"Camera({self.width}x{self.height}, fx={self.fx:g}, fy={self.fy:g}, cx={self.cx:g}, cy={self.cy:g})"
