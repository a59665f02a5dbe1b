"""The DAgger producer: rollouts of the live policy in ServoEnv, every step labelled by the expert.

Per step, the expert's action (PBVS on the true pose) is executed with probability beta (per round, from the schedule)
and the policy's otherwise; the stored label is always the expert's normalised velocity. Before any policy exists the
producer runs round 0, pure expert. New weights arrive through `set_weights` at any time and are swapped in between
episodes; each swap starts a new round. Every sample carries the policy version and beta it was collected with.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import numpy as np

from configs.schema import Config
from datagen.beta import beta_for_round
from datagen.producer import ProducerProgress, informative, open_writer
from policy.control import denormalize_velocity, executed_velocity, normalize_velocity, pbvs
from policy.matching import gt_coarse_match
from shards import ShardBuffer, ShardKey
from sim.env import ServoEnv
from sim.seeds import PRODUCER_IDS, Stream, derive_seed, rng_for

PRODUCER = "dagger"
EXPERT_VERSION = -1
POLL_SECONDS = 30.0  # how often a synchronous DAgger actor looks for a newer checkpoint


def weights_by_push(cfg: Config) -> bool:
    """Whether DAgger receives weights pushed by the trainer (a threaded actor) or polls the checkpoints.

    Isaac Sim must run on its process's main thread, so an Isaac DAgger actor is synchronous: no method can arrive
    while `run` loops. It picks up the newest checkpoint between episodes instead, and the pipeline ends it with
    ray.kill (a shard in progress is never published, so nothing half-written appears).
    """
    return cfg.sim.renderer.backend != "isaac"


class DaggerProducer:
    """Writes DAgger shards `dagger-r<round>-<index>` until the sample target is met."""

    def __init__(self, cfg: Config, actor_index: int = 0, poll_seconds: float | None = None) -> None:
        self.cfg = cfg
        self.actor_index = actor_index
        # None: weights arrive by set_weights; a number: look for a newer checkpoint this often (seconds).
        self.poll_seconds = poll_seconds if poll_seconds is not None or weights_by_push(cfg) else POLL_SECONDS
        self._polled = -np.inf
        self.env = ServoEnv(cfg.sim)
        self.writer = open_writer(cfg)
        self.progress = ProducerProgress()
        self.policy: Any = None
        self.version = EXPERT_VERSION
        self.round = 0
        self._pending: tuple[dict[str, np.ndarray], int] | None = None
        self._lock = threading.Lock()
        self._written = 0
        self._round_written = 0
        self._stop = threading.Event()

    def stop(self) -> None:
        """Finish the shard in progress and return from `run` (the pipeline stops DAgger when training ends)."""
        self._stop.set()

    # -- weights -----------------------------------------------------------------------------------------------
    def set_weights(self, state: dict[str, np.ndarray], version: int) -> None:
        """Queue new policy weights (numpy arrays); they take effect at the next episode."""
        with self._lock:
            self._pending = (state, int(version))

    def load_newest_checkpoint(self) -> int:
        """Start from the newest checkpoint of the run, if any; returns its version (-1: none, expert only)."""
        from policy.checkpoint import latest_checkpoint

        path = latest_checkpoint(self.cfg.datagen.checkpoints)
        if path is None:
            return EXPERT_VERSION
        from policy.checkpoint import load_checkpoint

        policy, meta = load_checkpoint(path, cfg=self.cfg.policy, device=self.cfg.datagen.dagger.device)
        self._install(policy, int(meta["policy_version"]))
        return self.version

    def _install(self, policy: Any, version: int) -> None:
        self.policy = policy.eval()
        self.version = version
        self.round += 1
        self._round_written = 0

    def _poll_checkpoint(self) -> None:
        if self.poll_seconds is None or time.monotonic() - self._polled < self.poll_seconds:
            return
        self._polled = time.monotonic()
        from policy.checkpoint import latest_checkpoint, read_meta

        path = latest_checkpoint(self.cfg.datagen.checkpoints)
        if path is not None and int(read_meta(path)["policy_version"]) > self.version:
            self.load_newest_checkpoint()

    def _swap_pending(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, None
        if pending is None:
            self._poll_checkpoint()
            return
        import torch

        from policy.checkpoint import build_policy

        state, version = pending
        policy = self.policy if self.policy is not None else build_policy(self.cfg.policy)
        policy.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in state.items()})
        self._install(policy.to(self.cfg.datagen.dagger.device), version)

    # -- rollouts ----------------------------------------------------------------------------------------------
    def run(self, per_round: bool = False) -> dict[str, float]:
        """Collect until the target is met, resuming after what earlier runs of this producer published.

        With `per_round`, the target is per round instead: each new policy gets `samples` fresh samples, then the
        producer idles until the next weights arrive or `stop` is called (how the pipeline runs DAgger).
        """
        d = self.cfg.datagen.dagger
        self.writer.clean_stale()
        self._written = self._published_samples()
        index = self._next_index()
        while not self._stop.is_set():
            self._swap_pending()
            if per_round and self._round_written >= d.samples:
                self._stop.wait(0.2)
                continue
            if not per_round and self._written >= d.samples:
                break
            key = ShardKey(PRODUCER, self.round, index)
            # Past the other actors' indices: each actor writes only its own residue class, or two would race for a key.
            index = self._owned_from(index + 1)
            if self.writer.is_published(key):
                continue
            quota = d.samples - (self._round_written if per_round else self._written)
            buf, meta = self.make_shard(key, min(d.shard_samples, quota))
            self.writer.publish(key, buf, sidecar=meta)
            self._written += len(buf)
            self._round_written += len(buf)
            self.progress.add(samples=len(buf), shards=1, nbytes=buf.nbytes)
        return self.progress.snapshot()

    def _published_samples(self) -> int:
        from shards import DatasetReader

        reader = DatasetReader(self.cfg.datagen.root)
        mine = [s for s in reader.shards if s.key.producer == PRODUCER and self._owns(s.key.index)]
        self.progress.add(skipped=len(mine))
        return sum(s.n for s in mine)

    def _owns(self, index: int) -> bool:
        return index % max(1, self.cfg.datagen.dagger.actors) == self.actor_index

    def _next_index(self) -> int:
        # Indices are global across rounds, so (round, index) never repeats and each actor owns a residue class.
        from shards import DatasetReader

        used = [s.key.index for s in DatasetReader(self.cfg.datagen.root).shards if s.key.producer == PRODUCER]
        return self._owned_from(max(used, default=-1) + 1)

    def _owned_from(self, start: int) -> int:
        while not self._owns(start):
            start += 1
        return start

    def make_shard(self, key: ShardKey, n: int) -> tuple[ShardBuffer, dict[str, Any]]:
        """Roll out episodes until `n` samples are buffered."""
        d = self.cfg.datagen.dagger
        servo_cfg = self.cfg.policy.servo
        cam = self.env.camera
        h = self.cfg.datagen.hemisphere
        # The same ground-truth correspondences as the hemisphere pairs, so the matching loss sees closed-loop views.
        grid = (cam.height // h.coarse_patch, cam.width // h.coarse_patch) if h.coarse_match else None
        buf = ShardBuffer(cam.height, cam.width, coarse_grid=grid)
        driven, steps = 0, 0
        episode = 0
        seeds: list[int] = []
        while len(buf) < n:
            if episode > 20 + 4 * n:
                raise RuntimeError(f"{key.id}: renders keep coming out constant; is the renderer broken?")
            if episode:
                self._swap_pending()  # between episodes only, so an episode uses one policy
            seed = derive_seed(self.cfg.run.seed, PRODUCER_IDS[PRODUCER], key.round, key.index, episode)
            seeds.append(seed)
            beta = 1.0 if self.policy is None else beta_for_round(d.beta, self.round)
            act_rng = rng_for(seed, Stream.DAGGER_COIN)
            frame = self.env.reset(seed)
            scale = self.env.scene_scale
            episode += 1
            if not informative(self.env.desired_frame().rgb):
                continue
            des_index = buf.add_desired(self.env.desired_frame().rgb)
            servo = self._servo(self.env.desired_frame().rgb, scale) if self.policy is not None else None
            for step in range(d.episode_steps):
                if len(buf) >= n or not informative(frame.rgb):
                    break
                expert = normalize_velocity(pbvs(self.env.dTc), scale)
                extra = {}
                if grid is not None:
                    match, valid = gt_coarse_match(
                        frame.depth, cam.K, self.env.dTc, h.coarse_patch, depth_d=self.env.desired_frame().depth
                    )
                    extra = {"coarse_match": np.where(valid[..., None], match, 0.0), "coarse_valid": valid}
                buf.add_sample(
                    cur_rgb=frame.rgb, des_index=des_index, vel=expert, wTc=self.env.wTc, wTd=self.env.wTd,
                    K=cam.K, scene_scale=scale, episode=seed, step=step, scene_seed=seed,
                    policy_version=self.version, beta=beta, **extra,
                )  # fmt: skip
                action = expert
                if servo is not None and act_rng.random() >= beta:
                    out = servo.step(frame.rgb)
                    if out.ok:
                        action = out.velocity_unit
                        driven += 1
                steps += 1
                frame = self.env.step(
                    executed_velocity(
                        denormalize_velocity(action, scale), d.gain, servo_cfg.max_linear, servo_cfg.max_angular
                    )
                )
                if self.env.done:
                    break
        # Every episode seed drawn, skipped ones too, as the hemisphere sidecar records its scene seeds: with the run
        # seed they say how each episode was made.
        meta = {
            "round_beta": beta,
            "policy_steps": driven,
            "steps": steps,
            "scene_seeds": seeds,
            "config_seed": self.cfg.run.seed,
            "assets": self.env.sampler.catalogue.summary(),
        }
        return buf, meta

    def _servo(self, desired: np.ndarray, scale: float) -> Any:
        import torch

        from policy.servo import Servo

        # The policy acts in the unit world: its normalised prediction is executed directly (no hybrid law).
        cfg = self.cfg.policy.servo.model_copy(update={"hybrid": False})
        # The actor's own thread count (datagen.dagger.threads), not a Servo's default.
        return Servo(self.policy, desired, self.env.camera.K, scale, cfg=cfg, threads=torch.get_num_threads())

    def close(self) -> None:
        """Release the environment."""
        self.env.close()
