"""Policy checkpoints: safetensors weights plus a JSON file with the config and the policy version.

A checkpoint is a directory `<name>/` holding `model.safetensors` and `policy.json`. It is written to a temporary
sibling and renamed into place, so a reader never sees half a checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
import warnings
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_model, save_model

from configs.provenance import flatten
from configs.schema import PolicyConfig
from file_io import atomic_dir
from policy.network import CNSv2Policy

FORMAT = "cnsv2-policy"
SCHEMA = 1
WEIGHTS, META, TRAINER = "model.safetensors", "policy.json", "trainer.pt"
# Keys that change the network's parameters; servo options, precision and losses may differ freely.
ARCHITECTURE = ("input_size", "backbone", "transformer", "controller")
# What a warm start (`train.init_from`) may change. Every layer works on any patch grid, so weights trained at one
# input size start another; caching the desired stream changes no parameter; and a shallower stack of blocks takes
# the first blocks of a deeper one (each block is a residual update, so the first ones are a network of their own).
WARM_START_FREE = ("policy.input_size", "policy.transformer.cache_desired")
WARM_START_SHALLOWER = ("policy.transformer.depth", "policy.controller.depth")


def build_policy(cfg: PolicyConfig) -> CNSv2Policy:
    """Build a CNSv2 policy from its config (random initialisation, or backbone weights from a local file)."""
    policy = CNSv2Policy(cfg)
    if cfg.compile:
        compile_modules(policy)
    return policy


def compile_modules(policy: CNSv2Policy, **options: Any) -> CNSv2Policy:
    """torch.compile the backbone, the feature transformer and the velocity head of `policy` in place (what
    `policy.compile: true` does) and return it; `options` go to `nn.Module.compile` (e.g. `backend="eager"`).

    In-place compilation keeps parameter names, so checkpoints stay interchangeable with eager models.
    """
    for module in (policy.backbone, policy.transformer, policy.controller):
        module.compile(**options)
    t = policy.transformer
    if t.cache_desired:  # the network calls these two methods, not the compiled forward
        t.encode_desired, t.step = torch.compile(t.encode_desired, **options), torch.compile(t.step, **options)  # type: ignore[method-assign]
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
    # The temporary folder's name starts with a dot: checkpoint listings skip it.
    with atomic_dir(out) as tmp:
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
            # safetensors and torch.save carry no checksum of their own: a damaged file could load as weights.
            "sha256": {f.name: _sha256(f) for f in (tmp / WEIGHTS, tmp / TRAINER) if f.is_file()},
        }
        (tmp / META).write_text(json.dumps(meta, indent=1))
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


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return "sha256:" + h.hexdigest()


class DamagedCheckpointError(ValueError):
    """A checkpoint whose files are not what was saved (truncated, altered or missing)."""


def check_architecture(
    path: str | os.PathLike[str],
    meta: dict[str, Any],
    cfg: PolicyConfig,
    sections: tuple[str, ...] = ARCHITECTURE,
    free: tuple[str, ...] = (),
    shallower: tuple[str, ...] = (),
) -> PolicyConfig:
    """The saved PolicyConfig; ValueError in one line naming the folder and every differing key of `sections`
    except the keys in `free`. A key in `shallower` (a depth) may be smaller in `cfg` than saved, not larger."""
    saved = PolicyConfig.model_validate(meta["policy"])
    old = flatten(saved.model_dump(mode="json"), "policy.")
    new = flatten(cfg.model_dump(mode="json"), "policy.")
    keys = [
        k
        for k in sorted(set(old) | set(new))
        if k.split(".")[1] in sections
        and old.get(k) != new.get(k)
        and k not in free
        and not (k in shallower and int(new[k]) < int(old[k]))
    ]
    if keys:
        detail = "; ".join(f"{k}: checkpoint {old.get(k)!r} != config {new.get(k)!r}" for k in keys)
        raise ValueError(f"{path}: checkpoint does not fit the configured network ({detail})")
    return saved


def verify_checkpoint(path: str | os.PathLike[str], *, trainer_state: bool = False) -> dict[str, Any]:
    """Check that a checkpoint's files are whole: metadata, the weights' header and, where recorded, every file's
    sha256. With `trainer_state`, the optimizer/schedule state must be there too. Returns the metadata;
    DamagedCheckpointError naming the folder and the file otherwise."""
    from safetensors import safe_open

    p = Path(path)
    if not p.is_dir():
        raise FileNotFoundError(f"{p}: not a policy checkpoint (no such folder)")
    try:
        meta = read_meta(p)
    except (FileNotFoundError, ValueError) as err:
        raise DamagedCheckpointError(str(err)) from None
    if trainer_state and not (p / TRAINER).is_file():
        raise DamagedCheckpointError(f"{p}: no {TRAINER} (optimizer, schedule and step): cannot resume from it")
    for name, digest in (meta.get("sha256") or {}).items():
        f = p / name
        if name == TRAINER and not trainer_state and not f.is_file():
            continue  # weights alone load fine (a shipped policy leaves the optimiser state behind)
        if not f.is_file():
            raise DamagedCheckpointError(f"{p}: {name} is missing")
        if _sha256(f) != digest:
            raise DamagedCheckpointError(f"{p}: {name} differs from what was saved (sha256 mismatch)")
    try:
        with safe_open(str(p / WEIGHTS), framework="pt") as f:
            f.keys()
    except Exception as err:
        raise DamagedCheckpointError(f"{p}: {WEIGHTS} is unreadable ({type(err).__name__}: {err})") from None
    return meta


def resume_point(directory: str | os.PathLike[str], cfg: PolicyConfig) -> Path | None:
    """The checkpoint a trainer resumes from: the newest under `directory` that is whole and has trainer state.

    Damaged or partly written newer ones are skipped with a RuntimeWarning naming them (never loaded); folders
    starting with '.' are writes in progress or killed and are ignored. ValueError in one line when that checkpoint
    was made for another network (naming the folder and the keys), or when checkpoints exist but none is usable.
    None when there are none.
    """
    skipped = []
    for path in _checkpoints_newest_first(directory):
        try:
            meta = verify_checkpoint(path, trainer_state=True)
        except DamagedCheckpointError as err:
            skipped.append(str(err))
            warnings.warn(f"not resuming from a damaged checkpoint: {err}", RuntimeWarning, stacklevel=2)
            continue
        check_architecture(path, meta, cfg)
        return path
    if skipped:
        raise ValueError(f"{directory}: no usable checkpoint to resume from: " + "; ".join(skipped))
    return None


def warm_start_point(source: str, cfg: PolicyConfig) -> Path:
    """The checkpoint whose weights a new run starts from (`train.init_from`): a folder or `pretrained:<name>`.

    Its network must be the configured one except what `WARM_START_FREE` and `WARM_START_SHALLOWER` name: the input
    size and the desired stream's caching may differ, and the transformer and the controller may be shallower (they
    take the checkpoint's first blocks, `load_warm_start`). Returns the folder; FileNotFoundError,
    DamagedCheckpointError, or a one-line ValueError naming the folder and every differing key.
    """
    from policy.pretrained import checkpoint_folder

    path = checkpoint_folder(source)
    if not path.is_dir():
        raise FileNotFoundError(f"train.init_from {source!r}: not a policy checkpoint (no such folder)")
    meta = verify_checkpoint(path)
    check_architecture(path, meta, cfg, free=WARM_START_FREE, shallower=WARM_START_SHALLOWER)
    return path


def load_warm_start(policy: CNSv2Policy, path: str | os.PathLike[str], device: str | torch.device = "cpu") -> list[str]:
    """Load a `warm_start_point` checkpoint's weights into `policy`; every parameter of `policy` must come from it.

    A shallower transformer or controller takes the checkpoint's first blocks; returns the names of the checkpoint's
    tensors left out (its deeper blocks). ValueError naming the tensors when anything else differs."""
    from safetensors.torch import load_file

    saved = load_file(str(Path(path) / WEIGHTS), device=str(device))
    own = policy.state_dict()
    block = re.compile(r"^(transformer\.(self|cross)_blocks|controller\.blocks)\.(\d+)\.")
    dropped = sorted(k for k in saved if k not in own)
    deeper = {"transformer": policy.cfg.transformer.depth, "controller": policy.cfg.controller.depth}
    stray = [k for k in dropped if not ((m := block.match(k)) and int(m[3]) >= deeper[k.split(".")[0]])]
    missing = sorted(k for k in own if k not in saved)
    if stray or missing:
        raise ValueError(f"{path}: weights do not fit the network: missing {missing[:8]}, unexpected {stray[:8]}")
    try:
        policy.load_state_dict({k: v for k, v in saved.items() if k in own}, strict=True)
    except RuntimeError as err:  # shape mismatches
        raise ValueError(f"{path}: weights do not fit the network: {str(err).splitlines()[-1].strip()}") from err
    return dropped


def load_checkpoint(
    path: str | os.PathLike[str], cfg: PolicyConfig | None = None, device: str | torch.device = "cpu"
) -> tuple[CNSv2Policy, dict[str, Any]]:
    """Load a checkpoint; with `cfg`, its architecture must match the saved one. Returns (policy, metadata)."""
    meta = verify_checkpoint(path)
    saved = PolicyConfig.model_validate(meta["policy"])
    if cfg is not None:
        saved = check_architecture(path, meta, cfg)
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


def _checkpoints_newest_first(directory: str | os.PathLike[str]) -> list[Path]:
    root = Path(directory)
    if not root.is_dir():
        return []
    found = []
    for meta in root.glob(f"*/{META}"):
        if meta.parent.name.startswith("."):
            continue  # a write in progress, or one a kill cut short
        try:
            version = int(json.loads(meta.read_text())["policy_version"])
        except (OSError, ValueError, KeyError, TypeError):
            # Damaged metadata: still listed where its name puts it, so that a resume says so instead of passing by.
            digits = meta.parent.name.rpartition("_")[2]
            version = int(digits) if digits.isdigit() else -1
        found.append((version, meta.parent.name, meta.parent))
    return [p for _, _, p in sorted(found, reverse=True)]


def latest_checkpoint(directory: str | os.PathLike[str]) -> Path | None:
    """The checkpoint with the highest policy_version under `directory` (None when there is none)."""
    for path in _checkpoints_newest_first(directory):
        try:
            read_meta(path)
        except (FileNotFoundError, ValueError):
            continue  # a foreign or damaged folder
        return path
    return None
