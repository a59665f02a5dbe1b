"""Matcher-based classical controllers (policy.classical) in closed loop on the simulator and on edge cases."""

from __future__ import annotations

from collections.abc import Iterator

import cv2
import numpy as np
import pytest

from policy.classical import CONTROLLERS, MatcherIBVS, MatcherPBVS
from policy.control import pbvs
from policy.interface import Controller
from policy.registry import make_controller
from sim import ServoEnv
from tests.fixtures.factories import textured_sim

DT = 0.02
GAIN = 2.0  # CNS executes the commanded velocity at 2x
SEEDS = (0, 1, 2)


@pytest.fixture(scope="module")
def env() -> Iterator[ServoEnv]:
    with ServoEnv(textured_sim(256)) as e:
        yield e


def easy_start(env: ServoEnv, seed: int, max_deg: float = 20.0) -> tuple[float, float]:
    """Reset, then walk towards the goal with the oracle until the rotation error is below max_deg (benchmark-like)."""
    env.reset(seed)
    for _ in range(300):
        if env.pose_error()[1] < max_deg:
            break
        env.step(GAIN * pbvs(env.dTc), DT)
    return env.pose_error()


def closed_loop(env: ServoEnv, ctrl: Controller, seed: int, steps: int = 300) -> tuple[tuple, tuple]:
    """Drive ctrl from the easy start until both errors shrink 5x (or steps run out); return (start, end) errors."""
    e0 = easy_start(env, seed)
    ctrl.reset(env.desired_frame().rgb, env.camera.K, env.scene_scale)
    for _ in range(steps):
        out = ctrl.step(env.observe().rgb)
        env.step(GAIN * out.velocity, DT)
        if env.done:
            break
        t, r = env.pose_error()
        if t < e0[0] / 5 and r < e0[1] / 5:
            break
    return e0, env.pose_error()


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.parametrize("name", CONTROLLERS)
def test_classical_controllers_converge_on_textured_scenes(env: ServoEnv, name: str) -> None:
    results = [closed_loop(env, make_controller(name), seed) for seed in SEEDS]
    wins = [end[0] < start[0] / 5 and end[1] < start[1] / 5 for start, end in results]
    assert sum(wins) >= 2, f"(start, end) errors per seed: {results}"


@pytest.mark.integration
@pytest.mark.parametrize("name", ["sift_pbvs", "sift_ibvs"])
def test_identical_images_give_zero_velocity_and_stop(env: ServoEnv, name: str) -> None:
    env.reset(1)
    des = env.desired_frame()
    ctrl = make_controller(name)
    ctrl.reset(des.rgb, des.K, env.scene_scale)
    outs = [ctrl.step(des.rgb) for _ in range(25)]  # default stop_steps = 25
    assert all(o.ok for o in outs)
    assert max(float(np.linalg.norm(o.velocity)) for o in outs) < 1e-6
    assert not any(o.stop for o in outs[:-1])
    assert outs[-1].stop
    assert outs[-1].info["error"] < 1e-9


@pytest.mark.integration
@pytest.mark.parametrize("name", CONTROLLERS)
def test_grey_image_is_not_ok(env: ServoEnv, name: str) -> None:
    env.reset(1)
    des = env.desired_frame()
    grey = np.full_like(des.rgb, 128)
    ctrl = make_controller(name)
    ctrl.reset(des.rgb, des.K, env.scene_scale)
    out = ctrl.step(grey)
    assert not out.ok and not out.stop
    assert np.array_equal(out.velocity, np.zeros(6))
    assert "reason" in out.info and out.info["matches"] == 0
    # A grey desired image has no keypoints either.
    ctrl.reset(grey, des.K, env.scene_scale)
    out = ctrl.step(des.rgb)
    assert not out.ok and np.array_equal(out.velocity, np.zeros(6))


@pytest.mark.unit
def test_make_controller_names_and_errors() -> None:
    for name in CONTROLLERS:
        ctrl = make_controller(name)
        assert ctrl.name == name
    assert isinstance(make_controller("sift_pbvs"), MatcherPBVS)
    assert isinstance(make_controller("sift_ibvs"), MatcherIBVS)
    with pytest.raises(ValueError, match="sift_pbvs"):
        make_controller("roma_ibvs")
    with pytest.raises(ValueError, match="detector"):
        MatcherPBVS("akaze")  # type: ignore[arg-type]
    with pytest.raises(RuntimeError, match="reset"):
        MatcherIBVS().step(np.zeros((8, 8, 3), np.uint8))


@pytest.mark.integration
def test_orb_pbvs_gives_finite_velocity(env: ServoEnv) -> None:
    easy_start(env, 2)
    ctrl = make_controller("orb_pbvs")
    ctrl.reset(env.desired_frame().rgb, env.camera.K, env.scene_scale)
    out = ctrl.step(env.observe().rgb)
    assert out.ok, out.info
    assert out.velocity.shape == (6,) and np.all(np.isfinite(out.velocity))
    assert np.linalg.norm(out.velocity) > 0
    assert out.info["inliers"] >= 8


@pytest.mark.integration
def test_an_episode_does_not_depend_on_the_episodes_before_it(env: ServoEnv) -> None:
    # OpenCV's RANSAC samples from a process-wide generator; seed 0's first match set is one where its state changes
    # the essential matrix RANSAC keeps (0.045 apart in the velocity before reset() reseeded it).
    env.reset(0)
    rgb = env.observe().rgb
    velocities = []
    for burn in (0, 3, 11):
        rng = np.random.default_rng(burn)
        for _ in range(burn):  # another episode's RANSAC calls
            a = rng.random((50, 2)) * 100
            cv2.findHomography(a, a + rng.random((50, 2)), cv2.RANSAC, 1.0)
        ctrl = make_controller("sift_pbvs")
        ctrl.reset(env.desired_frame().rgb, env.camera.K, env.scene_scale)
        velocities.append(ctrl.step(rgb).velocity)
    assert np.array_equal(velocities[0], velocities[1]) and np.array_equal(velocities[0], velocities[2])


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.parametrize("name", ["sift_pbvs", "sift_ibvs"])
def test_the_stop_fires_only_once_the_camera_is_at_the_goal(env: ServoEnv, name: str) -> None:
    # A fixed episode from the benchmark-like easy start: the stop rule (mean keypoint error below stop_error for
    # stop_steps steps) must not fire while the camera is still centimetres away, as the old 0.01 threshold did; near
    # the goal the controller follows tracked corners ("tracked") and PBVS runs on the plane's homography.
    easy_start(env, 1)
    ctrl = make_controller(name)
    ctrl.reset(env.desired_frame().rgb, env.camera.K, env.scene_scale)
    seen = []
    for _ in range(500):
        out = ctrl.step(env.observe().rgb)
        seen.append((out.info.get("points"), out.info.get("mode"), env.pose_error()[0]))
        if out.stop:
            break
        env.step(GAIN * out.velocity, DT)
        assert not env.done, env.reason
    te, re = env.pose_error()
    assert out.stop, f"never stopped; last errors {seen[-3:]}"
    assert te < 0.004 and re < 0.3, (te, re)  # at 256 px; the 512 px benchmark ends closer (README)
    assert ("tracked", "homography" if name == "sift_pbvs" else "ibvs") in {(p, m) for p, m, _ in seen}
