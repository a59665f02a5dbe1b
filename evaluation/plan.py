"""What a benchmark run measures: every suite's config, one job per (suite, controller, seed), and the CNSv2
checkpoint when a CNSv2 controller is among them."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from configs import Followed, load_following_data
from configs.loader import ConfigError
from configs.schema import Config
from evaluation.suites import Suite, load_suite, suite_config

CNSV2 = ("cnsv2", "cnsv2_pbvs")  # the controllers that need network weights


@dataclass(frozen=True)
class Job:
    """One episode to run."""

    suite: str
    controller: str
    seed: int


@dataclass
class Plan:
    """Everything a benchmark needs: the suites with their configs, the jobs and the CNSv2 checkpoint."""

    suites: list[Suite]
    configs: dict[str, Config]
    jobs: list[Job]
    checkpoint: str | None
    followed: Followed | None = None  # how the configs followed the run's dataset (None: no dataset recorded)
    assets: dict[str, dict[str, Any]] = field(default_factory=dict)  # per suite: asset sources and split counts
    export: str | None = None  # eval.runtime onnx: the ONNX export folder that CNSv2 runs from (`prepare_export`)


def resolve_checkpoint(cfg: Config, controllers: Sequence[str]) -> str | None:
    """The CNSv2 checkpoint folder (absolute) when a CNSv2 controller is measured; a clear error when there is none.

    `eval.checkpoint` is a folder (with eval.runtime onnx, also an ONNX export folder) or `pretrained:<name>`;
    without it, the newest checkpoint under `train.checkpoints` (what `make pipeline` wrote) is measured.
    """
    if not any(c in CNSV2 for c in controllers):
        return None
    from policy.checkpoint import latest_checkpoint
    from policy.pretrained import checkpoint_folder

    path = checkpoint_folder(cfg.eval.checkpoint) if cfg.eval.checkpoint else latest_checkpoint(cfg.train.checkpoints)
    if path is None or not path.is_dir():
        where = cfg.eval.checkpoint or f"under {cfg.train.checkpoints}"
        raise FileNotFoundError(
            f"no CNSv2 checkpoint {where}: run `make pipeline` (or `make train`) first, point eval.checkpoint at a "
            f"checkpoint folder, or leave cnsv2 out, e.g. eval.controllers=[oracle,sift_pbvs,orb_pbvs,sift_ibvs]"
        )
    return str(path.resolve())


def make_plan(base: str | os.PathLike[str], overrides: Sequence[str] = ()) -> tuple[Config, Plan]:
    """Load the run config and every suite's config, and list the episodes (sorted by suite, so actors reuse envs).

    The configs follow the run's dataset (`configs.follow_data`): its sim settings replace the config file's, then
    the suites and the command line apply."""
    followed = load_following_data(base, overrides)
    cfg = followed.cfg
    suites = [load_suite(name) for name in cfg.eval.suites]
    configs = {s.name: suite_config(base, s, overrides, followed.defaults()) for s in suites}
    jobs = [
        Job(s.name, c, cfg.eval.seed + i)
        for s in suites
        for c in cfg.eval.controllers
        if s.applies_to(c)
        for i in range(cfg.eval.episodes)
    ]
    if not jobs:
        raise ConfigError([f"eval.controllers {cfg.eval.controllers} measure nothing in suites {cfg.eval.suites}"])
    measured = sorted({j.controller for j in jobs})
    plan = Plan(suites, configs, jobs, resolve_checkpoint(cfg, measured), followed if followed.root else None)
    return cfg, plan


def prepare_export(cfg: Config, plan: Plan, echo: Callable[[str], None] | None = None) -> None:
    """With eval.runtime onnx and CNSv2 measured, set `plan.export`, the folder of ONNX graphs the workers run.

    An `eval.checkpoint` that is an export folder (`python -m policy.export`) runs as it is. A checkpoint or shipped
    policy is exported once per run to <eval.root>/onnx, parity with torch checked (`policy.export.export_source`,
    whose errors it raises). Nothing happens for the torch runtime, without CNSv2, or when `plan.export` is set.
    """
    if cfg.eval.runtime != "onnx" or plan.checkpoint is None or plan.export is not None:
        return
    from policy.onnx_policy import SIDECAR

    if (Path(plan.checkpoint) / SIDECAR).is_file():
        plan.export = plan.checkpoint
        return
    from policy.export import export_source

    plan.export = str(export_source(plan.checkpoint, Path(cfg.eval.root) / "onnx", echo=echo))


def check_plan_assets(plan: Plan) -> None:
    """Check every suite's asset folders before any episode runs (AssetFolderError naming key and path) and record
    each suite's asset sources and split counts in `plan.assets`, for the report."""
    from sim.asset_catalogue import check_assets

    plan.assets = {name: check_assets(c.sim.assets).summary() for name, c in plan.configs.items()}
