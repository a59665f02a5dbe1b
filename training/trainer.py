"""The trainer: Ray Train `TorchTrainer` (DDP: gloo on CPU, NCCL on GPU) over the published shards.

Every worker reads its own stream of shards; rank 0 logs (W&B, metrics.jsonl, PNGs), validates, saves checkpoints
(weights + optimizer + schedule + step) every `train.checkpoint_every` steps and at the end, and pushes the weights
to the DAgger actors every `train.push_every` steps. A rerun resumes from the newest checkpoint, continuing the same
step count and schedule; a run without checkpoints of its own starts from `train.init_from`'s weights if set (a
fine-tune, e.g. at another input size). The policy version of a checkpoint is its step.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from configs import Followed, save_config, with_absolute_paths
from configs.schema import Config, TrainConfig
from policy.checkpoint import (
    build_policy,
    load_trainer_state,
    load_warm_start,
    resume_point,
    save_checkpoint,
    warm_start_point,
)
from policy.losses import policy_loss
from runtime.threads import resolve_threads, set_torch_threads
from training.schedule import lr_factor

TRAIN_DIR = "ray_train"


def run_dir(cfg: Config) -> Path:
    """runs/<run.name>: the W&B run, metrics, PNGs and the Ray Train storage of this run."""
    return Path(cfg.run.root) / cfg.run.name


def _to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def _prune(directory: Path, keep: int) -> None:
    # A save in progress is a hidden ".step_*" folder (file_io.atomic_dir), which the pattern does not match.
    ckpts = sorted(p for p in directory.glob("step_*") if p.is_dir())
    for old in ckpts[:-keep]:
        shutil.rmtree(old, ignore_errors=True)


class TrainState:
    """The model, optimiser, schedule and step of one worker, and how to save and restore them."""

    def __init__(self, cfg: Config, device: torch.device) -> None:
        t = cfg.train
        self.cfg, self.device = cfg, device
        self.policy = build_policy(cfg.policy).to(device)
        self.params = [p for p in self.policy.parameters() if p.requires_grad]
        self.opt = torch.optim.AdamW(self.params, lr=t.lr, weight_decay=t.weight_decay)
        self.sched = torch.optim.lr_scheduler.LambdaLR(
            self.opt, lambda s: lr_factor(s, t.warmup_steps, t.steps, t.min_lr_ratio)
        )
        fp16 = device.type == "cuda" and cfg.policy.precision == "fp16"
        self.scaler = torch.amp.GradScaler("cuda", enabled=fp16)
        self.step = 0
        self.data: dict[str, Any] = {}

    def resume(self) -> Path | None:
        """Load the newest whole checkpoint of the run, if any (weights, optimiser, schedule, step): see
        `policy.checkpoint.resume_point` for what is skipped and what is an error."""
        from safetensors.torch import load_model

        path = resume_point(self.cfg.train.checkpoints, self.cfg.policy)
        if path is None:
            return None
        load_model(self.policy, str(path / "model.safetensors"), device=str(self.device))
        state = load_trainer_state(path, self.device)
        assert state is not None  # resume_point only returns checkpoints with trainer state
        self.opt.load_state_dict(state["optimizer"])
        self.sched.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.step = int(state["step"])
        return path

    def warm_start(self) -> Path | None:
        """Load the weights of `train.init_from` (not its optimiser, schedule or step: the run starts at step 0) and
        return that folder; None when it is not set. `policy.checkpoint.warm_start_point` says what is an error."""
        if self.cfg.train.init_from is None:
            return None
        path = warm_start_point(self.cfg.train.init_from, self.cfg.policy)
        load_warm_start(self.policy, path, self.device)
        return path

    def save(self) -> Path:
        """Write checkpoint step_<step> atomically and keep the newest `keep_checkpoints`."""
        t = self.cfg.train
        state = {
            "optimizer": self.opt.state_dict(),
            "scheduler": self.sched.state_dict(),
            "scaler": self.scaler.state_dict(),
            "step": self.step,
        }
        path = save_checkpoint(
            self.policy,
            Path(t.checkpoints) / f"step_{self.step:06d}",
            self.step,
            trainer_state=state,
            step=self.step,
            run_seed=self.cfg.run.seed,  # the weights' initialisation and data order derive from it
            data=self.data,  # the dataset, its asset sources and split counts, and keys taken from or set against it
            **({"init_from": t.init_from} if t.init_from else {}),
        )
        _prune(Path(t.checkpoints), t.keep_checkpoints)
        return path


def _batch_metrics(batch: dict[str, torch.Tensor], vel: torch.Tensor, step: int) -> dict[str, float]:
    dagger = batch["producer"] == 1
    versions = batch["policy_version"][dagger & (batch["policy_version"] >= 0)]
    out = {
        "data/dagger_share": float(dagger.float().mean()),
        "data/beta": float(batch["beta"][dagger].mean()) if dagger.any() else float("nan"),
        "data/policy_version": float(versions.float().mean()) if len(versions) else -1.0,
        "data/policy_lag": float(step - versions.float().mean()) if len(versions) else float("nan"),
    }
    cos = torch.nn.functional.cosine_similarity(vel.float(), batch["vel"].float(), dim=-1, eps=1e-9)
    out["train/cos"] = float(cos.mean())
    return out


def check_input_size(cfg: Config) -> None:
    """The trainer feeds rendered images to the network as they are, while Servo resizes to policy.input_size: the two
    must agree, or training and servoing see different patch grids. ValueError naming both keys otherwise."""
    size = (cfg.sim.camera.width, cfg.sim.camera.height)
    if tuple(cfg.policy.input_size) != size:
        raise ValueError(
            f"policy.input_size {list(cfg.policy.input_size)} differs from sim.camera (width, height) {list(size)}: "
            "the network would train on one patch grid and servo on another; set them equal"
        )


def _due(step: int, every: int, last: int) -> bool:
    """Whether a periodic action is due at `step`: every `every` steps, and always at the last one."""
    return step % every == 0 or step == last


@dataclass
class _StepResult:
    """One optimiser step: its losses (means over the micro-batches), its last micro-batch and the prediction on it,
    the samples it took over all workers, and the gradient norm before clipping."""

    losses: dict[str, float]
    batch: dict[str, torch.Tensor]
    vel: torch.Tensor
    samples: int
    grad_norm: float


def _optimiser_step(
    state: TrainState, model: torch.nn.Module, batches: Iterator[dict[str, torch.Tensor]], world: int
) -> _StepResult:
    """Take `train.accumulate` micro-batches, then one clipped, scaled optimiser step and one schedule step."""
    cfg, t = state.cfg, state.cfg.train
    totals: dict[str, float] = {}
    batch: dict[str, torch.Tensor] = {}
    vel = torch.zeros(0)
    samples = 0
    for micro in range(t.accumulate):
        batch = _to_device(next(batches), state.device)
        # DDP averages gradients on every backward; only the last micro-batch's needs to.
        sync = model.no_sync() if world > 1 and micro < t.accumulate - 1 else nullcontext()
        with sync:
            out = model(batch["cur"], batch["des"])
            losses = policy_loss(out, batch["vel"], cfg.policy.loss, batch.get("coarse_match"),
                                 batch.get("coarse_valid"))  # fmt: skip
            state.scaler.scale(losses["total"] / t.accumulate).backward()
        for k, v in losses.items():
            totals[k] = totals.get(k, 0.0) + float(v.detach()) / t.accumulate
        vel = out.vel.detach()
        samples += len(batch["vel"]) * world
    state.scaler.unscale_(state.opt)
    grad_norm = float(torch.nn.utils.clip_grad_norm_(state.params, t.grad_clip))
    state.scaler.step(state.opt)
    state.scaler.update()
    state.opt.zero_grad(set_to_none=True)
    state.sched.step()
    state.step += 1
    return _StepResult(totals, batch, vel, samples, grad_norm)


class _LogWindow:
    """The steps since the last log: logged losses are means over the window, not one batch, and the throughput is
    the window's samples over its wall time."""

    def __init__(self, first_step: int) -> None:
        self.first_step = first_step  # logged whatever log_every says: a resumed run shows at once that it runs
        self.t0, self.samples = time.perf_counter(), 0
        self.sums: dict[str, float] = {}
        self.steps = 0

    def add(self, result: _StepResult) -> None:
        """Count one optimiser step into the window."""
        for k, v in result.losses.items():
            self.sums[k] = self.sums.get(k, 0.0) + v
        self.steps += 1
        self.samples += result.samples

    def due(self, step: int, t: TrainConfig) -> bool:
        """Whether `step` is logged."""
        return _due(step, t.log_every, t.steps) or step == self.first_step

    def take(self, result: _StepResult, state: TrainState) -> dict[str, float]:
        """The window's metrics, with the last batch's data statistics; starts a new window."""
        dt = time.perf_counter() - self.t0
        metrics = {f"train/{'loss' if k == 'total' else k}": v / self.steps for k, v in self.sums.items()}
        self.sums, self.steps = {}, 0
        metrics.update(_batch_metrics(result.batch, result.vel, state.step))
        metrics.update({"train/lr": state.sched.get_last_lr()[0], "train/grad_norm": result.grad_norm,
                        "train/samples_per_s": self.samples / max(dt, 1e-9)})  # fmt: skip
        self.t0, self.samples = time.perf_counter(), 0
        return metrics


class _Rank0:
    """What only rank 0 does: the dashboard (W&B, metrics.jsonl, PNGs), sample grids, validation, checkpoints and the
    push of the weights to the DAgger actors."""

    def __init__(self, state: TrainState, resumed: Path | None) -> None:
        from datagen.dagger import weights_by_push
        from training.dashboard import Dashboard
        from training.push import WeightPusher

        cfg = state.cfg
        self.state = state
        self.dash = Dashboard(cfg, run_dir(cfg))
        self.pusher = WeightPusher(cfg.datagen.dagger.actors) if weights_by_push(cfg) else None
        if resumed is not None:
            self.dash.log({"resumed_from": float(state.step)}, state.step)
        self.last_saved = state.step
        self.val_loader: Any = None

    def after_step(self, result: _StepResult) -> None:
        """The periodic actions due at the step just taken."""
        state, t = self.state, self.state.cfg.train
        step = state.step
        if _due(step, t.image_every, t.steps):
            self._sample_grid(result, step)
        if t.val_batches and _due(step, t.val_every, t.steps):
            self._validate(step)
        if _due(step, t.checkpoint_every, t.steps):
            state.save()
            self.last_saved = step
        if self.pusher is not None and _due(step, t.push_every, t.steps):
            self.pusher.push(state.policy, step)

    def finish(self) -> None:
        """Save the last step if its checkpoint is not on disk yet, and close the dashboard."""
        if self.last_saved != self.state.step:
            self.state.save()
        self.dash.finish()

    def _sample_grid(self, result: _StepResult, step: int) -> None:
        batch, k = result.batch, min(8, len(result.batch["vel"]))
        self.dash.samples(
            (batch["cur"][:k].permute(0, 2, 3, 1).cpu().numpy() * 255).astype(np.uint8),
            (batch["des"][:k].permute(0, 2, 3, 1).cpu().numpy() * 255).astype(np.uint8),
            result.vel[:k].float().cpu().numpy(),
            batch["vel"][:k].float().cpu().numpy(),
            step,
        )

    def _validate(self, step: int) -> None:
        from training.dataset import make_loader
        from training.validation import validate

        state, cfg = self.state, self.state.cfg
        if self.val_loader is None:  # built once: its workers persist between validations
            # Matching accuracy is measured wherever the data has correspondences, aux loss or not.
            val_coarse = cfg.policy.loss.aux_match > 0 or cfg.datagen.hemisphere.coarse_match
            self.val_loader = make_loader(cfg.data, "val", cfg.run.seed, cfg.train.batch_size, with_coarse=val_coarse,
                                          rot90=cfg.policy.rot90)  # fmt: skip
        val = validate(state.policy, cfg, self.val_loader, state.device)
        if val:
            self.dash.log(val, step)
            self.dash.validation_plot()


def train_loop(config: dict[str, Any]) -> None:
    """The per-worker loop Ray Train runs (also runnable without Ray for one process)."""
    import ray.train
    import ray.train.torch

    from training.dataset import make_loader, wait_for_shards

    cfg = Config.model_validate(config["cfg"])
    t = cfg.train
    # The worker's Ray reservation, less one CPU per loader process that runs beside it.
    set_torch_threads(resolve_threads(t.threads, cpus=t.cpus_per_worker, reserved=cfg.data.workers))
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = ray.train.torch.get_device()
    torch.manual_seed(cfg.run.seed * 1009 + rank)
    state = TrainState(cfg, device)
    state.data = config.get("data", {})
    resumed = state.resume()
    if resumed is None:
        state.warm_start()
    model = ray.train.torch.prepare_model(state.policy) if world > 1 else state.policy
    wait_for_shards(cfg.data.root, t.wait_for_data)
    loader = make_loader(cfg.data, "train", cfg.run.seed + state.step, t.batch_size, rank=rank, world_size=world,
                         with_coarse=cfg.policy.loss.aux_match > 0, rot90=cfg.policy.rot90)  # fmt: skip
    batches = iter(loader)
    rank0 = _Rank0(state, resumed) if rank == 0 else None
    window = _LogWindow(first_step=state.step + 1)
    while state.step < t.steps:
        result = _optimiser_step(state, model, batches, world)
        window.add(result)
        if window.due(state.step, t):
            metrics = window.take(result, state)
            if rank0 is not None:
                rank0.dash.log(metrics, state.step)
            ray.train.report({k: float(v) for k, v in metrics.items() if np.isfinite(v)})
        if rank0 is not None:
            rank0.after_step(result)
    if rank0 is not None:
        rank0.finish()


def data_record(cfg: Config, followed: Followed | None = None) -> dict[str, Any]:
    """What a checkpoint records about its data: the dataset root, the asset sources with their split counts (from the
    asset folders when this machine can list them, else the error saying why not) and, with `followed`, the keys taken
    from the dataset's config or set against it on the command line."""
    from sim.asset_catalogue import AssetCatalogue, AssetFolderError

    try:
        assets: dict[str, Any] = AssetCatalogue(cfg.sim.assets).summary()
    except AssetFolderError as err:  # the trainer reads shards, not assets: a trainer node need not hold the folders
        assets = {"split": cfg.sim.assets.split, "unavailable": str(err)}
    record = followed.record() if followed is not None else {"dataset": None}
    return {**record, "root": str(Path(cfg.data.root).resolve()), "assets": assets}


def check_warm_start(cfg: Config) -> None:
    """The checks of where a run starts: its own newest checkpoint (ValueError as `resume_point`), else, when set,
    `train.init_from` (FileNotFoundError or ValueError as `warm_start_point`). Reads files only; starts no Ray."""
    if resume_point(cfg.train.checkpoints, cfg.policy) is None and cfg.train.init_from is not None:
        warm_start_point(cfg.train.init_from, cfg.policy)


def already_trained(cfg: Config) -> tuple[Path, int] | None:
    """(checkpoint, step) when the checkpoint a rerun would resume from is already at `train.steps` or beyond, else
    None. Reads checkpoint files only (ValueError as `resume_point`); imports and starts no Ray."""
    from policy.checkpoint import read_meta

    path = resume_point(cfg.train.checkpoints, cfg.policy)
    if path is None:
        return None
    meta = read_meta(path)
    step = int((meta.get("extra") or {}).get("step", meta["policy_version"]))
    return (path, step) if step >= cfg.train.steps else None


def run_training(cfg: Config, followed: Followed | None = None, show_progress: bool = False) -> Any:
    """Train with Ray Train on the configured dataset root; returns the Ray Train result.

    `followed` (how the config followed its dataset, `configs.follow_data`) is written as comments at the top of
    train_config.yaml and into every checkpoint's metadata, with the asset sources and split counts.
    `show_progress`: a progress bar (step, loss, samples/s, ETA) from rank 0's metrics.jsonl while training runs."""
    from runtime.ray_cluster import check_ray_address, init_ray
    from runtime.tracking import wandb_env
    from training.progress import training_progress

    cfg = with_absolute_paths(cfg)
    check_input_size(cfg)
    check_warm_start(cfg)  # here, in one line, not from inside a Ray worker
    check_ray_address(cfg)  # before anything is written
    data = data_record(cfg, followed)
    t = cfg.train
    out = run_dir(cfg)
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out, "train_config.yaml", notes=followed.notes() if followed is not None else ())
    from ray.train import LoggingConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    env = wandb_env(cfg.train.wandb)
    started = init_ray(cfg, env, min_cpus=t.workers * t.cpus_per_worker)
    try:
        trainer = TorchTrainer(
            train_loop,
            train_loop_config={"cfg": cfg.model_dump(mode="json"), "data": data},
            scaling_config=ScalingConfig(
                num_workers=t.workers,
                use_gpu=t.use_gpu,
                resources_per_worker={"CPU": t.cpus_per_worker, **t.resources_per_worker},
            ),
            run_config=RunConfig(
                name=f"{cfg.run.name}-train",
                storage_path=str((out / TRAIN_DIR).resolve()),
                worker_runtime_env={"env_vars": env},
                # Ray Train's INFO lines (worker group start-up, every report's metrics dict) are its own progress
                # log; the driver shows a progress bar from metrics.jsonl instead. Its warnings still show.
                logging_config=LoggingConfig(log_level="WARNING"),
            ),
        )
        with training_progress(cfg, out / "metrics.jsonl", enabled=show_progress):
            return trainer.fit()
    finally:
        if started:
            import ray

            ray.shutdown()
