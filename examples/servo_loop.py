"""Drive `policy.Servo` against the simulator exactly as a robot loop would: image -> Servo.step -> command the
velocity -> until arrived or a step limit.

    python examples/servo_loop.py                              # the shipped cnsv2-cpu policy, a canonical episode
    python examples/servo_loop.py --seed 1000001 --suite lighting --max-steps 300
    python examples/servo_loop.py --checkpoint runs/cpu/checkpoints/<step>   # a policy you trained
    python examples/servo_loop.py sim.camera.width=640 sim.camera.height=480  # any camera size (Servo remaps it)

On a robot, replace the three `env` lines marked ROBOT: read an RGB uint8 (H, W, 3) image from the camera (convert
OpenCV's BGR), send `out.command` as the camera's twist in its own frame (OpenCV axes: x right, y down, z forward;
m/s and rad/s) for the next control period, and give Servo the camera's K and d*, the distance in metres from the
desired camera to the scene it looks at.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

# The checkout this file is in, before any installed copy: `python examples/servo_loop.py` puts examples/ on the path.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from configs import add_config_arguments


def main(argv: list[str] | None = None) -> int:
    """Run one episode and print a per-step trace every `--every` steps and a one-line summary; returns 0."""
    p = argparse.ArgumentParser(prog="python examples/servo_loop.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--policy", default="cnsv2-cpu", help="a shipped policy (policy.pretrained; default %(default)s)")
    p.add_argument("--checkpoint", default=None, help="a checkpoint folder instead of a shipped policy")
    p.add_argument("--seed", type=int, default=1_000_004, help="the episode (scene and poses; default %(default)s)")
    p.add_argument(
        "--suite", default="canonical", help="benchmark suite of the scene (configs/eval/; default %(default)s)"
    )
    p.add_argument("--max-steps", type=int, default=600, help="give up after this many steps (default %(default)s)")
    p.add_argument("--every", type=int, default=25, help="print the state every this many steps (0: never)")
    add_config_arguments(p)  # the simulator's config: --config and key.sub=value overrides (camera, scene)
    p.set_defaults(config="cpu")
    args = p.parse_args(argv)
    if args.max_steps < 1:
        p.error(f"--max-steps must be >= 1, got {args.max_steps}")
    from configs.loader import ConfigError
    from evaluation.suites import load_suite, suite_config

    try:  # the benchmark's scenes and poses: held-out assets, the suite's camera and d*
        cfg = suite_config(args.config, load_suite(args.suite), args.overrides)
    except ConfigError as err:
        p.exit(2, f"{p.prog}: error: {err}\n")

    from policy import Servo, load_checkpoint, load_pretrained
    from sim.env import ServoEnv

    policy, _ = load_checkpoint(args.checkpoint) if args.checkpoint else load_pretrained(args.policy)
    name = args.checkpoint or f"pretrained:{args.policy}"
    with ServoEnv(cfg.sim) as env:
        env.reset(args.seed)
        te0, re0 = env.pose_error()
        # ROBOT: the goal image, the camera's intrinsics and d* (m).
        servo = Servo(policy, env.desired_frame().rgb, env.camera.K, scene_scale=env.scene_scale)
        frame = env.observe()  # ROBOT: the camera's current image
        steps, seconds, out = 0, 0.0, None
        while steps < args.max_steps:
            t0 = time.perf_counter()
            out = servo.step(frame.rgb)
            seconds += time.perf_counter() - t0
            if out.arrived:
                break
            frame = env.step(out.command)  # ROBOT: send out.command for one control period, then read the image
            steps += 1
            if args.every and steps % args.every == 0:
                te, re = env.pose_error()
                v, w = np.linalg.norm(out.command[:3]), np.linalg.norm(out.command[3:])
                print(f"step {steps:4d}: error {1e3 * te:7.1f} mm {re:6.2f} deg, command {v:.3f} m/s {w:.3f} rad/s")
            if env.done:  # the simulator's own end: scene lost, below ground, its step limit
                break
        te, re = env.pose_error()
        ended = "arrived" if out is not None and out.arrived else (env.reason or "step limit")
    ms = 1e3 * seconds / max(1, steps + (out is not None and out.arrived))
    print(
        f"servo_loop: {ended} after {steps} steps ({ms:.0f} ms/step, {servo.threads} torch thread(s)); error "
        f"{1e3 * te0:.1f} mm {re0:.2f} deg -> {1e3 * te:.1f} mm {re:.2f} deg; {name}, seed {args.seed}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
