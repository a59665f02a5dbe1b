"""The CNS pose sampler on the upper hemisphere."""

from __future__ import annotations

import numpy as np
import pytest

from configs import load_config
from sim.geometry import look_at, pose_error
from sim.poses import hemisphere_pose, sample_near, sample_orbit, sample_pose, sample_pose_pair, scene_scale

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def poses_cfg():
    return load_config("smoke").sim.poses


def _stats(cfg, n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.array([pose_error(*sample_pose_pair(rng, cfg)) for _ in range(n)])


@pytest.mark.slow
def test_benchmark_distribution_reproduces_the_cns_statistics(poses_cfg) -> None:
    # CNS's image benchmark draws both poses from the desired distribution; its scenes show 0.27 +- 0.10 m and
    # 91 +- 51 deg (shared/notes/benchmark-protocol.md).
    e = _stats(poses_cfg.model_copy(update={"initial": poses_cfg.desired}), 4000)
    assert e[:, 0].mean() == pytest.approx(0.274, abs=0.01) and e[:, 0].std() == pytest.approx(0.104, abs=0.01)
    assert e[:, 1].mean() == pytest.approx(91.3, abs=3.0) and e[:, 1].std() == pytest.approx(51.4, abs=3.0)


@pytest.mark.slow
def test_training_distribution_statistics(poses_cfg) -> None:
    # Measured with 20k pairs of the smoke config: 0.512 +- 0.184 m, 97.7 +- 46.3 deg.
    e = _stats(poses_cfg, 4000, seed=1)
    assert e[:, 0].mean() == pytest.approx(0.512, abs=0.015)
    assert e[:, 1].mean() == pytest.approx(97.7, abs=3.0)


def test_sampled_poses_respect_the_ranges(poses_cfg) -> None:
    rng = np.random.default_rng(3)
    d = poses_cfg.desired
    tilt_max = np.hypot(d.extra_rotation_deg.x, d.extra_rotation_deg.y) + 1e-9
    for _ in range(500):
        T = sample_pose(rng, d)
        p = T[:3, 3]
        r = np.linalg.norm(p)
        assert d.radius[0] <= r <= d.radius[1]
        assert d.elevation_deg[0] - 1e-9 <= np.degrees(np.arcsin(p[2] / r)) <= d.elevation_deg[1] + 1e-9
        # The optical axis points at the scene centre up to the extra x/y tilt.
        tilt = np.degrees(np.arccos(np.clip(T[:3, 2] @ (-p / r), -1.0, 1.0)))
        assert tilt <= tilt_max
        assert scene_scale(T) == pytest.approx(r)


def test_elevation_is_uniform_in_sine(poses_cfg) -> None:
    rng = np.random.default_rng(4)
    init = poses_cfg.initial
    P = np.array([sample_pose(rng, init)[:3, 3] for _ in range(6000)])
    s = P[:, 2] / np.linalg.norm(P, axis=1)
    lo, hi = np.sin(np.radians(init.elevation_deg))
    hist, _ = np.histogram(s, bins=6, range=(lo, hi))
    assert hist.min() > 0.85 * hist.mean() and hist.max() < 1.15 * hist.mean()


def test_hemisphere_pose_equals_look_at_away_from_the_pole() -> None:
    T = hemisphere_pose(0.7, np.radians(40.0), np.radians(35.0))
    np.testing.assert_allclose(T, look_at(T[:3, 3], [0.0, 0.0, 0.0]), atol=1e-12)


def test_hemisphere_pose_is_defined_at_the_pole() -> None:
    T = hemisphere_pose(1.0, np.radians(90.0), np.radians(90.0))
    np.testing.assert_allclose(T[:3, 3], [0.0, 0.0, 1.0], atol=1e-12)
    np.testing.assert_allclose(T[:3, 2], [0.0, 0.0, -1.0], atol=1e-12)
    np.testing.assert_allclose(T[:3, 1], [0.0, 1.0, 0.0], atol=1e-12)  # image y down the meridian of azimuth 90


def test_same_seed_same_pair_and_different_seeds_differ(poses_cfg) -> None:
    a = sample_pose_pair(np.random.default_rng(7), poses_cfg)
    b = sample_pose_pair(np.random.default_rng(7), poses_cfg)
    c = sample_pose_pair(np.random.default_rng(8), poses_cfg)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.allclose(a[1], c[1])


def test_pairs_at_the_goal_are_rejected(poses_cfg) -> None:
    point = poses_cfg.desired.model_copy(
        update={
            "radius": (0.7, 0.7),
            "elevation_deg": (90.0, 90.0),
            "azimuth_deg": (0.0, 0.0),
            "extra_rotation_deg": poses_cfg.desired.extra_rotation_deg.model_copy(update={"z": 0, "y": 0, "x": 0}),
        }
    )
    cfg = poses_cfg.model_copy(update={"desired": point, "initial": point, "max_tries": 5})
    with pytest.raises(RuntimeError, match=r"widen sim\.poses\.initial"):
        sample_pose_pair(np.random.default_rng(0), cfg)
    te, re = pose_error(*sample_pose_pair(np.random.default_rng(0), poses_cfg))
    assert te >= poses_cfg.min_translation or re >= poses_cfg.min_rotation_deg


def test_near_goal_poses_are_log_uniform_down_to_sub_millimetre(poses_cfg) -> None:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(0)
    wTd = sample_pose(rng, poses_cfg.desired)
    d = scene_scale(wTd)
    te, re = np.array([pose_error(sample_near(rng, wTd, (1e-3, 0.3), (0.05, 20.0)), wTd) for _ in range(4000)]).T
    assert te.min() >= 1e-3 * d * 0.999 and te.max() <= 0.3 * d * 1.001
    assert re.min() >= 0.05 * 0.999 and re.max() <= 20.0 * 1.001
    # Log-uniform: each decade of the offset holds its share (0.001-0.01 is ln 10 / ln 300 = 40 % of the draws).
    share = np.mean(te < 0.01 * d)
    assert 0.36 < share < 0.44
    with pytest.raises(ValueError, match="near_goal_translation"):
        sample_near(rng, wTd, (0.0, 0.3), (0.05, 20.0))


def test_orbit_poses_keep_the_point_ahead_on_the_optical_axis(poses_cfg) -> None:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(1)
    wTd = sample_pose(rng, poses_cfg.desired)
    d = scene_scale(wTd)
    c = wTd[:3, 3] + d * wTd[:3, 2]
    for _ in range(200):
        wTc = sample_orbit(rng, wTd, (0.5, 20.0))
        te, re = pose_error(wTc, wTd)
        assert 0.5 * 0.999 <= re <= 20.0 * 1.001
        # A chord of the orbit: TE = 2 d sin(RE / 2), so TE/RE is about d* per radian.
        assert te == pytest.approx(2 * d * np.sin(np.radians(re) / 2), rel=1e-6)
        # The camera still looks straight at c, from the same distance, so c projects to the principal point.
        p = np.linalg.inv(wTc) @ np.append(c, 1.0)
        assert p[:2] == pytest.approx([0.0, 0.0], abs=1e-9)
        assert p[2] == pytest.approx(d, rel=1e-9)
    with pytest.raises(ValueError, match="near_goal_rotation_deg"):
        sample_orbit(rng, wTd, (0.0, 20.0))
