"""`python -m sim.bench`: scene builds/s and env steps/s (RGB + depth) at several image sizes, one process."""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time

import numpy as np

from configs import load_config
from sim.seeds import Stream, rng_for


def _measure(size: int, scenes: int, steps: int, overrides: list[str]) -> dict[str, float]:
    from sim.env import ServoEnv

    cfg = load_config("smoke", [f"sim.camera.width={size}", f"sim.camera.height={size}", *overrides]).sim
    env = ServoEnv(cfg)
    sample_s = load_s = step_s = 0.0
    n_steps = 0
    vel = np.array([0.02, -0.01, 0.01, 0.01, 0.02, 0.05])
    env.reset(10_000)  # warm-up: first context, first compile
    for seed in range(scenes):
        t0 = time.perf_counter()
        scene = env.sampler.sample(rng_for(seed, Stream.SCENE), seed=seed)
        t1 = time.perf_counter()
        env.renderer.load(scene)
        t2 = time.perf_counter()
        sample_s, load_s = sample_s + t1 - t0, load_s + t2 - t1
        env.reset(seed)
        t3 = time.perf_counter()
        for _ in range(steps):
            if env.done:
                break
            env.step(vel)
            n_steps += 1
        step_s += time.perf_counter() - t3
    env.close()
    return {
        "sample_ms": 1e3 * sample_s / scenes,
        "load_ms": 1e3 * load_s / scenes,
        "builds_per_s": scenes / (sample_s + load_s),
        "step_ms": 1e3 * step_s / max(n_steps, 1),
        "steps_per_s": n_steps / step_s if step_s else float("nan"),
    }


def main(argv: list[str] | None = None) -> int:
    """Print the table and the command that reproduces it."""
    p = argparse.ArgumentParser(prog="python -m sim.bench", description=__doc__)
    p.add_argument("--sizes", type=int, nargs="+", default=[224, 256, 512])
    p.add_argument("--scenes", type=int, default=8, help="scenes per size (default %(default)s)")
    p.add_argument("--steps", type=int, default=100, help="env steps per scene (default %(default)s)")
    p.add_argument(
        "overrides", nargs="*", metavar="key.sub=value", help="config overrides, e.g. sim.renderer.shadows=true"
    )
    args = p.parse_args(argv)
    rows = [(s, _measure(s, args.scenes, args.steps, args.overrides)) for s in args.sizes]
    gl = os.environ.get("MUJOCO_GL", "?")
    print(f"Simulator, smoke scenes, 1 process, MuJoCo/{gl}, {platform.machine()}, {os.cpu_count()} cores")
    print("| size | scene sample+settle ms | scene load ms | scene builds/s | env step ms | env steps/s |")
    print("|---|---|---|---|---|---|")
    for s, r in rows:
        print(
            f"| {s}x{s} | {r['sample_ms']:.1f} | {r['load_ms']:.1f} | {r['builds_per_s']:.1f} | "
            f"{r['step_ms']:.2f} | {r['steps_per_s']:.0f} |"
        )
    print(f"reproduce: python -m sim.bench {' '.join(sys.argv[1:] if argv is None else argv)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
