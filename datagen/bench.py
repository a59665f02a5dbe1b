"""`python -m datagen.bench`: hemisphere pairs/s end to end against the renderer's own pair rate, DAgger steps/s."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time

from configs import load_config
from configs.schema import Config
from sim.seeds import Stream, rng_for


def renderer_pair_rate(cfg: Config, samples: int) -> float:
    """Pairs/s of the bare workload: the same scenes, poses and renders, with no labels, effects or writing."""
    from sim.camera import Camera
    from sim.poses import sample_initial, sample_pose
    from sim.render import make_renderer
    from sim.scene_sampler import SceneSampler

    h, c = cfg.datagen.hemisphere, cfg.sim.camera
    cam = Camera.canonical(c.width, c.height, c.focal_scale)
    renderer = make_renderer(cfg.sim.renderer.backend, c.width, c.height)
    sampler = SceneSampler(cfg.sim.scene, cfg.sim.assets)
    done, k = 0, 0
    t0 = time.perf_counter()
    while done < samples:
        renderer.load(sampler.sample(rng_for(k, Stream.SCENE)))
        rng = rng_for(k, Stream.POSES)
        for _ in range(h.desired_per_scene):
            wTd = sample_pose(rng, cfg.sim.poses.desired)
            renderer.render(cam.K, wTd)
            for _ in range(h.currents_per_desired):
                renderer.render(cam.K, sample_initial(rng, cfg.sim.poses, wTd))
                done += 1
        k += 1
    rate = done / (time.perf_counter() - t0)
    renderer.close()
    return rate


def hemisphere_rate(cfg: Config) -> float:
    """Pairs/s of HemisphereProducer.run in this process: render, effects, labels, correspondences, validated shards."""
    from datagen.hemisphere import HemisphereProducer

    p = HemisphereProducer(cfg)
    t0 = time.perf_counter()
    stats = p.run()
    rate = stats["samples"] / (time.perf_counter() - t0)
    p.close()
    return rate


def ray_rate(cfg: Config) -> tuple[float, float]:
    """Pairs/s of `python -m datagen` (hemisphere only) on a local Ray: steady state, between the first and the last
    shard landing (sidecar mtimes), and overall including Ray's start-up."""
    from datagen.runner import run_datagen
    from shards import DatasetReader

    summary = run_datagen(cfg, show_progress=False)
    shards = sorted(DatasetReader(cfg.datagen.root).shards, key=lambda s: s.path.with_suffix(".json").stat().st_mtime)
    t = [s.path.with_suffix(".json").stat().st_mtime for s in shards]
    steady = sum(s.n for s in shards[1:]) / max(t[-1] - t[0], 1e-9)
    return steady, summary.new_samples / summary.seconds


def dagger_rate(cfg: Config) -> tuple[float, float]:
    """DAgger steps/s with the smoke policy acting on about half the steps, and the share it drove."""
    from datagen.dagger import DaggerProducer
    from policy.checkpoint import build_policy
    from shards import DatasetReader

    p = DaggerProducer(cfg)
    policy = build_policy(cfg.policy)
    p.set_weights({k: v.numpy() for k, v in policy.state_dict().items()}, 1)
    t0 = time.perf_counter()
    p.run()
    dt = time.perf_counter() - t0
    reader_meta = [s.sidecar for s in DatasetReader(cfg.datagen.root).shards]
    steps = sum(m["steps"] for m in reader_meta)
    driven = sum(m["policy_steps"] for m in reader_meta)
    p.close()
    return steps / dt, driven / max(steps, 1)


def main(argv: list[str] | None = None) -> int:
    """Print the table and the command that reproduces it."""
    ap = argparse.ArgumentParser(prog="python -m datagen.bench", description=__doc__)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--samples", type=int, default=300, help="hemisphere pairs per measurement (default %(default)s)")
    ap.add_argument("--dagger-samples", type=int, default=150)
    ap.add_argument(
        "--actors", type=int, nargs="*", default=[2], help="more hemisphere actor counts on Ray (default %(default)s)"
    )
    args = ap.parse_args(argv)
    tmp = tempfile.mkdtemp(prefix="cnsv2-bench-")
    try:
        base = [f"run.root={tmp}", f"sim.camera.width={args.size}", f"sim.camera.height={args.size}",
                f"policy.input_size=[{args.size},{args.size}]", "datagen.dagger.samples=0",
                f"datagen.hemisphere.samples={args.samples}"]  # fmt: skip
        own = renderer_pair_rate(load_config("smoke", [*base, "run.name=own"]), args.samples)
        local = hemisphere_rate(load_config("smoke", [*base, "run.name=local"]))
        ray, ray_overall = ray_rate(load_config("smoke", [*base, "run.name=ray"]))
        scaling = {
            n: ray_rate(load_config("smoke", [*base, f"run.name=ray{n}", f"datagen.hemisphere.actors={n}"]))[0]
            for n in args.actors
            if n != 1
        }
        dagger_overrides = [
            "run.name=dagger",
            "datagen.hemisphere.samples=0",
            f"datagen.dagger.samples={args.dagger_samples}",
            "datagen.dagger.beta.kind=constant",
            "datagen.dagger.beta.value=0.5",
        ]
        dagger_cfg = load_config("smoke", [*base, *dagger_overrides])
        dagger, share = dagger_rate(dagger_cfg)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"Data generation, smoke config at {args.size} px, {os.cpu_count()} cores, {args.samples} hemisphere pairs")
    print("| measurement | rate | share of the renderer's rate |")
    print("|---|---|---|")
    print(f"| renderer alone (same scenes, poses, renders) | {own:.1f} pairs/s | 100 % |")
    print(f"| hemisphere producer, in process | {local:.1f} pairs/s | {100 * local / own:.0f} % |")
    print(f"| hemisphere producer, `python -m datagen` on Ray, steady | {ray:.1f} pairs/s | {100 * ray / own:.0f} % |")
    print(f"| ... including Ray start-up | {ray_overall:.1f} pairs/s | {100 * ray_overall / own:.0f} % |")
    for n, rate in scaling.items():
        print(f"| the same with {n} hemisphere actors, steady | {rate:.1f} pairs/s | {100 * rate / own:.0f} % |")
    print(f"| DAgger with the smoke policy (it drives {100 * share:.0f} % of steps) | {dagger:.1f} steps/s | |")
    print(f"reproduce: python -m datagen.bench {' '.join(sys.argv[1:] if argv is None else argv)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
