"""Experiment tracking: which W&B mode a job logs in."""

from __future__ import annotations

import os

from configs.schema import WandbConfig


def wandb_mode(settings: WandbConfig) -> str:
    """WANDB_MODE from the environment wins (e.g. `online` after `wandb login`); else the mode of `settings`."""
    return os.environ.get("WANDB_MODE", settings.mode)
