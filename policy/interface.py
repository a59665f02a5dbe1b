"""The controller contract: what every closed-loop controller (classical, CNSv2, the benchmark's oracle) implements.

A controller is reset with the desired image, the intrinsics K and the scene scale d*, then `step(rgb)` returns a
`ControlOutput`: a camera-frame twist in real units and the controller's own stop signal (no ground truth), and, for a
controller that applies the gain and speed limits itself (CNSv2's `Servo`), the twist to execute. Episodes
(`evaluation.episodes`) and the registry (`policy.registry`) rely on nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

__all__ = ["ControlOutput", "Controller"]


@dataclass(frozen=True)
class ControlOutput:
    """One control step of a controller."""

    velocity: np.ndarray  # (6,) real units, camera frame; zero when not ok
    stop: bool  # the controller's own stop signal (no ground truth)
    ok: bool  # False when no command could be computed (e.g. too few matches)
    info: dict = field(default_factory=dict)  # matches, inliers, error, mode, reason
    # (6,) the twist to execute, gain and limits applied by the controller itself; None: the loop applies them
    command: np.ndarray | None = None


class Controller(Protocol):
    """A closed-loop controller towards one desired image."""

    name: str

    def reset(self, desired_rgb: np.ndarray, K: np.ndarray, scene_scale: float) -> None:
        """Set the desired image, the intrinsics and d*, and clear the stop counter."""
        ...

    def step(self, rgb: np.ndarray) -> ControlOutput:
        """Return the velocity command for the current image."""
        ...
