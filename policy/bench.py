"""`python -m policy.bench`: Servo.step latency and FPS, broken down by network stage, on whatever device is here;
then, on a CPU, Servo.step idle and beside two busy torch processes at 1 and 2 threads (`runtime.threads`)."""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch

from configs import load_config
from policy.checkpoint import build_policy
from policy.network import CNSv2Policy
from policy.servo import Servo
from runtime.threads import SERVO_AUTO_THREADS, set_torch_threads, usable_cpus
from sim.camera import Camera

STAGES = ("backbone", "transformer", "representation", "fine", "controller")


class StageTimer:
    """Wall time per network stage via forward hooks (synchronising CUDA so that times are real)."""

    def __init__(self, policy: CNSv2Policy, device: torch.device) -> None:
        self.device = device
        self.times: dict[str, list[float]] = defaultdict(list)
        self._start: dict[str, float] = {}
        self._handles = []
        modules = {"backbone": policy.backbone, "transformer": policy.transformer, "controller": policy.controller}
        if policy.fine is not None:
            modules["fine"] = policy.fine
            policy.fine.encode = self._wrap("fine", policy.fine.encode)  # type: ignore[method-assign]
        for name, module in modules.items():
            self._handles.append(module.register_forward_pre_hook(self._pre(name)))
            self._handles.append(module.register_forward_hook(self._post(name)))
        policy._representation = self._wrap("representation", policy._representation)  # type: ignore[method-assign]

    def _wrap(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any) -> Any:
            self._pre(name)()
            out = fn(*args)
            self._post(name)()
            return out

        return timed

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def _pre(self, name: str) -> Callable[..., None]:
        def hook(*_: Any) -> None:
            self._sync()
            self._start[name] = time.perf_counter()

        return hook

    def _post(self, name: str) -> Callable[..., None]:
        def hook(*_: Any) -> None:
            self._sync()
            self.times[name].append(time.perf_counter() - self._start[name])

        return hook

    @contextmanager
    def fresh(self) -> Iterator[None]:
        """Forget what was timed so far (after warm-up)."""
        self.times.clear()
        yield


def _servo(
    config: str, overrides: list[str], device: torch.device, threads: int | None = None
) -> tuple[Servo, np.ndarray]:
    """A randomly initialised policy's Servo on a random desired image, and a shifted current image."""
    cfg = load_config(config, overrides).policy
    torch.manual_seed(0)
    policy = build_policy(cfg).to(device).eval()
    W, H = cfg.input_size
    rng = np.random.default_rng(0)
    desired = rng.integers(0, 255, (H, W, 3), dtype=np.uint8)
    current = np.roll(desired, (5, 9), axis=(0, 1))
    return Servo(policy, desired, Camera.canonical(W, H).K, scene_scale=1.0, threads=threads), current


def measure(config: str, overrides: list[str], device: torch.device, iters: int, warmup: int) -> dict[str, float]:
    """Median per-stage and per-step milliseconds of Servo.step for one config (at torch's current thread count)."""
    servo, current = _servo(config, overrides, device, threads=torch.get_num_threads())
    policy = servo.policy
    timer = StageTimer(policy, device)
    for _ in range(warmup):
        servo.step(current)
    steps = []
    with timer.fresh():
        for _ in range(iters):
            t0 = time.perf_counter()
            servo.step(current)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            steps.append(time.perf_counter() - t0)
        # Mean time per step of each stage (the desired image's backbone and fine features are cached).
        row = {s: 1e3 * sum(timer.times[s]) / iters if timer.times.get(s) else float("nan") for s in STAGES}
    row["step"] = 1e3 * float(np.median(steps))
    row["fps"] = 1e3 / row["step"]
    return row


# The load: matrix products in a loop at torch's own default thread count, as another torch program on the same
# computer would run (a trainer, a second model). Thread settings of this process are not passed on.
_BUSY = (
    "import torch\na = torch.randn(512, 512)\nprint(torch.get_num_threads(), flush=True)\nwhile True:\n    b = a @ a\n"
)
_THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OMP_WAIT_POLICY")


@contextmanager
def busy_torch(processes: int = 2) -> Iterator[list[int]]:
    """Run `processes` busy torch processes (default threads each) for the duration of the block; yields their
    thread counts."""
    env = {k: v for k, v in os.environ.items() if k not in _THREAD_VARS}
    procs = [
        subprocess.Popen([sys.executable, "-c", _BUSY], stdout=subprocess.PIPE, env=env, text=True)
        for _ in range(processes)
    ]
    try:
        threads = [p.stdout.readline().strip() if p.stdout is not None else "" for p in procs]
        if not all(t.isdigit() for t in threads):
            raise RuntimeError(f"a busy torch process did not start: {threads}")
        yield [int(t) for t in threads]
    finally:
        for p in procs:
            p.kill()
            p.wait()


def _median_step_ms(servo: Servo, current: np.ndarray, iters: int, warmup: int) -> float:
    for _ in range(warmup):
        servo.step(current)
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        servo.step(current)
        times.append(time.perf_counter() - t0)
    return 1e3 * float(np.median(times))


def measure_under_load(
    config: str, overrides: list[str], threads: list[int], iters: int, warmup: int, busy: int = 2
) -> tuple[dict[int, tuple[float, float]], list[int]]:
    """Median Servo.step ms on the CPU for each thread count, {threads: (idle ms, ms beside `busy` busy torch
    processes)}, and the busy processes' thread counts.

    Idle and loaded runs alternate per thread count, so a neighbour's load that comes and goes skews both alike.
    """
    servo, current = _servo(config, overrides, torch.device("cpu"))
    out: dict[int, tuple[float, float]] = {}
    busy_threads: list[int] = []
    for n in threads:
        set_torch_threads(n)
        idle = _median_step_ms(servo, current, iters, warmup)
        with busy_torch(busy) as started:
            loaded = _median_step_ms(servo, current, iters, warmup)
        out[n], busy_threads = (idle, loaded), started
    return out, busy_threads


def _load_table(args: argparse.Namespace, argv: list[str] | None) -> None:
    threads = sorted({SERVO_AUTO_THREADS, *args.load_threads})
    rows, busy = measure_under_load(args.load_config, args.overrides, threads, args.load_iters, args.warmup, args.busy)
    print(
        f"\nServo.step ({args.load_config}) on {usable_cpus()} usable CPUs, idle and beside {args.busy} busy torch "
        f"processes (matmuls at their default threads: {busy}); median of {args.load_iters} steps"
    )
    print("| threads | idle ms | loaded ms | loaded / idle |")
    print("|---|---|---|---|")
    for n, (idle, loaded) in rows.items():
        mark = " (Servo default)" if n == SERVO_AUTO_THREADS else ""
        print(f"| {n}{mark} | {idle:.1f} | {loaded:.1f} | {loaded / idle:.2f}x |")
    print(f"reproduce: python -m policy.bench {' '.join(sys.argv[1:] if argv is None else argv)}")


def main(argv: list[str] | None = None) -> int:
    """Print the table and the command that reproduces it."""
    p = argparse.ArgumentParser(prog="python -m policy.bench", description=__doc__)
    p.add_argument(
        "--configs", nargs="+", default=["smoke", "cpu", "paper"], help="configs to time (default: %(default)s)"
    )
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--iters", type=int, default=10, help="timed steps per config (default %(default)s)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--load-config", default="cpu", help="config of the idle/loaded table (default %(default)s)")
    p.add_argument("--load-threads", type=int, nargs="*", default=[1, 2], help="thread counts of that table")
    p.add_argument("--load-iters", type=int, default=20, help="timed steps per cell of that table")
    p.add_argument("--busy", type=int, default=2, help="busy torch processes beside the loaded runs")
    p.add_argument("--no-load", action="store_true", help="skip the idle/loaded table")
    p.add_argument("overrides", nargs="*", metavar="key.sub=value", help="config overrides for every config")
    args = p.parse_args(argv)
    default_threads = torch.get_num_threads()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU {platform.machine()}"
    print(f"Servo.step, batch 1, {name}, {torch.get_num_threads()} threads, torch {torch.__version__}")
    print("| config | input | backbone ms | transformer ms | P2G ms | fine ms | controller ms | Servo.step ms | FPS |")
    print("|---|---|---|---|---|---|---|---|---|")
    for config in args.configs:
        cfg = load_config(config, args.overrides).policy
        iters = args.iters if cfg.input_size[0] <= 256 or device.type == "cuda" else max(2, args.iters // 4)
        r = measure(config, args.overrides, device, iters, args.warmup)
        size = "x".join(map(str, cfg.input_size))
        print(
            f"| {config} ({cfg.backbone.model}) | {size} | {r['backbone']:.1f} | {r['transformer']:.1f} | "
            f"{r['representation']:.1f} | {r['fine']:.1f} | {r['controller']:.1f} | {r['step']:.1f} | {r['fps']:.1f} |"
        )
    print(f"reproduce: python -m policy.bench {' '.join(sys.argv[1:] if argv is None else argv)}")
    if device.type == "cpu" and not args.no_load:
        torch.set_num_threads(default_threads)
        _load_table(args, argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
