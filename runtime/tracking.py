"""Experiment tracking: which W&B mode a job logs in."""

from __future__ import annotations

import os
from pathlib import Path

from configs.schema import WandbConfig


def wandb_mode(settings: WandbConfig) -> str:
    """WANDB_MODE from the environment wins (e.g. `online` after `wandb login`); else the mode of `settings`."""
    return os.environ.get("WANDB_MODE", settings.mode)


# W&B's settings for every job (`wandb.Settings` fields, as the environment variables the Ray workers inherit): quiet
# and no info drop W&B's banner (version, offline and sync hints, the run summary) but keep its warnings and errors,
# which `silent` would hide too. Each CLI prints where the W&B run went itself.
WANDB_ENV = {"WANDB_QUIET": "true", "WANDB_SHOW_INFO": "false"}


def wandb_settings() -> dict[str, bool]:
    """`WANDB_ENV` as `wandb.Settings` keyword arguments, for a W&B run in this process."""
    return {key.removeprefix("WANDB_").lower(): value == "true" for key, value in WANDB_ENV.items()}


def wandb_env(settings: WandbConfig) -> dict[str, str]:
    """The environment a job's workers log to W&B with: its mode (see `wandb_mode`) and `WANDB_ENV`."""
    return {"WANDB_MODE": wandb_mode(settings), **WANDB_ENV}


def wandb_run_dir(root: str | os.PathLike[str], run_id: str | None = None) -> Path | None:
    """The newest W&B run folder under `root`/wandb (offline-run-* or run-*), of `run_id` when given; None if none."""
    pattern = f"*run-*-{run_id}" if run_id else "*run-*"
    runs = [p for p in (Path(root) / "wandb").glob(pattern) if p.is_dir() and not p.is_symlink()]
    return max(runs, key=lambda p: p.stat().st_mtime, default=None)


def describe_wandb_run(mode: str, run: Path | None) -> str:
    """How a summary line names the W&B run: where it is and, offline, how to upload it."""
    if mode == "disabled":
        return "W&B disabled"
    if run is None:
        return f"W&B {mode}: no run folder found"
    if mode == "offline":
        return f"W&B offline run {run} (upload: wandb sync {run})"
    return f"W&B run {run}"
