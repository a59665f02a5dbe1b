"""The oracle: PBVS on the true pose, the benchmark's upper bound. It reads the environment's ground truth, so it
exists only here, never in a deployed policy."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from policy.control import pbvs
from policy.interface import ControlOutput
from policy.registry import ControllerSetup, register_controller

if TYPE_CHECKING:
    from sim.env import ServoEnv


class OracleController:
    """PBVS on the true pose: the upper bound, and the only controller allowed to stop on ground truth."""

    name = "oracle"

    def __init__(self, env: ServoEnv, lam: float = 1.0, stop_te: float = 1e-4, stop_re_deg: float = 0.01) -> None:
        self.env, self.lam = env, lam
        self.stop_te, self.stop_re_deg = stop_te, stop_re_deg

    def reset(self, desired_rgb: np.ndarray, K: np.ndarray, scene_scale: float) -> None:
        """Nothing to prepare: the oracle reads the pose from the environment."""
        self.scale = scene_scale

    def step(self, rgb: np.ndarray) -> ControlOutput:
        """PBVS on env.dTc; stops once the true error is below the thresholds (in units of d*)."""
        te, re = self.env.pose_error()
        stop = te < self.stop_te * self.scale and re < self.stop_re_deg
        return ControlOutput(pbvs(self.env.dTc, self.lam), stop, True, {"te": te, "re": re})


@register_controller("oracle")
def _oracle(setup: ControllerSetup) -> OracleController:
    """The oracle of `setup.env`."""
    if setup.env is None:
        raise ValueError("controller 'oracle' reads the true pose: ControllerSetup(env=...) is needed")
    return OracleController(setup.env)
