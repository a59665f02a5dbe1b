"""The open-loop probes render the frames they claim: the goal view at the desired pose, and the ambiguity probe's
labels are the PBVS velocities of the poses it names (checked against closed forms)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import ClassVar

import numpy as np
import pytest

from evaluation.openloop import PROBE_DEG, ambiguity_probe, stop_norms
from tests.fixtures.factories import small_config

pytestmark = pytest.mark.integration


class _ImageDifference:
    """A stand-in Servo whose |v| is the mean absolute pixel difference from the desired image: 0 exactly when the
    frame is the desired view, larger the further the camera is from it."""

    made: ClassVar[list[tuple[object, np.ndarray, float]]] = []

    def __init__(self, policy: object, desired_rgb: np.ndarray, K: np.ndarray, scene_scale: float) -> None:
        self.desired = desired_rgb.astype(np.float64)
        self.made.append((policy, np.asarray(K), scene_scale))

    def restart(self) -> None:
        pass

    def step(self, rgb: np.ndarray) -> SimpleNamespace:
        return SimpleNamespace(velocity_unit=np.array([np.abs(rgb - self.desired).mean() / 255.0, 0, 0, 0, 0, 0]))


@pytest.fixture
def cfg(monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    monkeypatch.setattr("policy.servo.Servo", _ImageDifference)
    return small_config("sim.scene.effects.prob=0.0")  # no random noise: the goal frame is the desired image


def _servos_got(policy: object, cfg) -> None:  # type: ignore[no-untyped-def]
    """Every Servo was built with the policy under test, the camera's K and the suite's d*."""
    assert _ImageDifference.made and all(p is policy for p, _, _ in _ImageDifference.made)
    K = np.array(
        [
            [cfg.sim.camera.width, 0, cfg.sim.camera.width / 2],
            [0, cfg.sim.camera.width, cfg.sim.camera.height / 2],
            [0, 0, 1],
        ]
    )
    for _, got, scale in _ImageDifference.made:
        np.testing.assert_allclose(got, K)
        assert scale == cfg.sim.env.scene_scale
    _ImageDifference.made.clear()


def test_stop_norms_render_the_goal_at_the_desired_pose_and_the_far_frames_further(cfg) -> None:  # type: ignore[no-untyped-def]
    seeds = [11, 12, 13, 14]
    policy = object()
    norms = stop_norms(policy, cfg, seeds)
    _servos_got(policy, cfg)
    assert {k: len(v) for k, v in norms.items()} == {"goal": 4, "near": 4, "far": 4}
    assert np.all(norms["goal"] == 0.0)
    assert np.all(norms["near"] > 0.0) and np.median(norms["far"]) > np.median(norms["near"])


def test_the_ambiguity_probe_labels_are_the_pbvs_velocities_of_its_poses(cfg) -> None:  # type: ignore[no-untyped-def]
    policy = object()
    probe = ambiguity_probe(policy, cfg, [21, 22])
    _servos_got(policy, cfg)
    assert set(probe) == {(name, deg) for name in ("orbit", "lateral", "tilt") for deg in PROBE_DEG}
    for (name, deg), rows in probe.items():
        theta = np.radians(deg)
        # Unit world (v / d*, w): a tilt in place turns by theta; a lateral move of theta d* translates by theta;
        # the orbit about the point d* ahead does both, its chord 2 d* sin(theta / 2) and its turn theta.
        label = {"tilt": theta, "lateral": theta, "orbit": np.hypot(2 * np.sin(theta / 2), theta)}[name]
        assert rows.shape == (2, 3)
        np.testing.assert_allclose(rows[:, 1], label, rtol=1e-6)
        assert np.all(rows[:, 0] > 0.0)  # none of the three is the desired view
