"""The render-backend interface: a renderer holds one scene and renders it from many camera poses.

`make_renderer(name, width, height, **options)` -> `load(scene)` -> `render(K, wTc) -> Frame` ... -> `close()`.
A backend module is imported only when it is asked for, so `import sim` never loads mujoco or isaacsim.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from numpy.typing import ArrayLike

from sim.camera import Camera
from sim.scene import SceneSpec


@dataclass(frozen=True, eq=False)
class Frame:
    """One rendered image with the camera that took it: RGB uint8 (H, W, 3), z-depth float32 (H, W) metres."""

    rgb: np.ndarray
    depth: np.ndarray  # +inf where nothing was hit
    K: np.ndarray  # (3, 3)
    wTc: np.ndarray  # (4, 4)

    def __post_init__(self) -> None:
        h, w = self.rgb.shape[:2]
        if self.rgb.dtype != np.uint8 or self.rgb.shape != (h, w, 3):
            raise ValueError(f"Frame.rgb must be uint8 (H, W, 3), got {self.rgb.dtype} {self.rgb.shape}")
        if self.depth.dtype != np.float32 or self.depth.shape != (h, w):
            raise ValueError(f"Frame.depth must be float32 ({h}, {w}), got {self.depth.dtype} {self.depth.shape}")

    @property
    def camera(self) -> Camera:
        """The pinhole camera of this frame."""
        return Camera(self.K, self.rgb.shape[1], self.rgb.shape[0])


class Renderer(Protocol):
    """What every backend implements."""

    width: int
    height: int

    def load(self, scene: SceneSpec) -> None:
        """Replace the current scene."""

    def render(self, K: ArrayLike, wTc: ArrayLike) -> Frame:
        """Render the loaded scene through intrinsics K from the OpenCV camera pose wTc."""

    def close(self) -> None:
        """Free the backend's resources; the renderer cannot be used afterwards."""


# name -> (module, class); each backend's own errors say what to install when it cannot start
BACKENDS: dict[str, tuple[str, str]] = {
    "mujoco": ("sim.mujoco_backend", "MujocoRenderer"),
    "isaac": ("sim.isaac_backend", "IsaacRenderer"),
}


def check_backend(name: str) -> None:
    """Fail at once, naming what is missing and how to install it, when backend `name` cannot run here."""
    if name not in BACKENDS:
        raise ValueError(f"unknown renderer {name!r}; available: {', '.join(BACKENDS)}")
    if name == "isaac":  # MuJoCo's own errors come at context creation, which is cheap; Isaac's start takes minutes
        from sim.isaac_backend import require_isaac

        require_isaac()


def make_renderer(name: str, width: int, height: int, **options: Any) -> Renderer:
    """Create a renderer by backend name (`mujoco`, `isaac`) for images of width x height."""
    if name not in BACKENDS:
        raise ValueError(f"unknown renderer {name!r}; available: {', '.join(BACKENDS)}")
    if not (isinstance(width, int) and isinstance(height, int) and width > 0 and height > 0):
        raise ValueError(f"renderer size must be positive integers, got {width!r} x {height!r}")
    module, cls = BACKENDS[name]
    return getattr(importlib.import_module(module), cls)(width, height, **options)
