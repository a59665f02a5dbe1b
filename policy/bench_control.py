"""`python -m policy.bench_control`: time the classical control laws and pose recovery per call on this CPU."""

from __future__ import annotations

import argparse
import platform
import sys
import time
from collections.abc import Callable

import numpy as np

from policy import control
from sim.camera import Camera
from sim.geometry import exp_se3, look_at


def _time(fn: Callable[[], object], min_seconds: float) -> tuple[float, int]:
    fn()
    n, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < min_seconds:
        fn()
        n += 1
    return elapsed / n, n


def main(argv: list[str] | None = None) -> int:
    """Print a table of per-call latency for each control law."""
    p = argparse.ArgumentParser(prog="python -m policy.bench_control", description=__doc__)
    p.add_argument("--seconds", type=float, default=0.3, help="minimum time per row (default %(default)s)")
    p.add_argument("--points", type=int, default=256, help="matches for IBVS and pose recovery (default %(default)s)")
    args = p.parse_args(argv)

    rng = np.random.default_rng(0)
    wTd = look_at([0.0, -0.3, 0.8], [0.0, 0.0, 0.0])
    wTc = wTd @ exp_se3(rng.normal(0, 0.2, 6))
    dTc = np.linalg.inv(wTd) @ wTc
    P_w = np.concatenate([rng.uniform(-0.2, 0.2, (args.points, 2)), rng.uniform(0, 0.1, (args.points, 1))], axis=1)
    cam = Camera.canonical(256)
    uv_c, z_c = cam.project_world(P_w, wTc)
    uv_d, z_d = cam.project_world(P_w, wTd)
    pts_c = np.concatenate([cam.normalize(uv_c), z_c[:, None]], axis=1)
    pts_d = np.concatenate([cam.normalize(uv_d), z_d[:, None]], axis=1)
    vel = control.pbvs(dTc)

    rows = [
        ("pbvs", lambda: control.pbvs(dTc)),
        ("pbvs_inverse", lambda: control.pbvs_inverse(vel)),
        ("hybrid", lambda: control.hybrid(dTc, pts_c[0, :2], pts_c[0, 2], pts_d[0, :2])),
        (f"ibvs mean, {args.points} pts", lambda: control.ibvs(pts_c, pts_d, mode="mean")),
        ("denormalize_velocity s_f=1", lambda: control.denormalize_velocity(vel, 0.7)),
        ("denormalize_velocity s_f=0.5", lambda: control.denormalize_velocity(vel, 0.7, 0.5)),
        (f"pose_from_matches, {args.points} px", lambda: control.pose_from_matches(uv_c, uv_d, cam.K)),
        ("exp_se3", lambda: exp_se3(vel, 0.02)),
    ]
    print(f"Control laws, one call, 1 process ({platform.processor() or platform.machine()})")
    print(f"| {'law':32s} | {'us/call':>9s} | {'calls/s':>9s} |")
    print(f"|{'-' * 34}|{'-' * 11}|{'-' * 11}|")
    for name, fn in rows:
        dt, _ = _time(fn, args.seconds)
        print(f"| {name:32s} | {dt * 1e6:9.1f} | {1.0 / dt:9.0f} |")
    print(f"reproduce: python -m policy.bench_control {' '.join(sys.argv[1:]) if argv is None else ' '.join(argv)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
