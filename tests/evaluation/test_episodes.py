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
