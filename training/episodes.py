"""One servo episode: a controller drives the ServoEnv camera from the initial to the desired view (CNS protocol:
50 Hz, the command executed at 2x, at most `sim.env.max_steps` steps, stop by the controller's own signal)."""

from __future__ import annotations

import time

import numpy as np

from policy.classical import Controller, ControlOutput
from policy.control import pbvs
from sim.env import ServoEnv
from training.metrics import Episode, is_success

CNS_GAIN = 2.0  # CNS executes twice the predicted velocity


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


def run_episode(env: ServoEnv, controller: Controller, seed: int, gain: float = CNS_GAIN) -> Episode:
    """Run the episode of `seed` to the controller's stop, an abnormal pose or the step limit."""
    env.reset(seed)
    desired_distance = float(np.linalg.norm(env.wTd[:3, 3]))
    initial_re = env.pose_error()[1]
    controller.reset(env.desired_frame().rgb, env.camera.K, env.scene_scale)
    frame = env.observe()
    steps, seconds = 0, 0.0
    while not env.done:
        t0 = time.perf_counter()
        out = controller.step(frame.rgb)
        seconds += time.perf_counter() - t0
        if out.stop:
            break
        frame = env.step(gain * out.velocity)
        steps += 1
    te, re = env.pose_error()
    success = not env.terminated and is_success(te, re, desired_distance)
    return Episode(success, te, re, steps, initial_re, seconds)
