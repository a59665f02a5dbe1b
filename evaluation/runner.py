"""`python -m evaluation` (`make eval`): closed-loop servo benchmark of CNSv2 against classical servoing.

Every (suite, controller) pair runs the same `eval.episodes` episodes (seeds eval.seed + i), in parallel on Ray
actors where cores allow. Results go to eval.root (runs/<run.name>/eval/): results.md, results.json,
episodes.jsonl, error-vs-step curves and 3-D camera paths (PNG), and W&B (eval.wandb) unless it is disabled.
Finished episodes are appended to eval.root/episodes.partial.jsonl as they come; eval.resume=true carries on from it
after a crash or a stop, running only the episodes it lacks.
Examples:
  python -m evaluation
  python -m evaluation eval.suites=[canonical] eval.controllers=[oracle,sift_pbvs] eval.episodes=20
  python -m evaluation --config paper eval.checkpoint=runs/paper/checkpoints/step_050000
  python -m evaluation eval.suites=[lighting] eval.controllers=[disk_pbvs] eval.resume=true
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from configs import add_config_arguments
from configs.loader import ConfigError
from configs.schema import Config
from evaluation.metrics import Episode
from evaluation.plan import Job, Plan, check_plan_assets, make_plan, prepare_export
from policy.control import CNS_GAIN
from policy.interface import Controller
from policy.registry import ControllerSetup, make_controller

if TYPE_CHECKING:
    from policy.network import CNSv2Policy
    from policy.onnx_policy import OnnxPolicy
    from sim.env import ServoEnv


class EvalWorker:
    """Runs episodes; keeps one environment (the current suite's) and the CNSv2 weights between episodes."""

    def __init__(
        self, configs: dict[str, Config], checkpoint: str | None, device: str = "cpu", runtime: str = "torch"
    ) -> None:
        """`checkpoint`: CNSv2's checkpoint folder, or with `runtime` "onnx" its ONNX export folder."""
        self.configs, self.checkpoint, self.device, self.runtime = configs, checkpoint, device, runtime
        self._suite: str | None = None
        self._env: ServoEnv | None = None
        self._policy: CNSv2Policy | OnnxPolicy | None = None

    def _env_for(self, suite: str) -> ServoEnv:
        if self._env is None or suite != self._suite:
            from sim.env import ServoEnv

            if self._env is not None:
                self._env.close()
            self._env, self._suite = ServoEnv(self.configs[suite].sim), suite
        return self._env

    def _load_policy(self) -> CNSv2Policy | OnnxPolicy:
        if self._policy is None:
            if self.checkpoint is None:
                raise ValueError("a CNSv2 controller needs a checkpoint")
            if self.runtime == "onnx":
                from policy.onnx_policy import OnnxPolicy

                self._policy = OnnxPolicy(self.checkpoint)
            else:
                from policy.checkpoint import load_checkpoint

                self._policy, _ = load_checkpoint(self.checkpoint, device=self.device)
        return self._policy

    def _controller(self, suite: str, name: str, env: ServoEnv) -> Controller:
        cfg = self.configs[suite]
        # Every controller gets the same speed limits; only CNSv2 loads the weights, only the oracle reads the env;
        # the learned matchers run on eval.device.
        setup = ControllerSetup(
            servo=cfg.policy.servo,
            stop_velocity=cfg.eval.stop_velocity,
            stop_steps=cfg.eval.stop_steps,
            gain=CNS_GAIN,
            load_policy=self._load_policy,
            env=env,
            device=self.device,
        )
        return make_controller(name, setup)

    def run(self, job: Job) -> tuple[Job, Episode]:
        """Run one episode."""
        from evaluation.episodes import run_episode

        env = self._env_for(job.suite)
        servo = self.configs[job.suite].policy.servo
        controller = self._controller(job.suite, job.controller, env)
        limits = (servo.max_linear, servo.max_angular)
        return job, run_episode(env, controller, job.seed, gain=CNS_GAIN, limits=limits)

    def close(self) -> None:
        """Release the renderer."""
        if self._env is not None:
            self._env.close()
            self._env = self._suite = None


def worker_count(cfg: Config, jobs: int) -> int:
    """Ray actors to start: eval.workers, or one per CPU, never more than there are episodes (0: in-process)."""
    n = cfg.eval.workers if cfg.eval.workers is not None else (os.cpu_count() or 1)
    return min(n, jobs)


def run_jobs(
    cfg: Config, plan: Plan, on_result: Callable[[Job, Episode], None] | None = None
) -> list[tuple[Job, Episode]]:
    """Run every job, in this process (eval.workers = 0) or on Ray actors; results in the order of plan.jobs."""
    n = worker_count(cfg, len(plan.jobs))
    results: dict[Job, Episode] = {}

    def done(job: Job, ep: Episode) -> None:
        results[job] = ep
        if on_result is not None:
            on_result(job, ep)

    prepare_export(cfg, plan)
    if n == 0:
        worker = EvalWorker(plan.configs, *_policy_source(cfg, plan))
        try:
            for job in plan.jobs:
                done(*worker.run(job))
        finally:
            worker.close()
    else:
        _run_on_ray(cfg, plan, n, done)
    return [(j, results[j]) for j in plan.jobs]


def _policy_source(cfg: Config, plan: Plan) -> tuple[str | None, str, str]:
    """EvalWorker's (checkpoint, device, runtime): the ONNX export for eval.runtime onnx, else the checkpoint."""
    if cfg.eval.runtime == "onnx":
        return plan.export, cfg.eval.device, "onnx"
    return plan.checkpoint, cfg.eval.device, "torch"


def _run_on_ray(cfg: Config, plan: Plan, n: int, done: Callable[[Job, Episode], None]) -> None:
    import ray
    from ray.util import ActorPool

    from runtime.ray_cluster import init_ray

    started = init_ray(cfg, min_cpus=n)
    # A GPU run shares the GPU between the actors; one CPU each keeps MuJoCo and OpenCV from oversubscribing.
    gpus = 1.0 / n if cfg.eval.device == "cuda" else 0.0
    Remote = ray.remote(num_cpus=1, num_gpus=gpus)(EvalWorker)
    actors = [Remote.remote(plan.configs, *_policy_source(cfg, plan)) for _ in range(n)]
    try:
        pool = ActorPool(actors)
        for job, ep in pool.map_unordered(lambda a, j: a.run.remote(j), plan.jobs):
            done(job, ep)
    finally:
        for a in actors:
            ray.kill(a)
        if started:
            ray.shutdown()


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark, write the report and print a one-line summary."""
    parser = argparse.ArgumentParser(
        prog="python -m evaluation", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_config_arguments(parser)
    args = parser.parse_args(argv)
    from runtime.ray_cluster import check_local_backend
    from sim.asset_catalogue import AssetFolderError
    from sim.isaac_backend import IsaacUnavailable

    try:  # every check before Ray starts
        cfg, plan = make_plan(args.config, args.overrides)
        for suite_cfg in plan.configs.values():
            check_local_backend(suite_cfg)
        check_plan_assets(plan)
    except (ConfigError, FileNotFoundError, IsaacUnavailable, AssetFolderError) as err:
        parser.exit(2, f"{parser.prog}: error: {err}\n")
    for note in plan.followed.notes() if plan.followed else []:
        print(f"{parser.prog}: note: {note}", file=sys.stderr)
    if cfg.eval.runtime == "onnx" and plan.checkpoint is not None:
        print(f"{parser.prog}: CNSv2 on onnxruntime, from {plan.checkpoint}", file=sys.stderr)
        prepare_export(cfg, plan, echo=lambda line: print(f"{parser.prog}: export: {line}", file=sys.stderr))
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from evaluation.partial import PARTIAL, PartialLogError, append_partial, resume_partial, settings_digest
    from evaluation.report import write_report

    settings = {s.name: settings_digest(plan.configs[s.name], plan.checkpoint) for s in plan.suites}
    if cfg.eval.resume:
        try:
            kept = resume_partial(cfg.eval.root, plan.jobs, settings)
        except PartialLogError as err:
            parser.exit(2, f"{parser.prog}: error: eval.resume: {err}\n")
        print(f"{parser.prog}: resuming: {len(kept)} of {len(plan.jobs)} episodes kept from {PARTIAL}", file=sys.stderr)
    else:
        # A fresh partial file per run: lines of an earlier, unfinished run would mix with this one's.
        (Path(cfg.eval.root) / PARTIAL).unlink(missing_ok=True)
        kept = {}
    t0 = time.time()
    successes = sum(ep.success for ep in kept.values())
    logged = len(kept)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    try:
        with Progress(*columns) as progress:
            task = progress.add_task("episodes", total=len(plan.jobs), completed=len(kept))

            def show(job: Job, ep: Episode) -> None:
                nonlocal successes, logged
                successes += ep.success
                desc = f"{job.suite}/{job.controller} seed {job.seed}: {'ok' if ep.success else ep.reason or 'failed'}"
                progress.update(task, advance=1, description=desc)
                append_partial(cfg.eval.root, job, ep, settings[job.suite])
                logged += 1
                if not progress.console.is_terminal:  # a log file gets one line per episode instead of a bar
                    n = int(progress.tasks[0].completed)
                    progress.console.print(f"[{n}/{len(plan.jobs)}] {desc}", highlight=False)

            todo = replace(plan, jobs=[j for j in plan.jobs if j not in kept])
            ran = dict(run_jobs(cfg, todo, show)) if todo.jobs else {}
        results = [(j, kept[j] if j in kept else ran[j]) for j in plan.jobs]
        report = write_report(cfg, plan, results)
    except KeyboardInterrupt:  # Ctrl-C: what was measured is kept; say how to carry on instead of a traceback
        parser.exit(
            130,
            f"{parser.prog}: interrupted; {logged} of {len(plan.jobs)} episodes are kept in "
            f"{Path(cfg.eval.root) / PARTIAL}: add eval.resume=true to the same command to run the rest\n",
        )
    from runtime.tracking import describe_wandb_run, wandb_mode

    resumed = f", {len(kept)} resumed" if kept else ""
    print(
        f"eval: {len(results)} episodes ({successes} successes{resumed}) over {len(plan.suites)} suites in "
        f"{time.time() - t0:.0f} s; table {report.markdown}; episodes, curves and paths in {report.markdown.parent}; "
        + describe_wandb_run(wandb_mode(cfg.eval.wandb), report.wandb_run)
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
