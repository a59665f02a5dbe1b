"""Servo episodes: the oracle brings every canonical episode home; a controller's stop ends an episode."""

from __future__ import annotations

import numpy as np
import pytest

from evaluation.episodes import run_episode
from evaluation.metrics import summarise
from evaluation.oracle import OracleController
from policy.interface import ControlOutput
from sim import ServoEnv
from tests.fixtures.factories import small_config

pytestmark = pytest.mark.integration

# The CNS benchmark draws the initial pose from the desired distribution (shared/notes/benchmark-protocol.md).
BENCHMARK_POSES = [
    "sim.poses.initial.elevation_deg=[70,90]",
    "sim.poses.initial.extra_rotation_deg.z=15",
    "sim.poses.initial.extra_rotation_deg.y=5",
    "sim.poses.initial.extra_rotation_deg.x=5",
]


@pytest.fixture(scope="module")
def env() -> ServoEnv:
    e = ServoEnv(small_config(*BENCHMARK_POSES).sim)
    yield e
    e.close()


@pytest.mark.slow
def test_oracle_reaches_every_goal_of_the_benchmark_distribution(env: ServoEnv) -> None:
    episodes = [run_episode(env, OracleController(env), seed) for seed in range(8)]
    row = summarise(episodes)
    assert row["sr"] == 1.0
    assert row["te_mm_mean"] < 0.2 and row["re_deg_mean"] < 0.02
    assert all(0 < e.steps < 600 for e in episodes)  # stopped by its own signal, before the step limit


class _StopsAt:
    name = "stops"

    def __init__(self, n: int) -> None:
        self.n, self.k = n, 0

    def reset(self, desired_rgb: np.ndarray, K: np.ndarray, scene_scale: float) -> None:
        self.k = 0

    def step(self, rgb: np.ndarray) -> ControlOutput:
        self.k += 1
        return ControlOutput(np.zeros(6), self.k > self.n, True, {})


def test_the_controller_stop_ends_the_episode_and_failure_is_measured(env: ServoEnv) -> None:
    ep = run_episode(env, _StopsAt(3), seed=1)
    assert ep.steps == 3 and not ep.success  # it never moved, so the initial error remains
    te, re = env.pose_error()
    assert ep.te_m == te and ep.re_deg == re and ep.initial_re_deg == pytest.approx(re)


def test_cnsv2_episodes_execute_servos_command_and_stop_on_its_arrival(env: ServoEnv, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from policy import build_policy
    from policy.servo import Servo, ServoController

    cfg = small_config("policy.servo.hybrid=false")
    ctrl = ServoController(build_policy(cfg.policy), cfg.policy.servo, stop_velocity=1e9, stop_steps=4)
    commands, executed = [], []
    real_step, env_step = Servo.step, env.step

    def servo_step(self, rgb):  # type: ignore[no-untyped-def]
        out = real_step(self, rgb)
        commands.append(out.command)
        return out

    def spy(vel, dt=None):  # type: ignore[no-untyped-def]
        executed.append(np.asarray(vel))
        return env_step(vel, dt)

    monkeypatch.setattr(Servo, "step", servo_step)
    monkeypatch.setattr(env, "step", spy)
    # gain 5 here would differ from the Servo's (2): the episode runs what Servo commands, not its own product.
    ep = run_episode(env, ctrl, seed=2, gain=5.0, limits=(0.5, 1.0))
    assert ep.reason == "stop" and ep.steps == 3  # every unit velocity counts as small: arrived on step 4
    assert len(executed) == 3 and all(np.array_equal(a, b) for a, b in zip(executed, commands, strict=False))
    assert any(np.any(c) for c in executed)
