"""One servo episode: a controller drives the ServoEnv camera from the initial to the desired view (CNS protocol:
50 Hz, the command executed at 2x, at most `sim.env.max_steps` steps, stop by the controller's own signal).

CNSv2 runs as a robot would run `policy.Servo`: its `command` (gain and limits applied by Servo) is executed and its
`arrived` is the stop, so the benchmark and a robot loop share one definition of both."""

from __future__ import annotations

import time

import numpy as np

from evaluation.metrics import Episode, Trace, is_success
from policy.control import CNS_GAIN, executed_velocity
from policy.interface import Controller
from sim.env import ServoEnv

__all__ = ["CNS_GAIN", "FAIL_STEPS", "run_episode"]

# CNS aborts a matcher-based controller that finds no matches; we allow a few steps' grace for a RANSAC hiccup.
FAIL_STEPS = 3


def run_episode(
    env: ServoEnv,
    controller: Controller,
    seed: int,
    gain: float = CNS_GAIN,
    fail_steps: int = FAIL_STEPS,
    limits: tuple[float, float] | None = None,
) -> Episode:
    """Run the episode of `seed` to the controller's stop, an abnormal pose, a failing controller or the step limit.

    A controller's own command (`ControlOutput.command`: CNSv2's Servo, built with the same gain) is executed as it
    is; the other controllers' velocities run through `executed_velocity` with `gain` and `limits` (max linear, max
    angular), as DAgger's do.
    """
    if fail_steps < 1:
        raise ValueError(f"fail_steps must be >= 1, got {fail_steps}")
    env.reset(seed)
    desired_distance = float(np.linalg.norm(env.wTd[:3, 3]))
    initial_te, initial_re = env.pose_error()
    controller.reset(env.desired_frame().rgb, env.camera.K, env.scene_scale)
    frame = env.observe()
    errors, positions = [(initial_te, initial_re)], [env.wTc[:3, 3]]
    steps, seconds, failed, reason = 0, 0.0, 0, ""
    while not env.done:
        t0 = time.perf_counter()
        out = controller.step(frame.rgb)
        seconds += time.perf_counter() - t0
        if out.stop:
            reason = "stop"
            break
        failed = 0 if out.ok else failed + 1
        if failed >= fail_steps:
            reason = f"controller failed: {out.info.get('reason', 'no command')}"
            break
        command = out.command
        if command is None:
            command = executed_velocity(out.velocity, gain, *(limits or (None, None)))
        frame = env.step(command)
        steps += 1
        errors.append(env.pose_error())
        positions.append(env.wTc[:3, 3])
    te, re = env.pose_error()
    success = not env.terminated and is_success(te, re, desired_distance)
    trace = Trace(np.array(errors, float), np.array(positions, float), env.wTd[:3, 3])
    return Episode(success, te, re, steps, initial_re, seconds, int(seed), reason or env.reason, initial_te, trace)
