"""Where an episode's success is decided: `run_episode` scores the final pose error against 0.1 x the desired
camera's distance from the scene centre and 10°, and an abnormal end is a failure whatever the error.

A stand-in environment, so that the final error can sit exactly on a bound and d* can differ from 1 without a render.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest

from evaluation.episodes import run_episode
from policy.interface import ControlOutput

pytestmark = pytest.mark.unit


class _Env:
    """The desired camera at distance `d` from the scene centre; the pose error is (te0, re0) until the first step,
    then (te, re); `end` is the reason the env gives after that step ("" keeps the episode going)."""

    def __init__(self, d: float, final: tuple[float, float], end: str = "") -> None:
        self._wTd = np.eye(4)
        self._wTd[:3, 3] = (0.0, 0.0, d)
        # The current camera three times as far: a rule that scaled by it instead of d* would move the bound.
        self._wTc = np.eye(4)
        self._wTc[:3, 3] = 3.0 * self._wTd[:3, 3]
        self.final, self.end = final, end
        self.error = (5.0 * d, 90.0)  # far outside both bounds, so scoring the initial error would fail every case
        self.reason = ""
        self.camera = SimpleNamespace(K=np.array([[8.0, 0, 4], [0, 8.0, 4], [0, 0, 1]]))
        self.scene_scale = d
        self._frame = SimpleNamespace(rgb=np.zeros((8, 8, 3), np.uint8))

    def reset(self, seed: int) -> SimpleNamespace:
        return self._frame

    def desired_frame(self) -> SimpleNamespace:
        return self._frame

    def observe(self) -> SimpleNamespace:
        return self._frame

    def step(self, vel: np.ndarray) -> SimpleNamespace:
        self.error, self.reason = self.final, self.end
        return self._frame

    def pose_error(self) -> tuple[float, float]:
        return self.error

    @property
    def wTd(self) -> np.ndarray:
        return self._wTd

    @property
    def wTc(self) -> np.ndarray:
        return self._wTc

    @property
    def done(self) -> bool:
        return bool(self.reason)

    @property
    def terminated(self) -> bool:
        return self.reason not in ("", "step limit")


class _OneStepThenStop:
    name = "one step"

    def reset(self, desired_rgb: np.ndarray, K: np.ndarray, scene_scale: float) -> None:
        self.k = 0

    def step(self, rgb: np.ndarray) -> ControlOutput:
        self.k += 1
        return ControlOutput(np.zeros(6), self.k > 1, True, {})


def _episode(d: float, te: float, re: float, end: str = "") -> bool:
    ep = run_episode(_Env(d, (te, re), end), _OneStepThenStop(), seed=0)  # type: ignore[arg-type]
    assert (ep.te_m, ep.re_deg) == (te, re)  # the final error is what is reported
    return ep.success


@pytest.mark.parametrize("d", [0.5, 1.0, 2.0])  # powers of two: 0.1 * d is exact
def test_an_episode_succeeds_just_below_both_bounds_and_fails_on_them(d: float) -> None:
    bound = 0.1 * d  # the protocol: final TE < 0.1 x |desired camera position| and RE < 10°
    assert _episode(d, math.nextafter(bound, 0.0), math.nextafter(10.0, 0.0))
    assert not _episode(d, bound, 0.0)
    assert not _episode(d, 0.0, 10.0)


def test_the_bound_is_a_tenth_of_the_desired_distance_when_it_is_not_one() -> None:
    assert _episode(2.0, 0.15, 1.0)  # inside 20 cm, outside the unit world's 10 cm
    assert not _episode(0.5, 0.06, 1.0)  # outside 5 cm, inside 10 cm


def test_an_abnormal_end_fails_even_at_the_goal_and_the_step_limit_is_scored_by_the_error() -> None:
    assert not _episode(1.0, 0.0, 0.0, end="scene centre out of view")
    assert _episode(1.0, 0.01, 1.0, end="step limit")
    assert not _episode(1.0, 0.5, 1.0, end="step limit")
