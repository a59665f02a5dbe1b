"""The offline producer: uniform pose pairs on the upper hemisphere around random scenes, labelled by PBVS.

Each scene is rendered from `desired_per_scene` desired poses and, for each, `currents_per_desired` initial poses
(the CNS distributions; a share `near_goal` of the currents lies close to the desired pose instead, so the policy
learns the last millimetres and where to stop). Images are rendered in metres; the label is the PBVS velocity
(lambda = 1) normalised by d* = the desired camera's distance to the scene centre, [v / d*, w], the unit world's label.
"""

from __future__ import annotations

import numpy as np

from configs.schema import Config
from datagen.producer import BackgroundPublisher, ProducerProgress, informative, open_writer
from policy.control import normalize_velocity, pbvs
from policy.matching import gt_coarse_match
from shards import ShardBuffer, ShardKey
from sim.camera import Camera
from sim.effects import apply_effects
from sim.geometry import relative_pose
from sim.poses import sample_initial, sample_near, sample_orbit, sample_pose, scene_scale
from sim.render import make_renderer
from sim.scene_sampler import SceneSampler
from sim.seeds import PRODUCER_IDS, Stream, derive_seed, rng_for

PRODUCER = "hemisphere"


def shard_count(cfg: Config) -> int:
    """Number of shards the configured sample target needs."""
    h = cfg.datagen.hemisphere
    return -(-h.samples // h.shard_samples)


class HemisphereProducer:
    """Writes the hemisphere shards assigned to it (every `stride`-th shard index, from `offset`)."""

    def __init__(self, cfg: Config, offset: int = 0, stride: int = 1) -> None:
        self.cfg = cfg
        self.offset, self.stride = offset, stride
        c = cfg.sim.camera
        self.camera = Camera.canonical(c.width, c.height, c.focal_scale)
        r = cfg.sim.renderer
        self.renderer = make_renderer(r.backend, c.width, c.height, shadows=r.shadows, shadow_size=r.shadow_size)
        self.sampler = SceneSampler(cfg.sim.scene, cfg.sim.assets)
        self.assets = self.sampler.catalogue.summary()  # every sidecar names the asset sources and split counts
        self.writer = open_writer(cfg)
        self.progress = ProducerProgress()

    def indices(self) -> list[int]:
        """The shard indices this producer owns."""
        return list(range(self.offset, shard_count(self.cfg), self.stride))

    def run(self) -> dict[str, float]:
        """Produce every owned shard that is not published yet (so a rerun or a restart fills only the holes)."""
        self.writer.clean_stale()
        publisher = BackgroundPublisher(self.writer, self.progress)
        try:
            for index in self.indices():
                key = ShardKey(PRODUCER, 0, index)
                if self.writer.is_published(key):
                    self.progress.add(skipped=1)
                    continue
                buf, seeds = self.make_shard(index)
                sidecar = {"scene_seeds": seeds, "config_seed": self.cfg.run.seed, "assets": self.assets}
                publisher.submit(key, buf, sidecar)
        finally:
            publisher.close()
        return self.progress.snapshot()

    def _n_samples(self, index: int) -> int:
        h = self.cfg.datagen.hemisphere
        return min(h.shard_samples, h.samples - index * h.shard_samples)

    def make_shard(self, index: int) -> tuple[ShardBuffer, list[int]]:
        """Render shard `index` into memory: a pure function of (run seed, index) on a given machine."""
        cfg, h = self.cfg, self.cfg.datagen.hemisphere
        grid = (self.camera.height // h.coarse_patch, self.camera.width // h.coarse_patch) if h.coarse_match else None
        buf = ShardBuffer(self.camera.height, self.camera.width, coarse_grid=grid)
        n = self._n_samples(index)
        base = (cfg.run.seed, PRODUCER_IDS[PRODUCER], 0, index)
        seeds: list[int] = []
        episode = 0
        while len(buf) < n:
            if len(seeds) > 20 + 4 * n:
                raise RuntimeError(
                    f"hemisphere shard {index}: renders keep coming out constant; is the renderer broken?"
                )
            scene_seed = derive_seed(*base, len(seeds))
            seeds.append(scene_seed)
            scene = self.sampler.sample(rng_for(scene_seed, Stream.SCENE), seed=scene_seed)
            self.renderer.load(scene)
            pose_rng, fx_rng = rng_for(scene_seed, Stream.POSES), rng_for(scene_seed, Stream.EFFECTS)
            for _ in range(h.desired_per_scene):
                if len(buf) >= n:
                    break
                wTd = sample_pose(pose_rng, cfg.sim.poses.desired)
                des = self.renderer.render(self.camera.K, wTd)
                des_rgb = apply_effects(des.rgb, scene.effects, fx_rng)
                if not informative(des_rgb):
                    continue
                des_index = buf.add_desired(des_rgb)
                d = scene_scale(wTd)
                for _ in range(h.currents_per_desired):
                    if len(buf) >= n:
                        break
                    if h.near_goal > 0 and pose_rng.random() < h.near_goal:
                        if h.near_goal_orbit > 0 and pose_rng.random() < h.near_goal_orbit:
                            wTc = sample_orbit(pose_rng, wTd, h.near_goal_rotation_deg)
                        else:
                            wTc = sample_near(pose_rng, wTd, h.near_goal_translation, h.near_goal_rotation_deg)
                    else:
                        wTc = sample_initial(pose_rng, cfg.sim.poses, wTd)
                    cur = self.renderer.render(self.camera.K, wTc)
                    cur_rgb = apply_effects(cur.rgb, scene.effects, fx_rng)
                    if not informative(cur_rgb):
                        continue
                    dTc = relative_pose(wTd, wTc)
                    extra = {}
                    if h.coarse_match:
                        match, valid = gt_coarse_match(cur.depth, self.camera.K, dTc, h.coarse_patch, depth_d=des.depth)
                        extra = {"coarse_match": np.where(valid[..., None], match, 0.0), "coarse_valid": valid}
                    buf.add_sample(
                        cur_rgb=cur_rgb,
                        des_index=des_index,
                        vel=normalize_velocity(pbvs(dTc), d),
                        wTc=wTc,
                        wTd=wTd,
                        K=self.camera.K,
                        scene_scale=d,
                        episode=index * 100_000 + episode,
                        step=0,
                        scene_seed=scene_seed,
                        **extra,
                    )
                episode += 1
        return buf, seeds

    def close(self) -> None:
        """Release the renderer."""
        self.renderer.close()
