"""Policy checkpoints: safetensors weights plus a JSON file with the config and the policy version.

A checkpoint is a directory `<name>/` holding `model.safetensors` and `policy.json`. It is written to a temporary
sibling and renamed into place, so a reader never sees half a checkpoint.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_model, save_model

from configs.schema import PolicyConfig
from policy.network import CNSv2Policy

FORMAT = "cnsv2-policy"
SCHEMA = 1
WEIGHTS, META, TRAINER = "model.safetensors", "policy.json", "trainer.pt"
# Keys that change the network's parameters; servo options, precision and losses may differ freely.
ARCHITECTURE = ("input_size", "backbone", "transformer", "controller")


def build_policy(cfg: PolicyConfig) -> CNSv2Policy:
    """Build a CNSv2 policy from its config (random initialisation, or backbone weights from a local file)."""
    policy = CNSv2Policy(cfg)
    if cfg.compile:
        # In-place compilation keeps parameter names, so checkpoints stay interchangeable with eager models.
        for module in (policy.backbone, policy.transformer, policy.controller):
            module.compile()
    return policy


def save_checkpoint(
    policy: CNSv2Policy,
    path: str | os.PathLike[str],
    version: int,
    trainer_state: dict[str, Any] | None = None,
    **extra: Any,
) -> Path:
    """Write `policy` to the directory `path` (replacing it atomically), stamped with `version`.

    `trainer_state` (optimizer, schedule, step) goes into the same directory, so weights and state appear together.
    """
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        save_model(policy, str(tmp / WEIGHTS))
        if trainer_state is not None:
            torch.save(trainer_state, tmp / TRAINER)
        meta = {
            "format": FORMAT,
            "schema": SCHEMA,
            "policy_version": int(version),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "policy": policy.cfg.model_dump(mode="json"),
            "extra": extra,
        }
        (tmp / META).write_text(json.dumps(meta, indent=1))
        if out.exists():
            old = out.with_name(f".{out.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def read_meta(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and check a checkpoint's JSON metadata."""
    p = Path(path)
    meta_file = p / META
    if not meta_file.is_file() or not (p / WEIGHTS).is_file():
        raise FileNotFoundError(f"{p}: not a policy checkpoint (expected {META} and {WEIGHTS} in it)")
    try:
        meta = json.loads(meta_file.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{meta_file}: corrupt checkpoint metadata ({err})") from err
    if meta.get("format") != FORMAT or meta.get("schema") != SCHEMA:
        raise ValueError(f"{meta_file}: unknown checkpoint format {meta.get('format')!r} schema {meta.get('schema')}")
    return meta


def load_checkpoint(
    path: str | os.PathLike[str], cfg: PolicyConfig | None = None, device: str | torch.device = "cpu"
) -> tuple[CNSv2Policy, dict[str, Any]]:
    """Load a checkpoint; with `cfg`, its architecture must match the saved one. Returns (policy, metadata)."""
    meta = read_meta(path)
    saved = PolicyConfig.model_validate(meta["policy"])
    if cfg is not None:
        diffs = [k for k in ARCHITECTURE if getattr(cfg, k) != getattr(saved, k)]
        if diffs:
            detail = "; ".join(
                f"policy.{k}: checkpoint {getattr(saved, k)!r} != config {getattr(cfg, k)!r}" for k in diffs
            )
            raise ValueError(f"{path}: checkpoint does not fit the configured network ({detail})")
        saved = saved.model_copy(update={k: getattr(cfg, k) for k in ("servo", "precision", "compile", "loss")})
    # The saved weights replace everything, so a timm weights file is not needed (or read) here. A radio_hub backbone
    # keeps its file: RADIO's hubconf builds the architecture from it (and would download without it).
    build_cfg = saved
    if saved.backbone.kind != "radio_hub":
        build_cfg = saved.model_copy(update={"backbone": saved.backbone.model_copy(update={"weights": None})})
    policy = CNSv2Policy(build_cfg)
    policy.cfg = saved
    try:
        missing, unexpected = load_model(policy, str(Path(path) / WEIGHTS), strict=False, device=str(device))
    except RuntimeError as err:  # shape mismatches
        raise ValueError(f"{path}: weights do not match the network: {str(err).splitlines()[-1].strip()}") from err
    if missing or unexpected:
        raise ValueError(
            f"{path}: weights do not match the network: missing {missing[:8]}, unexpected {unexpected[:8]}"
        )
    return policy.to(device), meta


def load_trainer_state(path: str | os.PathLike[str], device: str | torch.device = "cpu") -> dict[str, Any] | None:
    """The optimizer/schedule/step state saved with a checkpoint, or None for a weights-only checkpoint."""
    f = Path(path) / TRAINER
    if not f.is_file():
        return None
    return torch.load(f, map_location=device, weights_only=False)


def latest_checkpoint(directory: str | os.PathLike[str]) -> Path | None:
    """The checkpoint with the highest policy_version under `directory` (None when there is none)."""
    best: tuple[int, Path] | None = None
    root = Path(directory)
    if not root.is_dir():
        return None
    for meta in root.glob(f"*/{META}"):
        try:
            version = int(json.loads(meta.read_text())["policy_version"])
        except (OSError, ValueError, KeyError):
            continue  # a checkpoint being written, or a foreign file
        if best is None or version > best[0]:
            best = (version, meta.parent)
    return None if best is None else best[1]
