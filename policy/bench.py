"""`python -m policy.bench`: Servo.step latency and FPS at batch 1 with the desired image cached, broken down by network
stage, on whatever device is here: the smoke config, the shipped CPU policies and the paper config, each on torch and
(on a CPU) on its ONNX export through onnxruntime (`policy.export`, `Servo(runtime="onnx")`); then, on a CPU,
Servo.step idle and beside two busy torch processes at 1 and 2 threads (`runtime.threads`).

Configs get random weights (speed does not depend on them); `pretrained:NAME` times a shipped policy. A policy that
searches the four quarter turns (`policy.rot90`) gets a row per `--turn-search-every` N: a search on one step in N, the
turn in use alone between; its step time is the mean over N consecutive steps (median over the cycles); `--repeat R`
times every row R times and prints the medians and the step's range. ONNX stage times are the kernel times
onnxruntime's profiler attributes to each stage's nodes (by the module scope and source file the exporter records for
every node); torch's are wall times between forward hooks.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

from configs import load_config
from configs.schema import PolicyConfig, ServoConfig
from policy.checkpoint import build_policy
from policy.network import CNSv2Policy
from policy.pretrained import PREFIX, available, load_pretrained
from policy.servo import Servo
from runtime.threads import SERVO_AUTO_THREADS, set_torch_threads, usable_cpus
from sim.camera import Camera

STAGES = ("backbone", "transformer", "representation", "fine", "controller")
# The CPU policy and its real-time variants (192 px; 256 px with a cached desired stream and fewer blocks).
SHIPPED = ("pretrained:cnsv2-cpu", "pretrained:cnsv2-cpu-192", "pretrained:cnsv2-cpu-rt")


class StageTimer:
    """Wall time per network stage via forward hooks (synchronising CUDA so that times are real)."""

    def __init__(self, policy: CNSv2Policy, device: torch.device) -> None:
        self.device = device
        self.times: dict[str, list[float]] = defaultdict(list)
        self._start: dict[str, float] = {}
        self._handles = []
        modules = {"backbone": policy.backbone, "transformer": policy.transformer, "controller": policy.controller}
        if policy.transformer.cache_desired:  # the network calls its step, not its forward
            del modules["transformer"]
            policy.transformer.step = self._wrap("transformer", policy.transformer.step)  # type: ignore[method-assign]
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


def load_target(target: str, overrides: list[str], device: torch.device) -> CNSv2Policy:
    """The policy a bench row times: a config name (random weights, seed 0) or `pretrained:NAME` (a shipped policy)."""
    if target.startswith(PREFIX):
        policy, _ = load_pretrained(target, device=device)
        return policy
    cfg = load_config(target, overrides).policy
    torch.manual_seed(0)
    return build_policy(cfg).to(device).eval()


def bench_images(cfg: PolicyConfig) -> tuple[np.ndarray, np.ndarray]:
    """A random desired image at the policy's input size and a shifted current image (the canonical camera)."""
    W, H = cfg.input_size
    rng = np.random.default_rng(0)
    desired = rng.integers(0, 255, (H, W, 3), dtype=np.uint8)
    return desired, np.roll(desired, (5, 9), axis=(0, 1))


def _searching(cfg: PolicyConfig, every: int) -> ServoConfig:
    """The policy's servo settings with a quarter-turn search on one step in `every`."""
    return cfg.servo.model_copy(update={"turn_search_every": every})


def _servo(
    config: str, overrides: list[str], device: torch.device, threads: int | None = None, every: int = 1
) -> tuple[Servo, np.ndarray]:
    """A Servo of `config` (see `load_target`) on a random desired image, and a shifted current image."""
    policy = load_target(config, overrides, device)
    desired, current = bench_images(policy.cfg)
    K = Camera.canonical(*policy.cfg.input_size).K
    return Servo(policy, desired, K, scene_scale=1.0, threads=threads, cfg=_searching(policy.cfg, every)), current


def _time_steps(servo: Servo, current: np.ndarray, iters: int, device: torch.device | None) -> list[float]:
    steps = []
    for _ in range(iters):
        t0 = time.perf_counter()
        servo.step(current)
        if device is not None and device.type == "cuda":
            torch.cuda.synchronize(device)
        steps.append(time.perf_counter() - t0)
    return steps


def cycle_ms(steps: list[float], every: int) -> float:
    """Milliseconds per step from step times in seconds: the median over consecutive cycles of `every` steps of the
    cycle's mean (one quarter-turn search and every-1 cheaper steps); the median step for every = 1. ValueError for
    fewer steps than one cycle."""
    if every < 1 or len(steps) < every:
        raise ValueError(f"need at least one cycle of {every} steps, got {len(steps)}")
    n = len(steps) // every
    return 1e3 * float(np.median(np.asarray(steps[: n * every]).reshape(n, every).mean(axis=1)))


def measure(
    config: str, overrides: list[str], device: torch.device, iters: int, warmup: int, every: int = 1
) -> dict[str, float]:
    """Per-step milliseconds of Servo.step for one config (at torch's current thread count; `cycle_ms`) and each
    stage's mean per step; `every`: the quarter-turn search's period."""
    servo, current = _servo(config, overrides, device, threads=torch.get_num_threads(), every=every)
    policy = servo.policy
    timer = StageTimer(policy, device)
    for _ in range(warmup):
        servo.step(current)
    with timer.fresh():
        steps = _time_steps(servo, current, iters, device)
        # Mean time per step of each stage (the desired image's backbone and fine features are cached).
        row = {s: 1e3 * sum(timer.times[s]) / iters if timer.times.get(s) else float("nan") for s in STAGES}
    row["step"] = cycle_ms(steps, every)
    row["fps"] = 1e3 / row["step"]
    return row


# The module scope each bench stage's exported nodes carry (policy.export wraps the P2G method as a module).
_STAGE_SCOPES = (
    ("fine", "policy.fine"),
    ("backbone", "policy.backbone"),
    ("controller", "policy.controller"),
    ("transformer", "policy.transformer"),
    ("representation", "policy.representation"),
)


def _scope_stage(meta: dict[str, str]) -> str:
    """The bench stage of one exported node (its metadata_props), from the module scopes torch.onnx records."""
    scopes = ast.literal_eval(meta.get("pkg.torch.onnx.name_scopes", "[]")) or []
    # A module's scope and its submodules' ('policy.fine.encoder': FineFeatures.encode is a method, not a forward).
    for stage, module in _STAGE_SCOPES:
        if any(s == module or s.startswith(module + ".") for s in scopes):
            return stage
    return "other"


def onnx_stage_map(step_graph: str | os.PathLike[str]) -> dict[str, str]:
    """{node name or output name: stage} of an exported step graph (`policy.export`)."""
    import onnx

    stages = {}
    for node in onnx.load(str(step_graph), load_external_data=False).graph.node:
        stage = _scope_stage({p.key: p.value for p in node.metadata_props})
        stages[node.name] = stage
        for name in node.output:
            stages.setdefault(name, stage)
    return stages


def profile_stages(trace: str | os.PathLike[str], stages: dict[str, str], steps: int) -> dict[str, float]:
    """Mean kernel milliseconds per step of each stage in an onnxruntime profile (JSON trace) of `steps` steps.

    onnxruntime renames the nodes it rewrites (NCHWc convolutions, fusions): a name is looked up as is, then without
    the suffix the rewrite added, then it takes the stage of the node executed before it.
    """
    events = json.loads(Path(trace).read_text())
    # Only the last `steps` runs: the first runs of a session allocate and are slower.
    runs = sorted((e["ts"], e["ts"] + e["dur"]) for e in events if e.get("name") == "model_run")[-steps:]
    times: dict[str, float] = defaultdict(float)
    previous = "other"
    for event in sorted(events, key=lambda e: e.get("ts", 0)):
        name = event.get("name", "")
        if event.get("cat") != "Node" or not name.endswith("_kernel_time"):
            continue
        if not any(start <= event["ts"] <= end for start, end in runs):
            continue
        base = name.removesuffix("_kernel_time")
        stage = stages.get(base) or stages.get(re.sub(r"(_nchwc|_token_\d+)+$", "", base)) or previous
        times[stage] += float(event.get("dur", 0.0))
        previous = stage
    return {s: times[s] / 1e3 / steps if s in times else float("nan") for s in STAGES}


def measure_onnx(
    policy: CNSv2Policy, folder: str | os.PathLike[str], iters: int, warmup: int, threads: int, every: int = 1
) -> dict[str, float]:
    """Servo.step milliseconds (`cycle_ms`) on the export `folder` of `policy` (onnxruntime, `threads` intra-op
    threads), its stages from a second, profiled run, and `dv`: max |velocity_unit onnx - torch| over the timed
    frame; `every`: the quarter-turn search's period."""
    from policy.onnx_policy import OnnxPolicy

    desired, current = bench_images(policy.cfg)
    K = Camera.canonical(*policy.cfg.input_size).K
    servo_cfg = _searching(policy.cfg, every)
    servo = Servo(folder, desired, K, scene_scale=1.0, threads=threads, runtime="onnx", cfg=servo_cfg)
    for _ in range(warmup):
        servo.step(current)
    steps = _time_steps(servo, current, iters, None)
    row = {"step": cycle_ms(steps, every)}
    row["fps"] = 1e3 / row["step"]
    profiled_policy = OnnxPolicy(folder, threads=threads, profile=True)
    profiled = Servo(profiled_policy, desired, K, scene_scale=1.0, threads=threads, runtime="onnx", cfg=servo_cfg)
    n = max(every, iters // 2)
    for _ in range(warmup + n):
        profiled.step(current)
    trace = profiled_policy.end_profiling()
    try:
        row.update(profile_stages(trace, onnx_stage_map(Path(folder) / "step.onnx"), n))
    finally:
        Path(trace).unlink(missing_ok=True)
    reference = Servo(policy, desired, K, scene_scale=1.0, threads=torch.get_num_threads(), cfg=servo_cfg)
    onnx_servo = Servo(folder, desired, K, scene_scale=1.0, threads=threads, runtime="onnx", cfg=servo_cfg)
    # The same first step on both runtimes (a search, where the policy searches).
    row["dv"] = float(np.max(np.abs(onnx_servo.step(current).velocity_unit - reference.step(current).velocity_unit)))
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
    return 1e3 * float(np.median(_time_steps(servo, current, iters, None)))


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


def _default_targets() -> list[str]:
    shipped = [p for p in SHIPPED if p.removeprefix(PREFIX) in available()]
    return ["smoke", *(shipped or ["cpu"]), "paper"]


def _row_name(target: str, cfg: PolicyConfig, every: int) -> str:
    turns = "" if not cfg.rot90 else ", 4 quarter turns" + (f", searched every {every} steps" if every > 1 else "")
    return f"{target} ({cfg.backbone.model}{turns})"


def _fmt(row: dict[str, float], key: str) -> str:
    v = row.get(key, float("nan"))
    return "-" if v != v else f"{v:.1f}"


def over_runs(runs: list[dict[str, float]]) -> dict[str, float]:
    """One row from the same row's runs (`--repeat`): the median of each column (FPS from the median step), the
    fastest and slowest run's step ms as `step_min`, `step_max`, the largest `dv`. ValueError for no runs."""
    if not runs:
        raise ValueError("no runs to summarise")
    steps = [r["step"] for r in runs]
    row = {k: float(np.median([r.get(k, float("nan")) for r in runs])) for k in runs[0] if k not in ("fps", "dv")}
    row.update(fps=1e3 / row["step"], step_min=min(steps), step_max=max(steps))
    if "dv" in runs[0]:
        row["dv"] = max(r["dv"] for r in runs)
    return row


def _print_row(name: str, runtime: str, size: str, r: dict[str, float], repeat: int = 1) -> None:
    stages = " | ".join(_fmt(r, s) for s in STAGES)
    dv = f"{r['dv']:.1e}" if "dv" in r else "-"
    spread = f" {r['step_min']:.1f}-{r['step_max']:.1f} |" if repeat > 1 else ""
    print(f"| {name} | {runtime} | {size} | {stages} | {r['step']:.1f} |{spread} {r['fps']:.1f} | {dv} |")


@contextmanager
def _exported(target: str, overrides: list[str]) -> Iterator[tuple[CNSv2Policy, Path]]:
    """The target's policy and its export in a temporary folder (removed on exit), shared by its rows."""
    from policy.export import export_policy

    policy = load_target(target, overrides, torch.device("cpu"))
    tmp = tempfile.mkdtemp(prefix="cnsv2-bench-onnx-")
    try:
        yield policy, export_policy(policy, Path(tmp) / "export", check=False)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _latency_table(args: argparse.Namespace, device: torch.device, runtimes: list[str]) -> None:
    """Time every (target, search period, runtime) row `args.repeat` times, the rows in turn, and print the table."""
    spread = " Servo.step ms, fastest-slowest run |" if args.repeat > 1 else ""
    print(
        "| policy | runtime | input | backbone ms | transformer ms | P2G ms | fine ms | controller ms | "
        f"Servo.step ms |{spread} FPS | max abs dv vs torch |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|" + ("---|" if args.repeat > 1 else ""))
    runs: dict[tuple[str, int, str], list[dict[str, float]]] = defaultdict(list)
    cfgs = {target: load_target(target, args.overrides, torch.device("cpu")).cfg for target in args.configs}
    with ExitStack() as stack:
        exports: dict[str, tuple[CNSv2Policy, Path]] = {}  # exported once per target, for every period and run
        for run in range(args.repeat):
            for target, cfg in cfgs.items():
                iters = args.iters if cfg.input_size[0] <= 256 or device.type == "cuda" else max(2, args.iters // 4)
                for every in args.turn_search_every if cfg.rot90 else [1]:
                    n = every * -(-iters // every)  # whole search cycles
                    for runtime in runtimes:
                        if runtime == "torch":
                            r = measure(target, args.overrides, device, n, args.warmup, every)
                        else:
                            if target not in exports:
                                exports[target] = stack.enter_context(_exported(target, args.overrides))
                            r = measure_onnx(*exports[target], n, args.warmup, torch.get_num_threads(), every)
                        runs[(target, every, runtime)].append(r)
                        if run == args.repeat - 1:
                            name, size = _row_name(target, cfg, every), "x".join(map(str, cfg.input_size))
                            _print_row(name, runtime, size, over_runs(runs[(target, every, runtime)]), args.repeat)
            if args.repeat > 1 and run < args.repeat - 1:
                print(f"run {run + 1}/{args.repeat} timed", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    """Print the table and the command that reproduces it."""
    p = argparse.ArgumentParser(prog="python -m policy.bench", description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--configs", nargs="+", default=_default_targets(),
        help="configs (random weights) or pretrained:NAME to time (default: %(default)s)",
    )  # fmt: skip
    p.add_argument(
        "--runtimes", nargs="+", choices=("torch", "onnx"), default=["torch", "onnx"],
        help="torch, and onnx (CPU only: the policy exported, then onnxruntime) (default: %(default)s)",
    )  # fmt: skip
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--iters", type=int, default=10, help="timed steps per config (default %(default)s)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument(
        "--repeat", type=int, default=1, metavar="R",
        help="time every row R times, the rows in turn, and print the medians and the range of the step time: on a "
        "shared or throttling machine one run can be off by half (default %(default)s)",
    )  # fmt: skip
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument(
        "--turn-search-every", type=int, nargs="+", default=[1, 8], metavar="N",
        help="quarter-turn policies: a row per search period N (policy.servo.turn_search_every) (default %(default)s)",
    )  # fmt: skip
    p.add_argument("--load-config", default="cpu", help="config of the idle/loaded table (default %(default)s)")
    p.add_argument("--load-threads", type=int, nargs="*", default=[1, 2], help="thread counts of that table")
    p.add_argument("--load-iters", type=int, default=20, help="timed steps per cell of that table")
    p.add_argument("--busy", type=int, default=2, help="busy torch processes beside the loaded runs")
    p.add_argument("--no-load", action="store_true", help="skip the idle/loaded table")
    p.add_argument("overrides", nargs="*", metavar="key.sub=value", help="config overrides for every config")
    args = p.parse_args(argv)
    if min(args.turn_search_every) < 1:
        p.error(f"--turn-search-every: each N must be >= 1, got {args.turn_search_every}")
    if args.repeat < 1:
        p.error(f"--repeat: must be >= 1, got {args.repeat}")
    default_threads = torch.get_num_threads()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU {platform.machine()}"
    runtimes = [r for r in args.runtimes if r == "torch" or (device.type == "cpu" and _onnx_missing() is None)]
    if "onnx" in args.runtimes and "onnx" not in runtimes:
        print(f"onnx rows skipped: {_onnx_missing() or 'onnxruntime runs on the CPU here; use --device cpu'}")
    print(
        f"Servo.step, batch 1, desired image cached, fp32 on the CPU, {name}, {torch.get_num_threads()} threads, "
        f"torch {torch.__version__}{_ort_version() if 'onnx' in runtimes else ''}"
    )
    _latency_table(args, device, runtimes)
    print(f"reproduce: python -m policy.bench {' '.join(sys.argv[1:] if argv is None else argv)}")
    if device.type == "cpu" and not args.no_load:
        torch.set_num_threads(default_threads)
        _load_table(args, argv)
    return 0


def _onnx_missing() -> str | None:
    """What the onnx rows lack (a package to install), or None."""
    import importlib.util

    missing = [m for m in ("onnx", "onnxscript", "onnxruntime") if importlib.util.find_spec(m) is None]
    return f"pip install {' '.join(missing)}" if missing else None


def _ort_version() -> str:
    try:
        import onnxruntime
    except ImportError:
        return ", onnxruntime not installed"
    return f", onnxruntime {onnxruntime.__version__}"


if __name__ == "__main__":
    sys.exit(main())
