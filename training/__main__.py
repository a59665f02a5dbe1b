"""`python -m training [--config smoke] [key.sub=value ...]`: train on an existing dataset root with Ray Train.

Reads the shards under data.root (default: the run's datagen root, runs/<run.name>/data), writes checkpoints to
train.checkpoints (runs/<run.name>/checkpoints), metrics, sample PNGs, loss_curve.png and the W&B run (offline unless
WANDB_MODE=online) to runs/<run.name>/. Rerunning resumes from the newest checkpoint; a run already at train.steps
says so and exits at once, without starting Ray. The sim settings (assets, camera, scene, ...) follow the config the
dataset at data.root was made with, unless set on the command line; a note says which keys were taken or overridden.
Examples:
  python -m training run.name=smoke train.steps=400
  python -m training --config default train.workers=8 train.use_gpu=true
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from configs import add_config_arguments, config_following_data
from configs.schema import Config


def main(argv: list[str] | None = None) -> int:
    """Train, then print a one-line summary."""
    parser = argparse.ArgumentParser(
        prog="python -m training", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_config_arguments(parser)
    followed = config_following_data(parser, parser.parse_args(argv))
    cfg = followed.cfg
    from training.trainer import run_training

    if at_target(parser, cfg, "training"):
        return 0
    t0 = time.time()
    run_training(cfg, followed, show_progress=True)
    print(summary_line(cfg, time.time() - t0))
    return 0


def at_target(parser: argparse.ArgumentParser, cfg: Config, label: str) -> bool:
    """The checks a training job makes before Ray starts (input size, resume point, `train.init_from`: an error exits
    2), and whether the run is already at `train.steps`, which it then says under `label`. Imports and starts no
    Ray."""
    from training.trainer import already_trained, check_input_size, check_warm_start

    try:
        check_input_size(cfg)
        done = already_trained(cfg)
        if done is None:  # a run at its target starts from nothing: its init_from no longer matters
            check_warm_start(cfg)
    except (ValueError, FileNotFoundError) as err:
        parser.exit(2, f"{parser.prog}: error: {err}\n")
    if done is None:
        return False
    path, step = done
    print(
        f"{label}: already at step {step} of {cfg.train.steps} (checkpoint {path}); nothing to do — raise "
        "train.steps to continue"
    )
    return True


def summary_line(cfg: object, seconds: float) -> str:
    """Steps, final losses, the newest checkpoint and where everything went."""
    from policy.checkpoint import latest_checkpoint
    from runtime.tracking import describe_wandb_run, wandb_mode, wandb_run_dir
    from training.dashboard import wandb_run_id
    from training.trainer import run_dir

    out = run_dir(cfg)  # type: ignore[arg-type]
    rows = (
        [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
        if (out / "metrics.jsonl").is_file()
        else []
    )
    last = next((r for r in reversed(rows) if "train/loss" in r), {})
    val = next((r for r in reversed(rows) if "val/loss" in r), {})
    ckpt = latest_checkpoint(cfg.train.checkpoints)  # type: ignore[attr-defined]
    nan = float("nan")
    wandb = describe_wandb_run(wandb_mode(cfg.train.wandb), wandb_run_dir(out, wandb_run_id(cfg, out)))  # type: ignore[attr-defined,arg-type]
    return (
        f"training: step {last.get('step', 0)}, loss {last.get('train/loss', nan):.4f}, "
        f"val loss {val.get('val/loss', nan):.4f}, {last.get('train/samples_per_s', nan):.1f} samples/s, "
        f"{seconds:.0f} s; checkpoint {ckpt}; metrics, samples/ and curves in {out}; {wandb}"
    )


if __name__ == "__main__":
    sys.exit(main())
