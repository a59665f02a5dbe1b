"""DAgger's rollout and bookkeeping, on the real ServoEnv with a stand-in renderer (no MuJoCo): what the camera is
driven by, which frames a shard keeps, what its sidecar says, how many samples each round and each resumed run
writes, and which shard indices each actor owns.

The stand-in renders a ground plane (z = 0) seen from the camera: a depth that follows the pose, with a step in it so
that some ground-truth correspondences are occluded, and an image that changes with the pose. Chosen renders can come
out blank (one colour), as a broken renderer's would.
"""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace
from typing import Any, ClassVar

import numpy as np
import pytest
import torch

from datagen import dagger
from datagen.dagger import DaggerProducer
from policy.control import denormalize_velocity, executed_velocity, normalize_velocity, pbvs
from policy.matching import gt_coarse_match
from shards import DatasetReader, ShardKey
from sim.env import ServoEnv
from sim.render import Frame

pytestmark = pytest.mark.unit

POLICY_UNIT = np.array([0.3, -0.2, 0.1, 0.05, -0.04, 0.03])  # what the stand-in policy always predicts (unit world)


class PlaneRenderer:
    """The ground plane z = 0 from any pose; `blank` holds (load number, render number after that load) pairs that
    come out one colour."""

    def __init__(self, width: int, height: int, blank: set[tuple[int, int]] | None = None) -> None:
        self.width, self.height = width, height
        self.blank = blank or set()
        self.loads, self.renders = -1, 0

    def load(self, scene: Any) -> None:
        self.loads += 1
        self.renders = 0

    def render(self, K: np.ndarray, wTc: np.ndarray) -> Frame:
        depth = plane_depth(np.asarray(K, float), np.asarray(wTc, float), self.width, self.height)
        shade = (np.nan_to_num(depth, posinf=0.0) * 40 + np.asarray(wTc)[:3, 3].sum() * 7) % 256
        rgb = np.repeat(shade[..., None], 3, axis=2).astype(np.uint8)
        rgb[0, 0] = (0, 0, 0)
        rgb[-1, -1] = (255, 255, 255)  # never one colour unless blanked
        if (self.loads, self.renders) in self.blank:
            rgb[:] = 90
        self.renders += 1
        return Frame(rgb, depth, np.asarray(K, np.float64), np.asarray(wTc, np.float64))

    def close(self) -> None:
        pass


def plane_depth(K: np.ndarray, wTc: np.ndarray, width: int, height: int) -> np.ndarray:
    """z-depth of the plane z = 0 through K from wTc, +inf where the ray misses it; nearer by 30 % in the left third
    of the image (a step, so that the desired view hides some current points)."""
    u, v = np.meshgrid(np.arange(width) + 0.5, np.arange(height) + 0.5)
    rays = np.linalg.solve(K, np.stack([u, v, np.ones_like(u)]).reshape(3, -1))  # camera rays with z = 1
    down = (wTc[:3, :3] @ rays)[2]
    with np.errstate(divide="ignore"):
        z = np.where(down < 0, -wTc[2, 3] / down, np.inf).reshape(height, width)
    z[:, : width // 3] *= 0.7
    return z.astype(np.float32)


def producer(cfg: Any, monkeypatch: pytest.MonkeyPatch, *, actor_index: int = 0, blank: set | None = None):  # type: ignore[no-untyped-def]
    """A DaggerProducer whose env renders with PlaneRenderer and records every velocity it is stepped with."""
    c = cfg.sim.camera
    renderer = PlaneRenderer(c.width, c.height, blank)
    monkeypatch.setattr(dagger, "ServoEnv", lambda sim: ServoEnv(sim, renderer=renderer))
    p = DaggerProducer(cfg, actor_index)
    p.stepped = []
    step = p.env.step

    def record(vel: np.ndarray) -> Frame:
        p.stepped.append((np.asarray(vel).copy(), p.env.dTc))
        return step(vel)

    p.env.step = record
    return p


class SpyServo:
    """Stands in for policy.servo.Servo: records how DAgger builds it; every step predicts POLICY_UNIT."""

    made: ClassVar[list[dict[str, Any]]] = []

    def __init__(self, policy: Any, desired: np.ndarray, K: np.ndarray, scale: float, **kwargs: Any) -> None:
        SpyServo.made.append({"K": K, "scale": scale, **kwargs})
        self.steps = 0

    def step(self, rgb: np.ndarray) -> SimpleNamespace:
        self.steps += 1
        return SimpleNamespace(ok=True, velocity_unit=POLICY_UNIT.copy())


class _Policy:
    def eval(self) -> _Policy:
        return self


def with_policy(p: DaggerProducer, monkeypatch: pytest.MonkeyPatch) -> None:
    import policy.servo

    SpyServo.made = []
    monkeypatch.setattr(policy.servo, "Servo", SpyServo)
    p._install(_Policy(), 3)


def finish(fn: Any, *args: Any, **kwargs: Any) -> Any:
    """Call fn in a thread and return its result; fail, instead of hanging the suite, if it never returns."""
    out: dict[str, Any] = {}
    t = threading.Thread(target=lambda: out.setdefault("r", fn(*args, **kwargs)), daemon=True)
    t.start()
    # Short joins, so that a test time limit (pytest-timeout's SIGALRM, which make mutation sets) can interrupt the
    # wait: one join(120) held three looping mutants for the full 120 s.
    deadline = time.monotonic() + 120
    while t.is_alive() and time.monotonic() < deadline:
        t.join(0.05)
    assert not t.is_alive(), f"{getattr(fn, '__name__', fn)} never returned"
    return out.get("r")


POLICY_ROUND = ["datagen.dagger.beta.kind=constant", "datagen.dagger.beta.min=0.0", "sim.env.scene_scale=2.0",
                "policy.servo.max_linear=0.05", "policy.servo.max_angular=0.02", "datagen.dagger.gain=1.5"]  # fmt: skip


def test_policy_steps_run_the_servo_in_the_unit_world_and_move_the_camera_by_its_clamped_prediction(
    small_cfg, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    cfg = small_cfg(*POLICY_ROUND, "datagen.dagger.beta.value=0.0", "datagen.dagger.episode_steps=4",
                    "policy.servo.hybrid=true")  # fmt: skip
    p = producer(cfg, monkeypatch)
    with_policy(p, monkeypatch)
    torch.set_num_threads(1)  # the actor's own thread count, which Servo must be given rather than its default
    buf, meta = finish(p.make_shard, ShardKey("dagger", 1, 0), 6)
    assert len(buf) == 6 and meta["policy_steps"] == meta["steps"] == len(p.stepped) > 0
    servo_cfg = cfg.policy.servo.model_copy(update={"hybrid": False})  # the policy acts directly, never hybrid
    assert SpyServo.made and all(m["cfg"] == servo_cfg and m["threads"] == 1 for m in SpyServo.made)
    assert all(m["scale"] == 2.0 for m in SpyServo.made)
    want = executed_velocity(denormalize_velocity(POLICY_UNIT, 2.0), 1.5, 0.05, 0.02)
    assert not np.allclose(want, 1.5 * denormalize_velocity(POLICY_UNIT, 2.0))  # both limits bind
    for vel, _ in p.stepped:
        np.testing.assert_allclose(vel, want)
    a = buf.arrays()
    assert np.all(a["policy_version"] == 3) and np.all(a["beta"] == 0.0)
    assert meta["round_beta"] == 0.0
    p.close()


def test_with_beta_one_the_expert_drives_though_a_policy_is_installed(small_cfg, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    cfg = small_cfg(*POLICY_ROUND, "datagen.dagger.beta.value=1.0", "datagen.dagger.episode_steps=4")
    p = producer(cfg, monkeypatch)
    with_policy(p, monkeypatch)
    buf, meta = finish(p.make_shard, ShardKey("dagger", 1, 0), 6)
    assert meta["policy_steps"] == 0 and meta["round_beta"] == 1.0
    for vel, dTc in p.stepped:
        np.testing.assert_allclose(vel, executed_velocity(pbvs(dTc), 1.5, 0.05, 0.02), atol=1e-12)
    a = buf.arrays()
    for vel, (_, dTc) in zip(a["vel"], p.stepped, strict=False):
        np.testing.assert_allclose(vel, normalize_velocity(pbvs(dTc), 2.0), atol=1e-6)
    p.close()


def test_a_shard_holds_exactly_n_samples_and_never_a_blank_image(small_cfg, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    # Episode 0's desired image is blank (the episode is skipped, its seed still recorded); in episode 1 the 4th
    # render (the 3rd current image) is blank, which ends that episode. n = 7 with 3 steps per episode: the shard
    # fills up in the middle of an episode.
    cfg = small_cfg("datagen.dagger.episode_steps=3", "sim.scene.effects.prob=0.0")  # noise would unblank them
    p = producer(cfg, monkeypatch, blank={(0, 0), (1, 3)})
    buf, meta = finish(p.make_shard, ShardKey("dagger", 0, 0), 7)
    a = buf.arrays()
    assert len(buf) == 7
    seeds = meta["scene_seeds"]
    assert len(set(seeds)) == len(seeds) >= 4  # one new scene per episode
    assert seeds[0] not in a["scene_seed"]  # skipped: its desired image was blank
    assert np.sum(a["scene_seed"] == seeds[1]) == 2  # stopped at its blank third current image
    assert [np.sum(a["scene_seed"] == s) for s in seeds[2:]] == [3, 2]
    for img in [*a["cur_rgb"], *a["des_rgb"]]:
        assert img.min() != img.max()
    p.close()


def test_an_episode_that_ends_early_ends_only_that_episode(small_cfg, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    cfg = small_cfg("datagen.dagger.episode_steps=5", "sim.env.max_steps=2")  # the env's step limit comes first
    p = producer(cfg, monkeypatch)
    buf, meta = finish(p.make_shard, ShardKey("dagger", 0, 0), 7)
    a = buf.arrays()
    assert len(buf) == 7 and meta["steps"] == len(p.stepped)
    assert [int(np.sum(a["scene_seed"] == s)) for s in meta["scene_seeds"]] == [2, 2, 2, 1]
    p.close()


def test_the_correspondences_are_the_ground_truth_of_each_stored_pose_with_occlusion(small_cfg, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    cfg = small_cfg("datagen.dagger.episode_steps=3")
    p = producer(cfg, monkeypatch)
    buf, _ = finish(p.make_shard, ShardKey("dagger", 0, 0), 6)
    a = buf.arrays()
    K, patch = p.env.camera.K, cfg.datagen.hemisphere.coarse_patch
    size = (cfg.sim.camera.width, cfg.sim.camera.height)
    hidden = 0
    for i in range(len(buf)):
        wTc, wTd = a["wTc"][i], a["wTd"][i]
        dTc = np.linalg.inv(wTd) @ wTc
        depth_c, depth_d = plane_depth(K, wTc, *size), plane_depth(K, wTd, *size)
        match, valid = gt_coarse_match(depth_c, K, dTc, patch, depth_d=depth_d)
        np.testing.assert_array_equal(a["coarse_valid"][i], valid)
        want = np.where(valid[..., None], match, 0.0)
        np.testing.assert_allclose(a["coarse_match"][i], want, atol=2e-3)  # stored as float16
        hidden += int(np.sum(gt_coarse_match(depth_c, K, dTc, patch)[1] & ~valid))
    assert hidden > 0  # some points are in view but hidden: the desired depth mattered
    assert not a["coarse_valid"].all()  # and the invalid ones are stored as zero
    p.close()


def test_without_coarse_matching_a_shard_has_no_correspondences(small_cfg, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    cfg = small_cfg("datagen.hemisphere.coarse_match=false", "datagen.dagger.episode_steps=3")
    p = producer(cfg, monkeypatch)
    buf, meta = finish(p.make_shard, ShardKey("dagger", 0, 0), 4)
    assert len(buf) == 4 and "coarse_match" not in buf.arrays() and "coarse_valid" not in buf.arrays()
    assert meta["assets"] == p.env.sampler.catalogue.summary() and meta["assets"]
    p.close()


def test_each_round_of_the_pipeline_gets_its_samples_then_waits_for_weights(small_cfg, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    # per_round, as the pipeline runs it: 10 samples in shards of at most 4 (4, 4, 2) per round; when the round is
    # done the producer waits; the first wait brings new weights (a trainer push), the second ends the run.
    cfg = small_cfg("datagen.dagger.samples=10", "datagen.dagger.shard_samples=4", "datagen.dagger.episode_steps=3")
    p = producer(cfg, monkeypatch)
    state = {"w": np.zeros(1)}
    waits: list[float | None] = []

    def wait(timeout: float | None = None) -> bool:
        waits.append(timeout)
        if len(waits) == 1:
            monkeypatch.setattr(dagger.DaggerProducer, "_swap_pending", _install_pending)
            p.set_weights(state, 7)
        else:
            p.stop()
        return p._stop.is_set()

    def _install_pending(self: DaggerProducer) -> None:  # the weights are a stand-in: install, do not load them
        with self._lock:
            pending, self._pending = self._pending, None
        if pending is not None:
            self._install(_Policy(), pending[1])

    p._stop.wait = wait  # type: ignore[method-assign]
    published: list[int] = []
    publish = p.writer.publish

    def record(key: ShardKey, buf: Any, **kwargs: Any) -> Any:
        published.append(buf.nbytes)
        return publish(key, buf, **kwargs)

    p.writer.publish = record  # type: ignore[method-assign]
    import policy.servo

    monkeypatch.setattr(policy.servo, "Servo", SpyServo)
    snap = finish(p.run, per_round=True)
    assert waits == [0.2, 0.2]  # it polls for weights; it does not sleep until stopped
    reader = DatasetReader(cfg.datagen.root)
    keys = sorted((s.key.round, s.key.index, s.n) for s in reader.shards)
    assert keys == [(0, 0, 4), (0, 1, 4), (0, 2, 2), (1, 3, 4), (1, 4, 4), (1, 5, 2)]
    assert {int(v) for s in reader.shards if s.key.round == 1 for v in reader.read(s)["policy_version"]} == {7}
    assert snap["samples"] == 20 and snap["shards"] == 6
    assert snap["bytes"] == sum(published) > 0
    p.close()


def test_a_resumed_run_tops_up_to_the_target_in_the_next_indices(small_cfg, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    sizes = ["datagen.dagger.shard_samples=8", "datagen.dagger.samples=6", "datagen.dagger.episode_steps=3"]
    cfg = small_cfg(*sizes)
    finish(producer(cfg, monkeypatch).run)
    p = producer(small_cfg(*sizes[:1], "datagen.dagger.samples=10", *sizes[2:]), monkeypatch)
    snap = finish(p.run)
    shards = DatasetReader(cfg.datagen.root).shards
    assert sorted((s.key.index, s.n) for s in shards) == [(0, 6), (1, 4)]  # 6 + the 4 missing, not another 8
    assert snap["skipped"] == 1 and snap["samples"] == 4
    p.close()


def test_dagger_numbers_its_shards_after_its_own_not_the_hemisphere_ones(small_cfg, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    cfg = small_cfg("datagen.dagger.samples=4", "datagen.dagger.shard_samples=4", "datagen.dagger.episode_steps=3")
    p = producer(cfg, monkeypatch)
    buf, meta = p.make_shard(ShardKey("dagger", 0, 0), 4)
    for i in range(3):
        p.writer.publish(ShardKey("hemisphere", 0, i), buf, sidecar=meta)
    finish(p.run)
    dagger_keys = [s.key.index for s in DatasetReader(cfg.datagen.root).shards if s.key.producer == "dagger"]
    assert dagger_keys == [0]
    p.close()


@pytest.mark.parametrize("actor_index", [0, 1, 2])
def test_three_actors_write_disjoint_shard_indices(small_cfg, monkeypatch, actor_index: int) -> None:  # type: ignore[no-untyped-def]
    # Each actor owns the indices i with i % actors == its index; it starts at its first and steps over the others'.
    cfg = small_cfg("datagen.dagger.actors=3", "datagen.dagger.samples=6", "datagen.dagger.shard_samples=2",
                    "datagen.dagger.episode_steps=3")  # fmt: skip
    p = producer(cfg, monkeypatch, actor_index=actor_index)
    assert finish(p._next_index) == actor_index
    finish(p.run)
    mine = sorted(s.key.index for s in DatasetReader(cfg.datagen.root).shards)
    assert mine == [actor_index, actor_index + 3, actor_index + 6]
    p.close()


def test_actors_share_one_dataset_and_each_resumes_its_own_count(small_cfg, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    cfg = small_cfg("datagen.dagger.actors=2", "datagen.dagger.samples=4", "datagen.dagger.shard_samples=2",
                    "datagen.dagger.episode_steps=3")  # fmt: skip
    for index in (0, 1):
        finish(producer(cfg, monkeypatch, actor_index=index).run)
    shards = DatasetReader(cfg.datagen.root).shards
    assert sorted(s.key.index for s in shards) == [0, 2, 3, 5]  # actor 1 starts after actor 0's last index
    again = producer(cfg, monkeypatch, actor_index=1)
    assert finish(again.run)["skipped"] == 2 and again._written == 4  # at its target: nothing more to write
    assert len(DatasetReader(cfg.datagen.root).shards) == 4
    again.close()
