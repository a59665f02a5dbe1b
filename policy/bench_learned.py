"""`python -m policy.bench_learned`: time one control step of each matcher controller on this CPU (or CUDA).

The desired image is described once (in `reset`, not timed); a step describes the current image, matches it, rejects
outliers with RANSAC and runs the law. The learned matchers search the desired image's four quarter turns on the first
step after `reset` and every `turn_search_every` (8) steps after it, matching only the turn in use between searches,
so the timed steps start at a reset and the row is their mean over one such cycle.

The pair is a rendered scene (textured, seed 0) with the camera walked by the true-pose PBVS until it is within 10° of
the goal, so that the matchers see a benchmark-like overlap.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

from policy.classical import CONTROLLERS, LEARNED_CONTROLLERS


def _pair(size: int) -> tuple:  # type: ignore[type-arg]
    from configs import load_config
    from policy.control import pbvs
    from sim import ServoEnv

    overrides = [f"sim.camera.width={size}", f"sim.camera.height={size}", "sim.scene.textureless_prob=0.0"]
    overrides += ["sim.scene.ground_textureless_prob=0.0", "sim.scene.effects.prob=0.0"]
    with ServoEnv(load_config("smoke", overrides).sim) as env:
        env.reset(0)
        for _ in range(100):
            if env.pose_error()[1] < 10.0:
                break
            env.step(pbvs(env.dTc), 0.1)
        return env.desired_frame().rgb, env.observe().rgb, env.camera.K, env.scene_scale


def main(argv: list[str] | None = None) -> int:
    """Print a table of per-step latency for each matcher controller and image size."""
    p = argparse.ArgumentParser(prog="python -m policy.bench_learned", description=__doc__)
    p.add_argument("--sizes", type=int, nargs="+", default=[256, 512], help="square image sizes (default 256 512)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default %(default)s)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default %(default)s)")
    p.add_argument("--steps", type=int, default=8, help="timed steps per row from a reset, after 2 warm-up steps")
    p.add_argument("--controllers", nargs="+", default=[*LEARNED_CONTROLLERS, *CONTROLLERS])
    args = p.parse_args(argv)

    import torch

    from policy.registry import ControllerSetup, make_controller

    torch.set_num_threads(args.threads)
    print(
        f"controller step, {args.device}, {torch.get_num_threads()} torch threads, desired described once; mean of "
        f"{args.steps} steps from a reset"
    )
    print("| controller | size | step ms | FPS | matches | inliers |")
    print("|---|---|---|---|---|---|")
    for size in args.sizes:
        des, cur, K, scale = _pair(size)
        for name in args.controllers:
            ctrl = make_controller(name, ControllerSetup(device=args.device))
            ctrl.reset(des, K, scale)  # builds the networks on first use
            for _ in range(2):
                out = ctrl.step(cur)
            ctrl.reset(des, K, scale)  # a new episode: the first timed step searches the quarter turns
            times = []
            for _ in range(args.steps):
                start = time.perf_counter()
                out = ctrl.step(cur)
                times.append(time.perf_counter() - start)
            ms = 1000 * statistics.mean(times)
            info = out.info
            print(f"| {name} | {size} | {ms:.0f} | {1000 / ms:.1f} | {info['matches']} | {info['inliers']} |")
    print(f"reproduce: python -m policy.bench_learned {' '.join(sys.argv[1:] if argv is None else argv)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
