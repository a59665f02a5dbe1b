"""`python -m training.gpu_check --out DIR`: the prepared GPU check, one run of at most 8 minutes on one H100/H200-class
GPU, writing a small report (`DIR/gpu_check.md`, `DIR/gpu_check.json`, every stage's output in `DIR/gpu_check.log`).

Stages, each in its own process with its own time budget (a stage that overruns is killed and reported, the rest go
on; the whole run stops at `--budget` seconds, 470 by default):

| stage | measures |
|---|---|
| environment | Python, torch, CUDA, the GPU, CPUs: what the numbers were measured on |
| install | the project's dependencies from pyproject.toml, installed where missing (torch stays the machine's) |
| servo_paper | Servo.step FPS of the paper config, 512 px: bf16, policy.compile=true, desired cached, batch 1 |
| servo_shipped | the same for the shipped policy (cnsv2-cpu: 256 px network, 512 px camera, four quarter turns) |
| train_paper, train_cpu | training samples/s (forward, backward, AdamW): paper config, CPU recipe; 512 px, batch 32 |
| render | MuJoCo EGL renders/s (RGB + depth) at 512 px |
| datagen_1, _4, _12 | hemisphere pairs/s with 1, 4 and 12 producer processes at 512 px |

The datagen stages run `datagen.hemisphere.HemisphereProducer`, the body of a Ray hemisphere actor, in N spawned
processes rather than Ray actors: Ray's wheel is larger than what travels to a machine without a package index, and
its steady-state rate is the producer's (docs/benchmarks.md). The rate is all pairs over the span from the first
producer's start to the last one's end.

`--install` installs what the project lists in pyproject.toml that the machine lacks, with a constraints file pinning
the machine's CUDA stack and numpy (`PINNED`) as they are; torch and torchvision themselves are never installed.
Without a package index, pass `--wheels DIR` (docs/deployment.md says how to fetch them). A dependency that cannot be
installed is reported and the stages that need it fail on their own.

`--dry-run` runs every stage on the CPU at tiny sizes (the smoke config at 64 px, one step, one actor, compile with the
eager backend) in one child process, and only plans the installation: it checks the plumbing of every step except the
GPU. Only the standard library is imported at module level, so that `--install` can run before the dependencies exist.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BUDGET_S = 470.0  # 8 minutes, less the start-up of the interpreter and a margin for writing the report
GPU_SIZE = 512  # px: the paper's camera and network input
TRAIN_BATCH = 32
NOT_INSTALLED = (
    "torch",  # the machine's CUDA build stays (the project pins a CPU one), and so does its torchvision
    "torchvision",
    "ray",  # no stage uses these: the producers run as processes, nothing logs to W&B or matches with LightGlue
    "wandb",
    "scm-lightglue",
)
# What `--install` may not move: the machine's CUDA stack and numpy, which its compiled packages were built against.
# Anything else may be upgraded to what pyproject.toml asks (timm's RADIO models need timm >= 1.0.31, say).
PINNED = re.compile(r"(torch|torchvision|torchaudio|triton|numpy|nvidia-.*|cuda-.*)")
# Left out of a dry run: the same code as datagen_1 with more processes, which a 2-core machine only queues.
DRY_SKIP = ("datagen_4", "datagen_12")


@dataclass(frozen=True)
class Stage:
    """One measurement: `budget_s` on the GPU (its process is killed past it), `fn(ctx) -> rows`."""

    name: str
    budget_s: float
    fn: Callable[[Context], list[dict[str, Any]]]


@dataclass
class Context:
    """What a stage needs to know: the device, whether this is a dry run, a scratch folder, stage parameters."""

    device: str
    dry_run: bool
    work: Path
    params: dict[str, str]
    budget_s: float

    def deadline(self, start: float, share: float = 0.5) -> float:
        """A wall-clock time by which a stage's timed loop stops: `share` of its budget after `start`."""
        return start + share * self.budget_s


def row(measurement: str, value: float | str, unit: str = "", detail: str = "") -> dict[str, Any]:
    """One line of the report."""
    return {"measurement": measurement, "value": value, "unit": unit, "detail": detail}


# ------------------------------------------------------------------------------------------------------------------
# stages (each runs in a child process: heavy imports stay inside)


def _stage_environment(ctx: Context) -> list[dict[str, Any]]:
    import torch

    rows = [
        row("python", platform.python_version()),
        row("torch", torch.__version__),
        row("CPUs", os.cpu_count() or 0, "", platform.processor() or platform.machine()),
    ]
    if ctx.device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise RuntimeError("no CUDA GPU visible to torch; run with --dry-run on a machine without one")
        props = torch.cuda.get_device_properties(0)
        rows += [
            row("GPU", props.name, "", f"{props.total_memory / 2**30:.0f} GiB, {props.multi_processor_count} SMs"),
            row("CUDA", str(torch.version.cuda)),
        ]
        smi = shutil.which("nvidia-smi")
        if smi:
            out = subprocess.run(
                [smi, "--query-gpu=driver_version", "--format=csv,noheader"], capture_output=True, text=True, timeout=30
            )
            rows.append(row("driver", out.stdout.strip() or "unknown"))
    else:
        rows.append(row("GPU", "none (dry run on the CPU)" if ctx.dry_run else "none"))
    return rows


def project_dependencies(pyproject: Path = ROOT / "pyproject.toml") -> list[str]:
    """The requirement strings of `[project] dependencies` in pyproject.toml, less `NOT_INSTALLED`."""
    import tomllib

    deps = tomllib.loads(pyproject.read_text())["project"]["dependencies"]
    return [d for d in deps if _requirement_name(d) not in NOT_INSTALLED]


def _requirement_name(req: str) -> str:
    m = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", req)
    if not m:
        raise ValueError(f"pyproject.toml: cannot read the requirement {req!r}")
    return re.sub(r"[-_.]+", "-", m.group(1)).lower()


def install_command(reqs: list[str], constraints: Path, wheels: str | None) -> list[str]:
    """The pip command that installs `reqs` with `constraints` pinning what may not change (`PINNED`)."""
    index = ["--no-index", "--find-links", wheels] if wheels else []
    return [
        sys.executable,
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
        "-c",
        str(constraints),
        *index,
        *reqs,
    ]


def _pinned_summary(pins: list[str]) -> str:
    main = [p for p in pins if _requirement_name(p) in ("torch", "torchvision", "torchaudio", "triton", "numpy")]
    return f"{', '.join(main)} and {len(pins) - len(main)} nvidia/cuda packages stay as they are"


def _stage_install(ctx: Context) -> list[dict[str, Any]]:
    reqs = project_dependencies()
    frozen = subprocess.run(
        [sys.executable, "-m", "pip", "list", "--format=freeze"],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout
    pins = [ln for ln in frozen.splitlines() if "==" in ln and PINNED.fullmatch(_requirement_name(ln))]
    constraints = ctx.work / "constraints.txt"
    constraints.write_text("\n".join(pins) + "\n")
    wheels = ctx.params.get("wheels") or None
    cmd = install_command(reqs, constraints, wheels)
    if ctx.dry_run:
        return [
            row("planned", len(reqs), "requirements", " ".join(cmd[3:]).replace(str(constraints), "CONSTRAINTS")),
            row("pinned", len(pins), "installed packages", _pinned_summary(pins)),
        ]
    failed = []
    if subprocess.run(cmd, timeout=ctx.budget_s).returncode != 0:
        # One at a time, to name what cannot be installed (no wheel, a pin it would have to move).
        for req in reqs:
            if subprocess.run(install_command([req], constraints, wheels), timeout=ctx.budget_s).returncode != 0:
                failed.append(req)
    return [
        row(
            "installed or present",
            len(reqs) - len(failed),
            f"of {len(reqs)}",
            "failed: " + ", ".join(failed) if failed else "all",
        )
    ]


def _servo_images(size: int) -> tuple[Any, Any]:
    from policy.export import fixed_inputs

    desired, current = fixed_inputs((size, size), batch=1)
    return desired[0], current[0]


def _time_servo(ctx: Context, policy: Any, size: int, label: str) -> list[dict[str, Any]]:
    import numpy as np
    import torch

    from policy.servo import Servo
    from sim.camera import Camera

    desired, current = _servo_images(size)
    t0 = time.perf_counter()
    servo = Servo(policy, desired, Camera.canonical(size).K, scene_scale=1.0, threads=1)
    for _ in range(1 if ctx.dry_run else 5):  # compilation happens here (and once more for the quarter-turn batch)
        servo.step(current)
    warm = time.perf_counter() - t0
    steps: list[float] = []
    start, n_max = time.perf_counter(), 1 if ctx.dry_run else 500
    while len(steps) < n_max and time.perf_counter() < ctx.deadline(start, 0.3):
        t = time.perf_counter()
        out = servo.step(current)
        if policy_device(policy).type == "cuda":
            torch.cuda.synchronize()
        steps.append(time.perf_counter() - t)
    if not out.ok:
        raise RuntimeError(f"{label}: Servo.step gave a non-finite velocity")
    ms = 1e3 * np.asarray(steps)
    cfg = policy.cfg
    precision = cfg.precision if policy_device(policy).type == "cuda" else "fp32 (CPU)"
    detail = (
        f"median of {len(steps)} steps, p90 {np.percentile(ms, 90):.2f} ms; network {cfg.input_size[0]} px "
        f"{cfg.backbone.model}, camera {size} px, {precision}, compile {ctx.params['compile']}, desired cached, "
        f"batch {4 if cfg.rot90 else 1} in the network; warm-up incl. compile {warm:.0f} s"
    )
    return [
        row(f"Servo.step, {label}", round(1e3 / float(np.median(ms)), 1), "FPS", detail),
        row(f"Servo.step latency, {label}", round(float(np.median(ms)), 2), "ms", ""),
    ]


def policy_device(policy: Any) -> Any:
    """The device of a torch policy's parameters."""
    return next(policy.parameters()).device


def _compile(ctx: Context, policy: Any) -> Any:
    from policy.checkpoint import compile_modules

    backend = ctx.params["compile"]
    return compile_modules(policy, backend=backend) if backend != "off" else policy


def _stage_servo_paper(ctx: Context) -> list[dict[str, Any]]:
    import torch

    from configs import load_config
    from policy.checkpoint import build_policy

    name, overrides = ("smoke", _tiny()) if ctx.dry_run else ("paper", [])
    # Built eager, then compiled here, so that a dry run can compile with the eager backend.
    cfg = load_config(name, [*overrides, "policy.compile=false"]).policy
    torch.manual_seed(0)
    policy = _compile(ctx, build_policy(cfg).to(ctx.device).eval())
    return _time_servo(ctx, policy, cfg.input_size[0] if ctx.dry_run else GPU_SIZE, f"{name} config")


def _stage_servo_shipped(ctx: Context) -> list[dict[str, Any]]:
    from policy.pretrained import load_pretrained

    policy, _ = load_pretrained("cnsv2-cpu", device=ctx.device)
    # bf16 is what the shipped policy's config asks for (autocast on CUDA only). The dry run leaves compilation to
    # servo_paper (the same compile_modules): compiling XFeat's batch of four quarter turns costs ten seconds there.
    policy = policy if ctx.dry_run else _compile(ctx, policy)
    return _time_servo(ctx, policy, 128 if ctx.dry_run else GPU_SIZE, "shipped cnsv2-cpu")


def _tiny() -> list[str]:
    return ["policy.input_size=[64,64]", "sim.camera.width=64", "sim.camera.height=64"]


def synthetic_batch(cfg: Any, batch: int, device: str) -> dict[str, Any]:
    """A training batch of random images, labels and coarse matches in the shapes the trainer's loader gives."""
    import torch

    W, H = cfg.policy.input_size
    h, w = H // 16, W // 16
    g = torch.Generator().manual_seed(0)
    out = {
        "cur": torch.rand(batch, 3, H, W, generator=g),
        "des": torch.rand(batch, 3, H, W, generator=g),
        "vel": 0.3 * torch.randn(batch, 6, generator=g),
    }
    if cfg.policy.loss.aux_match > 0:
        out["coarse_match"] = torch.rand(batch, h, w, 2, generator=g) * torch.tensor([w - 1, h - 1])
        out["coarse_valid"] = torch.rand(batch, h, w, generator=g) > 0.3
    return {k: v.to(device) for k, v in out.items()}


def _train_rate(ctx: Context, name: str, overrides: list[str], label: str) -> list[dict[str, Any]]:
    import torch

    from configs import load_config
    from training.trainer import TrainState, _optimiser_step

    batch = 2 if ctx.dry_run else TRAIN_BATCH
    cfg = load_config(name, [*overrides, f"train.batch_size={batch}", f"run.root={ctx.work / 'runs'}"])
    torch.manual_seed(0)
    state = TrainState(cfg, torch.device(ctx.device))
    data = synthetic_batch(cfg, batch, ctx.device)

    def batches():  # type: ignore[no-untyped-def]
        while True:
            yield data

    it = batches()
    for _ in range(1 if ctx.dry_run else 3):
        _optimiser_step(state, state.policy, it, world=1)
    sync = torch.cuda.synchronize if ctx.device.startswith("cuda") else (lambda: None)
    sync()
    start, steps = time.perf_counter(), 0
    while steps < (1 if ctx.dry_run else 200) and time.perf_counter() < ctx.deadline(start, 0.35):
        result = _optimiser_step(state, state.policy, it, world=1)
        steps += 1
    sync()
    dt = time.perf_counter() - start
    if not all(v == v for v in result.losses.values()):
        raise RuntimeError(f"{label}: non-finite training loss {result.losses}")
    p = cfg.policy
    trainable = sum(x.numel() for x in state.params) / 1e6
    detail = (
        f"{steps} steps of forward + backward + AdamW on fixed random batches, batch {batch}, "
        f"{p.input_size[0]} px, {p.backbone.model}{' (frozen)' if p.backbone.freeze else ''}, "
        f"{trainable:.1f} M trainable, {p.precision if ctx.device.startswith('cuda') else 'fp32 (CPU)'}, "
        f"compile {p.compile}"
    )
    return [row(f"training, {label}", round(steps * batch / dt, 1), "samples/s", detail)]


def _stage_train_paper(ctx: Context) -> list[dict[str, Any]]:
    name, overrides = ("smoke", _tiny()) if ctx.dry_run else ("paper", [])
    return _train_rate(ctx, name, overrides, f"{name} config")


def _stage_train_cpu(ctx: Context) -> list[dict[str, Any]]:
    size = 64 if ctx.dry_run else GPU_SIZE
    overrides = [f"policy.input_size=[{size},{size}]", f"sim.camera.width={size}", f"sim.camera.height={size}"]
    return _train_rate(ctx, "cpu", overrides, f"cpu recipe at {size} px")


def _datagen_config(ctx: Context, actors: int, per_actor: int, root: Path) -> tuple[str, list[str]]:
    size = 64 if ctx.dry_run else GPU_SIZE
    shard = 5 if ctx.dry_run else 20
    name = "smoke" if ctx.dry_run else "default"
    return name, [
        f"run.root={root}",
        f"sim.camera.width={size}",
        f"sim.camera.height={size}",
        f"policy.input_size=[{size},{size}]",
        f"datagen.hemisphere.actors={actors}",
        f"datagen.hemisphere.samples={actors * per_actor}",
        f"datagen.hemisphere.shard_samples={shard}",
        "datagen.dagger.samples=0",
    ]


def _stage_render(ctx: Context) -> list[dict[str, Any]]:
    from configs import load_config
    from sim.camera import Camera
    from sim.poses import sample_pose
    from sim.render import make_renderer
    from sim.scene_sampler import SceneSampler
    from sim.seeds import Stream, rng_for

    name, overrides = _datagen_config(ctx, 1, 10, ctx.work / "render")
    cfg = load_config(name, overrides).sim
    c = cfg.camera
    renderer = make_renderer(
        cfg.renderer.backend, c.width, c.height, shadows=cfg.renderer.shadows, shadow_size=cfg.renderer.shadow_size
    )
    try:
        renderer.load(SceneSampler(cfg.scene, cfg.assets).sample(rng_for(0, Stream.SCENE)))
        gl = _gl_renderer()
        K, rng = Camera.canonical(c.width, c.height).K, rng_for(0, Stream.POSES)
        poses = [sample_pose(rng, cfg.poses.desired) for _ in range(32)]
        renderer.render(K, poses[0])
        start, n = time.perf_counter(), 0
        while n < (2 if ctx.dry_run else 5000) and time.perf_counter() < ctx.deadline(start, 0.4):
            renderer.render(K, poses[n % len(poses)])
            n += 1
        rate = n / (time.perf_counter() - start)
    finally:
        renderer.close()
    gl_platform = os.environ.get("MUJOCO_GL", "?")
    detail = f"{n} renders of one smoke-style scene, RGB + depth, MuJoCo/{gl_platform}, GL renderer: {gl}"
    return [row(f"MuJoCo renders/s at {c.width} px", round(rate, 1), "renders/s", detail)]


def _gl_renderer() -> str:
    try:
        from OpenGL import GL

        name = GL.glGetString(GL.GL_RENDERER)
        return name.decode() if isinstance(name, bytes) else str(name)
    except Exception as err:  # PyOpenGL missing, or no current context in this thread: the rate still stands
        return f"unknown ({type(err).__name__})"


def _producer(name: str, overrides: list[str], offset: int, stride: int, queue: Any) -> None:
    """One hemisphere producer process: its shards, its sample count and its run's wall-clock span."""
    from configs import load_config
    from datagen.actors import apply_threads
    from datagen.hemisphere import HemisphereProducer

    cfg = load_config(name, overrides)
    apply_threads(cfg.datagen.hemisphere)  # as a Ray actor does: its num_cpus
    producer = HemisphereProducer(cfg, offset, stride)
    t0 = time.time()
    stats = producer.run()
    t1 = time.time()
    producer.close()
    queue.put((offset, int(stats["samples"]), t0, t1))


def _stage_datagen(ctx: Context) -> list[dict[str, Any]]:
    import multiprocessing as mp

    actors = int(ctx.params["actors"])
    per_actor = int(ctx.params.get("per_actor") or (10 if ctx.dry_run else 120))
    name, overrides = _datagen_config(ctx, actors, per_actor, ctx.work / f"datagen{actors}")
    spawn = mp.get_context("spawn")  # a fresh interpreter each, like an actor: no forked torch or GL state
    queue = spawn.Queue()
    procs = [spawn.Process(target=_producer, args=(name, overrides, i, actors, queue)) for i in range(actors)]
    for p in procs:
        p.start()
    results = [queue.get(timeout=ctx.budget_s) for _ in procs]
    for p in procs:
        p.join()
        if p.exitcode != 0:
            raise RuntimeError(f"a producer process exited with {p.exitcode}")
    samples = sum(r[1] for r in results)
    span = max(r[3] for r in results) - min(r[2] for r in results)
    size = 64 if ctx.dry_run else GPU_SIZE
    detail = (
        f"{samples} pairs ({per_actor} per process) in {span:.1f} s, {name} config at {size} px, "
        f"{actors} spawned HemisphereProducer processes (a Ray actor's body), shards written and validated"
    )
    return [row(f"datagen, {actors} hemisphere producer(s)", round(samples / span, 1), "pairs/s", detail)]


STAGES = {
    s.name: s
    for s in (
        Stage("environment", 25, _stage_environment),
        Stage("install", 45, _stage_install),
        Stage("servo_paper", 110, _stage_servo_paper),
        Stage("servo_shipped", 60, _stage_servo_shipped),
        Stage("train_paper", 55, _stage_train_paper),
        Stage("train_cpu", 45, _stage_train_cpu),
        Stage("render", 25, _stage_render),
        Stage("datagen_1", 40, _stage_datagen),
        Stage("datagen_4", 35, _stage_datagen),
        Stage("datagen_12", 35, _stage_datagen),
    )
}


def _stage_params(name: str, args: argparse.Namespace, earlier: dict[str, dict[str, Any]]) -> dict[str, str]:
    params = {"compile": "eager" if args.dry_run else "inductor", "wheels": args.wheels or ""}
    if name.startswith("datagen_"):
        params["actors"] = name.split("_")[1]
        first = earlier.get("datagen_1", {})
        if first.get("status") == "ok" and not args.dry_run:
            # Size the larger runs from one producer's rate: ~8 s of work each at that rate, whatever the machine,
            # which leaves room in the stage's budget for start-up and for producers slowed by sharing the CPUs.
            rate = float(first["rows"][0]["value"])
            params["per_actor"] = str(int(min(400, max(20, rate * 8))))
    return params


# ------------------------------------------------------------------------------------------------------------------
# the child: runs stages, one result file each


def _child(
    names: list[str],
    results: Path,
    device: str,
    dry_run: bool,
    params: dict[str, dict[str, str]],
    budgets: dict[str, float],
) -> int:
    from file_io import write_json

    for name in names:
        start = time.perf_counter()
        print(f"== {name}", flush=True)
        # Under the parent's scratch folder, which the parent removes, also after killing this process.
        work = results / f"work-{name}"
        work.mkdir(parents=True, exist_ok=True)
        ctx = Context(device, dry_run, work, params.get(name, {}), budgets[name])
        try:
            out = {"status": "ok", "rows": STAGES[name].fn(ctx)}
        except Exception as err:  # a failed stage is reported; the next one still runs
            import traceback

            traceback.print_exc()
            out = {"status": "failed", "rows": [], "error": f"{type(err).__name__}: {err}"}
        finally:
            shutil.rmtree(work, ignore_errors=True)
        out["seconds"] = round(time.perf_counter() - start, 1)
        write_json(results / f"{name}.json", out, indent=1, allow_nan=True)
        print(f"== {name}: {out['status']} in {out['seconds']} s", flush=True)
    return 0


def run_group(
    names: list[str],
    timeout: float,
    args: argparse.Namespace,
    results: Path,
    log: Any,
    params: dict[str, dict[str, str]],
    budgets: dict[str, float],
) -> dict[str, dict[str, Any]]:
    """Run `names` in one child process for at most `timeout` s (its process group is killed past it); returns each
    stage's result, `timeout` for those that had not finished."""
    spec = json.dumps({"params": params, "budgets": budgets})
    cmd = [
        sys.executable,
        "-m",
        "training.gpu_check",
        "--child",
        ",".join(names),
        "--results",
        str(results),
        "--device",
        args.device,
        "--spec",
        spec,
    ] + (["--dry-run"] if args.dry_run else [])
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if not args.dry_run:
        env.setdefault("MUJOCO_GL", "egl")  # the GPU's EGL; the probe in sim.mujoco_gl would take OSMesa on failure
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        proc.wait(timeout=max(timeout, 0.1))
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the stage and the producer processes it spawned
        proc.wait()
    out = {}
    for name in names:
        f = results / f"{name}.json"
        if f.is_file():
            out[name] = json.loads(f.read_text())
        else:
            err = (
                f"killed after its budget of {timeout:.0f} s"
                if proc.returncode == -signal.SIGKILL
                else (f"the stage process exited with {proc.returncode} (see the log)")
            )
            out[name] = {
                "status": "timeout" if proc.returncode == -signal.SIGKILL else "failed",
                "rows": [],
                "error": err,
                "seconds": None,
            }
    return out


# ------------------------------------------------------------------------------------------------------------------
# the report


def _value(r: dict[str, Any]) -> str:
    return f"{r['value']} {r['unit']}".strip()


def report_markdown(meta: dict[str, Any], results: dict[str, dict[str, Any]]) -> str:
    """The report's markdown: a header naming the machine, one table row per measurement, the goals."""
    env = {r["measurement"]: r for r in results.get("environment", {}).get("rows", [])}

    def get(key: str, field: str = "value", default: str = "?") -> Any:
        return env.get(key, {}).get(field, default)

    lines = [
        "# CNSv2 GPU check" + (" (dry run on the CPU: plumbing only, no GPU numbers)" if meta["dry_run"] else ""),
        "",
        f"{meta['date']}, {get('GPU')}{f' ({d})' if (d := get('GPU', 'detail', '')) else ''}, torch {get('torch')} "
        f"(CUDA {get('CUDA', default='-')}, driver {get('driver', default='-')}), {get('CPUs')} CPUs, commit "
        f"{meta['commit']}. `{meta['command']}`: "
        f"{meta['seconds']:.0f} s of a {meta['budget_s']:.0f} s budget.",
        "",
        "| stage | measurement | value | detail | status | s |",
        "|---|---|---|---|---|---|",
    ]
    for name, res in results.items():
        if name == "environment" and res["status"] == "ok":
            continue  # it is the header line
        status = res["status"] if res["status"] == "ok" else f"{res['status']}: {res.get('error', '')}"
        for r in res["rows"] or [row("-", "-")]:
            lines.append(f"| {name} | {r['measurement']} | {_value(r)} | {r['detail']} | {status} | {res['seconds']} |")
    if meta["dry_run"]:
        lines += ["", f"Not run in a dry run: {', '.join(DRY_SKIP)} (datagen_1's code with more processes)."]
    fps = next((r["value"] for r in results.get("servo_paper", {}).get("rows", []) if r["unit"] == "FPS"), None)
    if not meta["dry_run"] and isinstance(fps, int | float):
        verdict = "met" if fps >= 200 else "not met"
        lines += ["", f"Goal, paper config Servo.step >= 200 FPS on an H100-class GPU: {verdict} ({fps} FPS)."]
    return "\n".join(lines) + "\n"


def _commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10
        )
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def main(argv: list[str] | None = None) -> int:
    """Run the check (or, with --child, the stages a parent gave this process); exit 1 if a stage did not finish ok."""
    p = argparse.ArgumentParser(prog="python -m training.gpu_check", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", help="report folder (gpu_check.md, gpu_check.json, gpu_check.log)")
    p.add_argument("--dry-run", action="store_true", help="every stage on the CPU at tiny sizes; install only planned")
    p.add_argument("--budget", type=float, default=BUDGET_S, help="seconds for the whole run (default %(default)s)")
    p.add_argument("--install", action="store_true", help="install the project's missing dependencies first")
    p.add_argument("--wheels", help="a folder of wheels to install from (no package index)")
    p.add_argument("--stages", help=f"comma-separated subset of {','.join(STAGES)}")
    p.add_argument("--device", default=None, help="default cuda (cpu for --dry-run)")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--results", help=argparse.SUPPRESS)
    p.add_argument("--spec", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.argv = sys.argv[1:] if argv is None else list(argv)
    args.device = args.device or ("cpu" if args.dry_run else "cuda")
    args.wheels = str(Path(args.wheels).resolve()) if args.wheels else None  # stages run from the repository root
    if args.child:
        spec = json.loads(args.spec)
        return _child(
            args.child.split(","), Path(args.results), args.device, args.dry_run, spec["params"], spec["budgets"]
        )
    if not args.out:
        p.error("--out DIR is required")
    names = args.stages.split(",") if args.stages else [n for n in STAGES if not (args.dry_run and n in DRY_SKIP)]
    unknown = [n for n in names if n not in STAGES]
    if unknown:
        p.error(f"unknown stages {unknown}; choose from {', '.join(STAGES)}")
    if "install" in names and not (args.install or args.dry_run):
        names.remove("install")
    return run_check(args, names)


def run_check(args: argparse.Namespace, names: list[str]) -> int:
    """Run the stages (the dry run in one child, the GPU check one child per stage), write the report, print a
    summary line; 0 when every stage finished ok."""
    from file_io import write_json, write_text

    t0 = time.perf_counter()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    budgets = {n: (max(STAGES[n].budget_s, 120.0) if args.dry_run else STAGES[n].budget_s) for n in names}
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="cnsv2-gpu-check-") as tmp, open(out / "gpu_check.log", "w") as log:
        # On the GPU one process per stage, each with its own budget; the dry run in one process (start-up is most of
        # its time). The environment comes first: without a GPU nothing after it means anything.
        groups = [names] if args.dry_run else [[n] for n in names]
        for group in groups:
            left = args.budget - (time.perf_counter() - t0)
            timeout = min(sum(budgets[n] for n in group), left - 5.0)
            broken = results.get("environment", {}).get("status") not in (None, "ok")
            if timeout < 5.0 or broken:
                why = "the environment stage failed" if broken else "no time left in the budget"
                for n in group:
                    results[n] = {"status": "skipped", "rows": [], "error": why, "seconds": 0}
                continue
            print(f"{', '.join(group)} (budget {timeout:.0f} s) ...", flush=True)
            params = {n: _stage_params(n, args, results) for n in group}
            log.write(f"\n######## {', '.join(group)}\n")
            log.flush()
            results.update(run_group(group, timeout, args, Path(tmp), log, params, budgets))
            for n in group:
                r = results[n]
                shown = "; ".join(f"{x['measurement']}: {_value(x)}" for x in r["rows"][:2]) or r.get("error", "")
                print(f"  {n}: {r['status']} {shown}", flush=True)
    meta = {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": " ".join(["python -m training.gpu_check", *args.argv]),
        "dry_run": args.dry_run,
        "device": args.device,
        "budget_s": args.budget,
        "seconds": round(time.perf_counter() - t0, 1),
        "commit": _commit(),
    }
    write_json(out / "gpu_check.json", {"meta": meta, "stages": results}, indent=1, allow_nan=True)
    write_text(out / "gpu_check.md", report_markdown(meta, results))
    ok = sum(r["status"] == "ok" for r in results.values())
    print(f"gpu_check: {ok}/{len(results)} stages ok in {meta['seconds']:.0f} s; report: {out / 'gpu_check.md'}")
    return 0 if ok == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())
