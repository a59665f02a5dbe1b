"""The two producers without Ray: labels, determinism, coarse correspondences, DAgger rounds and weights."""

from __future__ import annotations

import itertools
from collections.abc import Container
from pathlib import Path

import numpy as np
import pytest

from configs import load_config
from datagen.beta import beta_for_round
from datagen.dagger import DaggerProducer
from datagen.hemisphere import HemisphereProducer
from policy import build_policy, save_checkpoint
from policy.checkpoint import latest_checkpoint
from policy.control import normalize_velocity, pbvs
from shards import DatasetReader
from sim.geometry import relative_pose


def _check_labels(arrays: dict[str, np.ndarray]) -> None:
    for i in range(len(arrays["vel"])):
        dTc = relative_pose(arrays["wTd"][i], arrays["wTc"][i])
        expected = normalize_velocity(pbvs(dTc), float(arrays["scene_scale"][i]))
        np.testing.assert_allclose(arrays["vel"][i], expected, rtol=1e-5, atol=1e-5)


@pytest.mark.integration
def test_hemisphere_shards_hold_pbvs_labels_and_correspondences(small_cfg) -> None:
    cfg = small_cfg("datagen.hemisphere.samples=24", "datagen.hemisphere.shard_samples=10")
    p = HemisphereProducer(cfg)
    p.run()
    reader = DatasetReader(cfg.datagen.root)
    assert [s.id for s in reader.shards] == [f"hemisphere-r0000-00000{i}" for i in range(3)]
    assert [s.n for s in reader.shards] == [10, 10, 4]
    for shard in reader.shards:
        a = reader.read(shard)
        _check_labels(a)
        np.testing.assert_allclose(a["scene_scale"], np.linalg.norm(a["wTd"][:, :3, 3], axis=1), rtol=1e-6)
        assert np.all(a["policy_version"] == -1) and np.all(a["beta"] == 1.0)
        assert a["des_rgb"].shape[0] < a["cur_rgb"].shape[0]  # desired images are shared by several samples
        assert a["coarse_match"].shape == (len(a["vel"]), 4, 4, 2) and a["coarse_valid"].mean() > 0.2
        valid = a["coarse_valid"]
        assert (~valid).any() and np.all(a["coarse_match"][~valid] == 0.0) and np.any(a["coarse_match"][valid] != 0.0)
        # One episode per desired image, numbered within the shard; every hemisphere pair is a first step.
        index = int(shard.id.rsplit("-", 1)[1])
        np.testing.assert_array_equal(a["episode"], index * 100_000 + a["des_index"])
        assert np.all(a["step"] == 0)
    p.close()


@pytest.mark.integration
def test_hemisphere_producers_share_the_shards_by_offset_and_stride(small_cfg) -> None:
    cfg = small_cfg("datagen.hemisphere.samples=50", "datagen.hemisphere.shard_samples=10")
    owned = []
    for offset in range(3):
        p = HemisphereProducer(cfg, offset=offset, stride=3)
        owned.append(p.indices())
        p.close()
    assert owned == [[0, 3], [1, 4], [2]]


@pytest.mark.integration
def test_hemisphere_shards_are_a_pure_function_of_the_seed(small_cfg) -> None:
    cfg = small_cfg("datagen.hemisphere.samples=16", "datagen.hemisphere.shard_samples=8")
    p = HemisphereProducer(cfg)
    a, seeds_a = p.make_shard(0)
    b, seeds_b = p.make_shard(0)
    c, _ = p.make_shard(1)
    assert seeds_a == seeds_b
    for name, arr in a.arrays().items():
        np.testing.assert_array_equal(arr, b.arrays()[name], err_msg=name)
    assert not np.array_equal(a.arrays()["wTc"], c.arrays()["wTc"])
    p.close()


@pytest.mark.integration
def test_rerun_fills_only_missing_shards(small_cfg) -> None:
    cfg = small_cfg("datagen.hemisphere.samples=20", "datagen.hemisphere.shard_samples=10")
    first = HemisphereProducer(cfg)
    first.run()
    shard = Path(cfg.datagen.root) / "shards" / "hemisphere-r0000-000001.zarr"
    stamp = shard.stat().st_mtime_ns
    bigger = small_cfg("datagen.hemisphere.samples=30", "datagen.hemisphere.shard_samples=10")
    second = HemisphereProducer(bigger)
    stats = second.run()
    assert stats["skipped"] == 2 and stats["shards"] == 1
    assert shard.stat().st_mtime_ns == stamp
    assert len(DatasetReader(cfg.datagen.root).shards) == 3
    first.close()
    second.close()


@pytest.mark.integration
@pytest.mark.parametrize(
    ("override", "refused"),
    [
        ("run.seed=7", "run.seed: 0 -> 7"),
        ("sim.poses.desired.radius=[0.6,0.9]", "sim.poses.desired.radius"),
        ("datagen.hemisphere.near_goal=0.5", "datagen.hemisphere.near_goal: 0.0 -> 0.5"),
        ("datagen.dagger.episode_steps=7", "datagen.dagger.episode_steps"),
        ("datagen.hemisphere.samples=40", None),  # more of the same data
        ("train.steps=5", None),
        ("datagen.hemisphere.actors=3", None),
    ],
)
def test_a_rerun_with_another_config_is_refused_naming_the_keys(override: str, refused, small_cfg) -> None:
    from datagen.producer import open_writer
    from shards import ShardError

    base = ["datagen.hemisphere.samples=10", "datagen.hemisphere.shard_samples=10"]
    cfg = small_cfg(*base)
    HemisphereProducer(cfg).run()
    root = Path(cfg.datagen.root)
    record = (root / "config.yaml").read_text()
    info = (root / "info.json").read_text()
    changed = small_cfg(*base, override)
    if refused is None:
        open_writer(changed)
    else:
        with pytest.raises(ShardError, match=rf"made with another config.*{refused}.*datagen.append=true"):
            open_writer(changed)
        with pytest.warns(RuntimeWarning, match=rf"appending shards made with another config.*{refused}"):
            open_writer(small_cfg(*base, override, "datagen.append=true"))
    # The root's record is the config its first data was made with, whatever came later.
    assert (root / "config.yaml").read_text() == record and (root / "info.json").read_text() == info
    side = DatasetReader(root).shards[0].sidecar
    assert side["config"]["run"]["seed"] == 0 and side["config"]["datagen"]["hemisphere"]["samples"] == 10


@pytest.mark.unit
def test_beta_schedules() -> None:
    b = load_config("smoke").datagen.dagger.beta
    assert beta_for_round(b, 0) == 1.0
    linear = [beta_for_round(b, r) for r in range(1, 15)]
    assert all(x >= y for x, y in itertools.pairwise(linear)) and linear[-1] == pytest.approx(b.min)
    assert beta_for_round(b.model_copy(update={"kind": "exponential", "decay": 0.5, "min": 0.0}), 3) == 0.125
    assert beta_for_round(b.model_copy(update={"kind": "constant", "value": 0.4}), 7) == 0.4
    with pytest.raises(ValueError):
        beta_for_round(b, -1)


@pytest.mark.integration
def test_dagger_starts_as_the_expert_then_uses_pushed_weights(small_cfg) -> None:
    cfg = small_cfg("datagen.dagger.samples=20", "datagen.dagger.shard_samples=10",
               "datagen.dagger.episode_steps=10", "datagen.dagger.beta.kind=constant", "datagen.dagger.beta.value=0.0",
               "datagen.dagger.beta.min=0.0")  # fmt: skip
    p = DaggerProducer(cfg)
    assert p.load_newest_checkpoint() == -1
    p.run()
    policy = build_policy(cfg.policy)
    p.set_weights({k: v.numpy() for k, v in policy.state_dict().items()}, version=5)
    p.cfg = cfg.model_copy(
        update={
            "datagen": cfg.datagen.model_copy(update={"dagger": cfg.datagen.dagger.model_copy(update={"samples": 40})})
        }
    )
    p.run()
    reader = DatasetReader(cfg.datagen.root)
    by_round = {}
    for s in reader.shards:
        a = reader.read(s)
        _check_labels(a)  # the stored label is always the expert's
        by_round.setdefault(s.key.round, []).append((a, s.sidecar))
    assert sorted(by_round) == [0, 1]
    for a, _ in by_round[0]:
        assert np.all(a["policy_version"] == -1) and np.all(a["beta"] == 1.0)
    for a, side in by_round[1]:
        assert np.all(a["policy_version"] == 5) and np.all(a["beta"] == 0.0)
        assert side["policy_steps"] == side["steps"] > 0  # beta 0: the policy drove every step
    for a, _ in by_round[0] + by_round[1]:
        # Ground-truth correspondences, as in hemisphere shards: the matching loss sees closed-loop views too.
        assert a["coarse_match"].shape == (len(a["vel"]), 4, 4, 2) and a["coarse_valid"].mean() > 0.2
    p.close()


@pytest.mark.integration
def test_near_goal_share_of_hemisphere_pairs(small_cfg) -> None:
    cfg = small_cfg("datagen.hemisphere.samples=40", "datagen.hemisphere.shard_samples=40",
               "datagen.hemisphere.near_goal=0.5")  # fmt: skip
    p = HemisphereProducer(cfg)
    buf, _ = p.make_shard(0)
    p.close()
    a = buf.arrays()
    _check_labels(a)
    norms = np.linalg.norm(a["vel"], axis=1)
    # The hemisphere distributions never come below |v| ~ 0.3; the near-goal draws do (down to ~0.001).
    assert 0.25 < np.mean(norms < 0.3) < 0.75 and norms.min() < 0.05


@pytest.mark.integration
def test_orbit_share_of_near_goal_pairs(small_cfg) -> None:
    cfg = small_cfg("datagen.hemisphere.samples=30", "datagen.hemisphere.shard_samples=30",
               "datagen.hemisphere.near_goal=1.0", "datagen.hemisphere.near_goal_orbit=1.0")  # fmt: skip
    p = HemisphereProducer(cfg)
    buf, _ = p.make_shard(0)
    p.close()
    a = buf.arrays()
    _check_labels(a)
    for wTc, wTd, d in zip(a["wTc"], a["wTd"], a["scene_scale"], strict=True):
        # Every current camera looks at the point d* ahead of its desired camera, from distance d*.
        p_c = np.linalg.inv(wTc) @ np.append(wTd[:3, 3] + d * wTd[:3, 2], 1.0)
        assert p_c[:2] == pytest.approx([0.0, 0.0], abs=1e-6) and p_c[2] == pytest.approx(d, rel=1e-6)


@pytest.mark.integration
def test_dagger_loads_the_newest_checkpoint_of_the_run(small_cfg) -> None:
    cfg = small_cfg()
    ckpts = Path(cfg.datagen.checkpoints)
    policy = build_policy(cfg.policy)
    save_checkpoint(policy, ckpts / "step_000010", version=2)
    save_checkpoint(policy, ckpts / "step_000020", version=9)
    (ckpts / "broken").mkdir()
    (ckpts / "broken" / "policy.json").write_text("{not json")
    assert latest_checkpoint(ckpts) == ckpts / "step_000020"
    p = DaggerProducer(cfg)
    assert p.load_newest_checkpoint() == 9 and p.round == 1
    p.close()


@pytest.mark.integration
def test_isaac_dagger_polls_the_checkpoints_instead_of_taking_pushes(small_cfg) -> None:
    from datagen.dagger import weights_by_push

    assert weights_by_push(small_cfg()) and not weights_by_push(small_cfg("sim.backend=isaac"))
    cfg = small_cfg()
    ckpts = Path(cfg.datagen.checkpoints)
    policy = build_policy(cfg.policy)
    p = DaggerProducer(cfg, poll_seconds=0.0)  # what an Isaac actor does, every POLL_SECONDS
    p._swap_pending()
    assert p.version == -1 and p.round == 0  # nothing to load yet
    save_checkpoint(policy, ckpts / "step_000010", version=10)
    p._swap_pending()
    assert (p.version, p.round) == (10, 1)
    p._swap_pending()
    assert p.round == 1  # the same checkpoint is not loaded twice
    save_checkpoint(policy, ckpts / "step_000030", version=30)
    p._swap_pending()
    assert (p.version, p.round) == (30, 2)
    p.close()
    pushed = DaggerProducer(cfg)  # the MuJoCo default: weights arrive by set_weights, no polling
    assert pushed.poll_seconds is None
    pushed._swap_pending()
    assert pushed.version == -1
    pushed.close()


@pytest.mark.unit
def test_producers_ask_ray_for_their_resources_and_isaac_dagger_is_synchronous(
    monkeypatch: pytest.MonkeyPatch, small_cfg
) -> None:
    from datagen import runner

    made = []

    class Fake:
        def __init__(self, kind: str) -> None:
            self.kind = kind

        def options(self, **opts):  # type: ignore[no-untyped-def]
            made.append((self.kind, opts))
            return self

        def remote(self, *args):  # type: ignore[no-untyped-def]
            return self.kind

    monkeypatch.setattr(runner, "remote_classes", lambda: (Fake("hemisphere"), Fake("dagger")))
    extra = ["datagen.hemisphere.resources={rtx: 1}", "datagen.dagger.resources={rtx: 0.5}"]
    runner.start_producers(small_cfg(*extra))
    runner.start_producers(small_cfg(*extra, "sim.backend=isaac"))
    hemi = [o for k, o in made if k == "hemisphere"]
    dagger = [o for k, o in made if k == "dagger"]
    assert all(o["resources"] == {"rtx": 1.0} for o in hemi)
    assert [o["resources"] for o in dagger] == [{"rtx": 0.5}] * 2
    assert [o["max_concurrency"] for o in dagger] == [2, 1]  # MuJoCo takes pushes while running; Isaac cannot


class _PatternRenderer:
    """The same informative image from every pose, so a shard's numbers come from its seed streams alone."""

    def __init__(self, width: int, height: int, blank: Container[int] = ()) -> None:
        self.blank, self.calls = blank, 0  # render calls (from 1) that come out constant
        yy, xx = np.mgrid[:height, :width]
        self.rgb = np.stack([3 * xx % 256, 3 * yy % 256, (xx + yy) % 256], axis=-1).astype(np.uint8)
        self.depth = np.full((height, width), 2.0, np.float32)
        self.scenes: list = []

    def load(self, scene) -> None:  # type: ignore[no-untyped-def]
        self.scenes.append(scene)

    def render(self, K, wTc):  # type: ignore[no-untyped-def]
        from sim.render import Frame

        self.calls += 1
        rgb = np.zeros_like(self.rgb) if self.calls in self.blank else self.rgb.copy()
        return Frame(rgb, self.depth.copy(), np.asarray(K, np.float64), np.asarray(wTc, np.float64))

    def close(self) -> None:
        pass


def _stubbed(cfg, renderer: _PatternRenderer) -> HemisphereProducer:  # type: ignore[no-untyped-def]
    """A hemisphere producer of `cfg` that renders with `renderer`."""
    p = HemisphereProducer(cfg)
    p.renderer.close()
    p.renderer = renderer
    return p


@pytest.mark.integration
def test_hemisphere_scenes_draw_from_the_numbers_they_always_did(small_cfg) -> None:  # type: ignore[no-untyped-def]
    # Shards on disk are a pure function of the run seed: naming the streams must not move a single draw. The
    # expectations below use the old literal numbers (scene 0, poses 1, effects 2; hemisphere is producer 0).
    from policy.matching import gt_coarse_match
    from sim.effects import apply_effects
    from sim.poses import sample_initial, sample_pose
    from sim.scene_sampler import SceneSampler
    from sim.seeds import derive_seed

    cfg = small_cfg("run.seed=11", "datagen.hemisphere.samples=18", "datagen.hemisphere.shard_samples=6",
               "sim.scene.effects.prob=1.0")  # fmt: skip
    stub = _PatternRenderer(cfg.sim.camera.width, cfg.sim.camera.height)
    p = _stubbed(cfg, stub)
    buf, seeds = p.make_shard(2)
    a = buf.arrays()
    first = seeds[0]
    assert seeds == [derive_seed(11, 0, 0, 2, k) for k in range(len(seeds))]
    expected = SceneSampler(cfg.sim.scene, cfg.sim.assets).sample(np.random.default_rng([first, 0]), seed=first)
    got = stub.scenes[0]
    assert (got.effects, got.lights, got.ambient) == (expected.effects, expected.lights, expected.ambient)
    assert not got.effects.identity  # so the effects stream is really drawn from below
    for o, e in zip(got.objects, expected.objects, strict=True):
        np.testing.assert_array_equal(o.pose, e.pose)
    poses = np.random.default_rng([first, 1])
    wTd = sample_pose(poses, cfg.sim.poses.desired)
    np.testing.assert_array_equal(a["wTd"][0], wTd)
    # near_goal is 0: the current poses draw no coin, only the hemisphere's initial pose.
    np.testing.assert_array_equal(a["wTc"][0], sample_initial(poses, cfg.sim.poses, wTd))
    np.testing.assert_array_equal(a["wTc"][1], sample_initial(poses, cfg.sim.poses, wTd))
    # The correspondences are checked for occlusion against the desired image's depth.
    h = cfg.datagen.hemisphere
    for i in range(2):
        match, valid = gt_coarse_match(stub.depth, a["K"][i], relative_pose(wTd, a["wTc"][i]), h.coarse_patch,
                                       depth_d=stub.depth)  # fmt: skip
        unchecked = gt_coarse_match(stub.depth, a["K"][i], relative_pose(wTd, a["wTc"][i]), h.coarse_patch)[1]
        assert (unchecked & ~valid).any()  # so the check hides something here
        np.testing.assert_array_equal(a["coarse_valid"][i], valid)
        np.testing.assert_array_equal(a["coarse_match"][i][valid], match[valid].astype(np.float16))  # stored as f16
    np.testing.assert_array_equal(
        a["des_rgb"][0], apply_effects(stub.rgb, got.effects, np.random.default_rng([first, 2]))
    )
    p.close()


@pytest.mark.integration
def test_hemisphere_skips_constant_renders_and_goes_on_with_the_same_desired_image(small_cfg) -> None:  # type: ignore[no-untyped-def]
    cfg = small_cfg("datagen.hemisphere.samples=12", "datagen.hemisphere.shard_samples=12",
                    "datagen.hemisphere.desired_per_scene=5", "sim.scene.effects.prob=0")  # fmt: skip
    assert cfg.datagen.hemisphere.currents_per_desired == 5
    # Render calls: 1 the first desired image (constant: skipped), 2 the next one, 3-7 its currents (4 constant),
    # 8 the third desired image and 9-13 its currents, 14 the fourth and 15-17 the last three samples.
    stub = _PatternRenderer(cfg.sim.camera.width, cfg.sim.camera.height, blank={1, 4})
    buf, seeds = _stubbed(cfg, stub).make_shard(0)
    a = buf.arrays()
    assert len(seeds) == 1 and len(stub.scenes) == 1  # one scene: a constant desired image does not end it
    # Nor does a constant current end its desired image's samples.
    np.testing.assert_array_equal(a["des_index"], [0] * 4 + [1] * 5 + [2] * 3)
    assert stub.calls == 17 and len(a["des_rgb"]) == 3  # a full shard renders no further desired image
    np.testing.assert_array_equal(a["episode"], a["des_index"])  # one episode per desired image


@pytest.mark.integration
def test_hemisphere_gives_up_after_20_plus_4n_scenes_of_constant_renders(small_cfg) -> None:  # type: ignore[no-untyped-def]
    cfg = small_cfg("datagen.hemisphere.samples=3", "datagen.hemisphere.shard_samples=3", "sim.scene.effects.prob=0")
    stub = _PatternRenderer(cfg.sim.camera.width, cfg.sim.camera.height, blank=range(1, 10**6))
    with pytest.raises(RuntimeError, match="renders keep coming out constant"):
        _stubbed(cfg, stub).make_shard(0)
    assert len(stub.scenes) == 20 + 4 * 3 + 1


@pytest.mark.integration
def test_hemisphere_shards_without_coarse_matches(small_cfg) -> None:  # type: ignore[no-untyped-def]
    cfg = small_cfg("datagen.hemisphere.samples=2", "datagen.hemisphere.shard_samples=2",
                    "datagen.hemisphere.coarse_match=false")  # fmt: skip
    buf, _ = _stubbed(cfg, _PatternRenderer(cfg.sim.camera.width, cfg.sim.camera.height)).make_shard(0)
    a = buf.arrays()
    assert len(a["vel"]) == 2 and "coarse_match" not in a and "coarse_valid" not in a


@pytest.mark.integration
@pytest.mark.parametrize("orbit", [0.0, 1.0])
def test_near_goal_poses_draw_one_coin_each_and_the_orbit_coin_only_when_it_can_win(orbit: float, small_cfg) -> None:  # type: ignore[no-untyped-def]
    from sim.poses import sample_near, sample_orbit, sample_pose

    cfg = small_cfg("datagen.hemisphere.samples=3", "datagen.hemisphere.shard_samples=3",
                    "datagen.hemisphere.near_goal=1.0", f"datagen.hemisphere.near_goal_orbit={orbit}")  # fmt: skip
    h = cfg.datagen.hemisphere
    p = _stubbed(cfg, _PatternRenderer(cfg.sim.camera.width, cfg.sim.camera.height))
    buf, seeds = p.make_shard(0)
    p.close()
    a = buf.arrays()
    poses = np.random.default_rng([seeds[0], 1])
    wTd = sample_pose(poses, cfg.sim.poses.desired)
    for i in range(min(3, h.currents_per_desired)):
        assert poses.random() < 1.0  # the near-goal coin
        if orbit:
            assert poses.random() < 1.0  # the orbit coin
            expected = sample_orbit(poses, wTd, h.near_goal_rotation_deg)
        else:
            expected = sample_near(poses, wTd, h.near_goal_translation, h.near_goal_rotation_deg)
        np.testing.assert_array_equal(a["wTc"][i], expected, err_msg=f"current {i}")


@pytest.mark.integration
def test_dagger_draws_its_coin_from_a_stream_of_its_own(small_cfg, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    # It used to draw from the lights' stream: with lighting_change on, the coin replayed the relighting draws.
    from datagen import dagger
    from sim.seeds import Stream, rng_for

    used = []

    def spy(seed: int, stream: Stream) -> np.random.Generator:
        used.append(stream)
        return rng_for(seed, stream)

    monkeypatch.setattr(dagger, "rng_for", spy)
    cfg = small_cfg("run.seed=5", "datagen.dagger.samples=6", "datagen.dagger.shard_samples=6",
               "datagen.dagger.episode_steps=3", "sim.env.lighting_change=true")  # fmt: skip
    p = DaggerProducer(cfg)
    p.run()
    p.close()
    assert used and set(used) == {Stream.DAGGER_COIN}


@pytest.mark.integration
def test_shard_sidecars_record_the_run_seed_and_every_episode_seed(small_cfg) -> None:  # type: ignore[no-untyped-def]
    from sim.seeds import derive_seed

    cfg = small_cfg("run.seed=3", "datagen.hemisphere.samples=4", "datagen.hemisphere.shard_samples=4",
               "datagen.dagger.samples=4", "datagen.dagger.shard_samples=4",
               "datagen.dagger.episode_steps=2")  # fmt: skip
    for producer in (HemisphereProducer(cfg), DaggerProducer(cfg)):
        producer.run()
        producer.close()
    reader = DatasetReader(cfg.datagen.root)
    assert sorted(s.key.producer for s in reader.shards) == ["dagger", "hemisphere"]
    for shard in reader.shards:
        side = shard.sidecar
        assert side["config_seed"] == 3
        base = (3, {"hemisphere": 0, "dagger": 1}[shard.key.producer], shard.key.round, shard.key.index)
        # Drawn in order from (run seed, producer, round, index, k): the sidecar alone says how to remake the shard.
        assert side["scene_seeds"] == [derive_seed(*base, k) for k in range(len(side["scene_seeds"]))]
        assert set(reader.read(shard, names=["scene_seed"])["scene_seed"].tolist()) <= set(side["scene_seeds"])
