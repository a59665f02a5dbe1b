"""ServoEnv: determinism, the unit world, stepping, termination, and the oracle servoing home."""

from __future__ import annotations

import numpy as np
import pytest

from configs import load_config
from configs.schema import SimConfig
from policy.control import pbvs
from sim import ServoEnv
from sim.geometry import exp_se3
from tests.fixtures.factories import SIZE, small_config

pytestmark = pytest.mark.integration


def _sim_cfg(*overrides: str) -> SimConfig:
    """The small config's sim section: 64 px images keep these tests fast; the camera contract covers real sizes."""
    return small_config(*overrides).sim


@pytest.fixture(scope="module")
def env() -> ServoEnv:
    e = ServoEnv(_sim_cfg())
    yield e
    e.close()


def test_no_argument_env_uses_the_smoke_defaults_and_the_canonical_camera() -> None:
    with ServoEnv() as e:
        assert e.cfg == load_config("smoke").sim
        np.testing.assert_array_equal(e.camera.K, [[256, 0, 128], [0, 256, 128], [0, 0, 1]])
        frame = e.reset(0)
        assert frame.rgb.shape == (256, 256, 3) and frame.rgb.dtype == np.uint8
        assert frame.depth.shape == (256, 256) and frame.depth.dtype == np.float32


def test_same_seed_gives_identical_frames(env: ServoEnv) -> None:
    vel = np.array([0.05, 0.0, 0.02, 0.0, 0.1, 0.2])
    runs = []
    for _ in range(2):
        frames = [env.reset(3), env.desired_frame()]
        frames += [env.step(vel) for _ in range(3)]
        runs.append(frames)
    for a, b in zip(*runs, strict=True):
        assert a.rgb.tobytes() == b.rgb.tobytes() and a.depth.tobytes() == b.depth.tobytes()
        np.testing.assert_array_equal(a.wTc, b.wTc)


def test_different_seeds_give_different_scenes(env: ServoEnv) -> None:
    images, counts = [], set()
    for seed in range(6):
        env.reset(seed)
        images.append(env.desired_frame().rgb)
        counts.add(len(env.scene.objects))
    for i in range(len(images)):
        for j in range(i):
            assert np.abs(images[i].astype(int) - images[j]).mean() > 2.0
    assert len(counts) > 1


def test_desired_camera_sits_at_the_scene_scale() -> None:
    for d in (1.0, 0.5):
        with ServoEnv(_sim_cfg(f"sim.env.scene_scale={d}")) as e:
            e.reset(5)
            assert np.linalg.norm(e.wTd[:3, 3]) == pytest.approx(d)
            assert e.scene_scale == d
            # The desired view looks at the scene: the centre pixel hits something near d* away.
            assert e.desired_frame().depth[SIZE // 2, SIZE // 2] == pytest.approx(d, rel=0.35)


def test_zooming_the_world_leaves_the_desired_image_unchanged() -> None:
    with ServoEnv(_sim_cfg("sim.env.scene_scale=1.0")) as a, ServoEnv(_sim_cfg("sim.env.scene_scale=2.5")) as b:
        a.reset(8)
        b.reset(8)
        da, db = a.desired_frame(), b.desired_frame()
        assert np.abs(da.rgb.astype(int) - db.rgb).mean() < 2.0
        finite = np.isfinite(da.depth) & np.isfinite(db.depth)
        np.testing.assert_allclose(db.depth[finite], 2.5 * da.depth[finite], rtol=1e-3)


def test_step_integrates_the_twist_in_the_camera_frame(env: ServoEnv) -> None:
    env.reset(1)
    before = env.wTc
    vel = np.array([0.1, -0.05, 0.02, 0.05, -0.1, 0.3])
    frame = env.step(vel, 0.05)
    np.testing.assert_allclose(env.wTc, before @ exp_se3(vel, 0.05), atol=1e-12)
    np.testing.assert_array_equal(frame.wTc, env.wTc)
    np.testing.assert_allclose(env.wTd @ env.dTc, env.wTc, atol=1e-12)
    assert env.steps == 1


def test_oracle_pbvs_brings_the_camera_home(env: ServoEnv) -> None:
    env.reset(2)
    te0, re0 = env.pose_error()
    for _ in range(250):
        env.step(2.0 * pbvs(env.dTc))  # CNS executes 2x the velocity
        if env.done:
            break
    te, re = env.pose_error()
    assert not env.terminated, env.reason
    assert te < 1e-3 * te0 + 1e-6 and re < 1e-3 * re0 + 1e-6
    # At the goal the current image is the desired image.
    assert np.abs(env.observe().rgb.astype(int) - env.desired_frame().rgb).mean() < 1.0


def _world_velocity(env: ServoEnv, v_world: np.ndarray) -> np.ndarray:
    return np.concatenate([env.wTc[:3, :3].T @ v_world, np.zeros(3)])


@pytest.mark.parametrize(
    ("motion", "reason"),
    [
        (lambda e: np.array([0.0, 0.0, 0.0, 2.0, 0.0, 0.0]), "scene centre out of view"),
        (
            lambda e: np.array([0.0, 0.0, 0.0, 0.0, 0.0, 0.0]) + _world_velocity(e, [0, 0, -e.wTc[2, 3] - 0.05]),
            "below ground",
        ),
        (lambda e: np.array([0.0, 0.0, -5.0, 0.0, 0.0, 0.0]), "too far from the scene"),
    ],
)
def test_abnormal_poses_end_the_episode(env: ServoEnv, motion, reason: str) -> None:
    env.reset(4)
    for _ in range(200):
        env.step(motion(env), 1.0 if reason == "below ground" else 0.05)
        if env.done:
            break
    assert env.terminated and env.reason == reason
    with pytest.raises(RuntimeError, match="episode has ended"):
        env.step(np.zeros(6))


def test_step_limit_truncates() -> None:
    with ServoEnv(_sim_cfg("sim.env.max_steps=3")) as e:
        e.reset(0)
        for _ in range(3):
            e.step(np.zeros(6))
        assert e.truncated and not e.terminated and e.done


def test_env_rejects_bad_use() -> None:
    with ServoEnv(_sim_cfg()) as e:
        with pytest.raises(RuntimeError, match="reset"):
            e.observe()
        e.reset(0)
        with pytest.raises(ValueError, match="vel"):
            e.step(np.zeros(5))
        with pytest.raises(ValueError, match="dt"):
            e.step(np.zeros(6), dt=0.0)
        with pytest.raises(ValueError, match="seed"):
            e.reset(-1)


def test_lighting_change_relights_only_the_desired_image(env: ServoEnv) -> None:
    with ServoEnv(_sim_cfg("sim.env.lighting_change=true", "sim.scene.effects.prob=0")) as relit:
        env_plain = ServoEnv(_sim_cfg("sim.scene.effects.prob=0"))
        try:
            for seed in (0, 1, 2):
                relit.reset(seed)
                env_plain.reset(seed)
                np.testing.assert_array_equal(relit.wTd, env_plain.wTd)
                # The current image keeps the scene's own lights; only the goal image is relit.
                assert relit.observe().rgb.tobytes() == env_plain.observe().rgb.tobytes()
                d_relit, d_plain = relit.desired_frame(), env_plain.desired_frame()
                np.testing.assert_array_equal(d_relit.depth, d_plain.depth)
                assert np.abs(d_relit.rgb.astype(int) - d_plain.rgb).mean() > 3.0
        finally:
            env_plain.close()
