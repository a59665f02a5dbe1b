"""Trained CNSv2 policies shipped inside the package: `load_pretrained("cnsv2-cpu") -> (policy, meta)`.

Each lives in `policy/pretrained/<name>/` as an ordinary checkpoint (`model.safetensors` + `policy.json`, see
`policy.checkpoint`) plus `MODEL_CARD.md`: how it was trained (config, data counts, steps, wall time) and how it did
in closed loop. `make eval ARGS="eval.checkpoint=pretrained:<name>"` evaluates one. Nothing is downloaded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

PRETRAINED_DIR = Path(__file__).with_name("pretrained")
PREFIX = "pretrained:"

__all__ = ["PREFIX", "PRETRAINED_DIR", "available", "checkpoint_folder", "load_pretrained", "pretrained_path"]


def available() -> list[str]:
    """Names of the policies shipped with this package."""
    if not PRETRAINED_DIR.is_dir():
        return []
    return sorted(p.name for p in PRETRAINED_DIR.iterdir() if (p / "policy.json").is_file())


def pretrained_path(name: str) -> Path:
    """The checkpoint folder of the shipped policy `name` (a leading 'pretrained:' is accepted).

    Raises FileNotFoundError naming the policies that are shipped.
    """
    name = name.removeprefix(PREFIX)
    path = PRETRAINED_DIR / name
    if not name or "/" in name or not (path / "policy.json").is_file():
        raise FileNotFoundError(f"no pretrained policy {name!r}; shipped: {', '.join(available()) or 'none'}")
    return path


def checkpoint_folder(source: str) -> Path:
    """The folder that `pretrained:<name>` (the shipped policy's, as `pretrained_path`) or a path names (as given,
    not checked)."""
    return pretrained_path(source) if source.startswith(PREFIX) else Path(source)


def load_pretrained(name: str, device: str | torch.device = "cpu") -> tuple[Any, dict[str, Any]]:
    """Load the shipped policy `name` on `device` in eval mode; returns (CNSv2Policy, checkpoint metadata)."""
    from policy.checkpoint import load_checkpoint

    policy, meta = load_checkpoint(pretrained_path(name), device=device)
    return policy.eval(), meta
