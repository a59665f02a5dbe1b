"""Rank 0's view of training: Weights & Biases (offline unless the user went online), metrics.jsonl, PNGs."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from configs.schema import Config
from file_io import atomic_path
from runtime.tracking import wandb_mode


def wandb_run_id(cfg: Config, run_dir: Path) -> str:
    """The W&B run id of a training run folder: stable, so that a resumed run continues the same W&B run and the
    driver finds its folder (`<run_dir>/wandb/*run-*-<id>`)."""
    return f"{cfg.run.name}-{hashlib.sha1(str(run_dir.resolve()).encode()).hexdigest()[:8]}"


class Dashboard:
    """Logs scalars, sample images and the loss curve to the run folder and, unless disabled, to W&B."""

    def __init__(self, cfg: Config, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.metrics_file = run_dir / "metrics.jsonl"
        self.wandb: Any = None
        mode = wandb_mode(cfg.train.wandb)
        if mode != "disabled":
            import wandb

            self.wandb = wandb.init(
                project=cfg.train.wandb.project,
                entity=cfg.train.wandb.entity,
                name=cfg.run.name,
                id=wandb_run_id(cfg, run_dir),
                resume="allow",
                dir=str(run_dir),
                mode=mode,
                config=cfg.model_dump(mode="json"),
            )

    def log(self, metrics: dict[str, float], step: int) -> None:
        """Append scalars to metrics.jsonl and W&B."""
        with self.metrics_file.open("a") as f:
            f.write(json.dumps({"step": step, **metrics}) + "\n")
        if self.wandb is not None:
            self.wandb.log(metrics, step=step)

    def samples(self, cur: np.ndarray, des: np.ndarray, pred: np.ndarray, true: np.ndarray, step: int) -> Path:
        """Write (and log) a grid of pairs captioned with the predicted and the true normalised velocity."""
        from datagen.inspect import draw_pairs

        tiles = []
        for i in range(len(cur)):
            cos = float(pred[i] @ true[i] / max(np.linalg.norm(pred[i]) * np.linalg.norm(true[i]), 1e-12))
            captions = (
                "pred " + " ".join(f"{c:+.2f}" for c in pred[i]),
                "true " + " ".join(f"{c:+.2f}" for c in true[i]),
                f"cos {cos:+.2f}",
            )
            tiles.append((des[i], cur[i], captions))
        out = self.run_dir / "samples" / f"step_{step:06d}.png"
        out.parent.mkdir(parents=True, exist_ok=True)
        draw_pairs(tiles, f"step {step}: desired | current; velocity (v, w), normalised").save(out)
        if self.wandb is not None:
            import wandb

            self.wandb.log({"samples": wandb.Image(str(out))}, step=step)
        return out

    def loss_curve(self) -> Path | None:
        """Plot the logged losses into loss_curve.png (and W&B); None when nothing was logged."""
        if not self.metrics_file.is_file():
            return None
        rows = [json.loads(line) for line in self.metrics_file.read_text().splitlines() if line.strip()]
        if not rows:
            return None
        import matplotlib.pyplot as plt

        fig = loss_figure(rows)
        out = self.run_dir / "loss_curve.png"
        fig.tight_layout()
        try:
            with atomic_path(out) as tmp:  # read while training runs (W&B, a user's viewer): never half-written
                fig.savefig(tmp, dpi=100, format="png")
        finally:
            plt.close(fig)
        if self.wandb is not None:
            import wandb

            self.wandb.log({"loss_curve": wandb.Image(str(out))})
        return out

    def validation_plot(self) -> Path | None:
        """Matching accuracy by rotation and velocity errors by label norm over the steps: validation.png (+ W&B)."""
        from training.validation import plot_validation

        out = plot_validation(self.metrics_file, self.run_dir / "validation.png")
        if out is not None and self.wandb is not None:
            import wandb

            self.wandb.log({"validation": wandb.Image(str(out))})
        return out

    def finish(self) -> None:
        """Draw the loss curve and close the W&B run."""
        self.loss_curve()
        if self.wandb is not None:
            self.wandb.finish()


LOSSES = ("train/loss", "train/norm", "train/direction", "train/aux_match", "val/loss")


def loss_figure(rows: list[dict[str, Any]]) -> Any:
    """The loss curve of metrics rows on a log axis. A loss that is never positive (`train/aux_match` when the loss is
    off) has no point on a log axis, so it is named in the legend's title instead of getting an entry with no line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    hidden = []
    for key in LOSSES:
        pts = [(r["step"], r[key]) for r in rows if key in r]
        if not pts:
            continue
        if not any(np.isfinite(v) and v > 0 for _, v in pts):
            hidden.append(key)
            continue
        ax.plot(*zip(*pts, strict=True), label=key, marker="o" if key.startswith("val") else None)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    title = f"not drawn, 0 throughout: {', '.join(hidden)}" if hidden else None
    if ax.get_lines() or hidden:
        ax.legend(title=title, title_fontsize=8)
    return fig
