"""Validation that shows *whether matching learns*, not only whether the loss falls.

Besides the loss terms and the cosine with the label, it scores the score matrix against the simulator's ground-truth
correspondences: a current patch is matched when its best desired patch lies within one cell (Chebyshev distance
<= 1, the 3 x 3 neighbourhood) of the cell its centre really lands in. Chance on a 16 x 16 grid is 9/256 = 3.5 %.
The accuracy is split by the pair's relative rotation (the wall pretrained features hit, shared/notes/network.md),
and the velocity losses by the label's norm (near-goal pairs are the hard ones for the norm).
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from configs.schema import Config
from file_io import atomic_path
from policy.losses import label_log_norm, policy_loss
from policy.matching import nearest_cells

# Relative rotation of the pair as stored (before any quarter turn), degrees; and label norms (unit world).
ROTATION_BINS = (0.0, 30.0, 60.0, 90.0, 135.0, 180.0)
NORM_BINS = (0.0, 0.03, 0.1, 0.3, 1.0, np.inf)


def bin_names(edges: tuple[float, ...]) -> list[str]:
    """'lo-hi' labels of consecutive edges ('lo+' for an infinite top)."""
    return [f"{lo:g}-{hi:g}" if np.isfinite(hi) else f"{lo:g}+" for lo, hi in itertools.pairwise(edges)]


def match_hits(logits: Tensor, match: Tensor, valid: Tensor, h: int, w: int) -> tuple[Tensor, Tensor]:
    """Per sample: (hits, counted) valid patches whose best match is within one cell of the true cell, both (B,).

    logits: (B, N, N) score logits; match: (B, h, w, 2) true desired positions in patch units; valid: (B, h, w).
    """
    B, N = logits.shape[0], h * w
    best = logits.argmax(dim=-1)  # (B, N)
    bx, by = best % w, best // w
    v = valid.reshape(B, N).bool()
    tx, ty = nearest_cells(match.float(), v, h, w)  # the cells aux_match_loss targets
    hit = ((bx - tx).abs() <= 1) & ((by - ty).abs() <= 1) & v
    return hit.sum(dim=1).float(), v.sum(dim=1).float()


class _Bins:
    """Running sums per bin of a per-sample quantity."""

    def __init__(self, edges: tuple[float, ...]) -> None:
        self.edges = np.asarray(edges, float)
        self.num = np.zeros(len(edges) - 1)
        self.den = np.zeros(len(edges) - 1)

    def add(self, key: np.ndarray, num: np.ndarray, den: np.ndarray) -> None:
        idx = np.clip(np.searchsorted(self.edges, key, side="right") - 1, 0, len(self.num) - 1)
        np.add.at(self.num, idx, num)
        np.add.at(self.den, idx, den)

    def means(self) -> list[float]:
        return [float(n / d) if d > 0 else float("nan") for n, d in zip(self.num, self.den, strict=True)]


def validate(policy: torch.nn.Module, cfg: Config, loader: Any, device: torch.device) -> dict[str, float]:
    """Mean validation metrics over `train.val_batches` batches: `val/loss`, its terms, `val/cos`, and with
    ground-truth matches `val/match_acc` overall and `val/match_acc/rot_<bin>` per rotation bin, plus
    `val/norm_err/norm_<bin>` and `val/dir_err/norm_<bin>` (|sigma^-1(|v*|) - l| and 1 - cos) per label-norm bin.
    Empty when the loader yields nothing."""
    was_training = policy.training
    policy.eval()
    totals: dict[str, float] = {}
    n = 0
    hits_all = counted_all = 0.0
    rot = _Bins(ROTATION_BINS)
    norm_err, dir_err = _Bins(NORM_BINS), _Bins(NORM_BINS)
    with torch.no_grad():
        for i, batch in enumerate(loader):
            if i >= cfg.train.val_batches:
                break
            b = {k: v.to(device) for k, v in batch.items()}
            out = policy(b["cur"], b["des"])
            losses = policy_loss(out, b["vel"], cfg.policy.loss, b.get("coarse_match"), b.get("coarse_valid"))
            cos = torch.nn.functional.cosine_similarity(out.direction.float(), b["vel"].float(), dim=-1, eps=1e-9)
            for k, v in {**{f"val/{k}": float(x) for k, x in losses.items()}, "val/cos": float(cos.mean())}.items():
                totals[k] = totals.get(k, 0.0) + v
            n += 1
            label_norm = b["vel"].norm(dim=-1).cpu().numpy()
            ones = np.ones_like(label_norm)
            norm_err.add(label_norm, (label_log_norm(b["vel"]) - out.log_norm.float()).abs().cpu().numpy(), ones)
            dir_err.add(label_norm, (1.0 - cos).cpu().numpy(), ones)
            if "coarse_match" in b:
                h, w = out.grid
                hits, counted = match_hits(out.logits, b["coarse_match"], b["coarse_valid"], h, w)
                hits_all += float(hits.sum())
                counted_all += float(counted.sum())
                rot.add(b["rot_deg"].cpu().numpy(), hits.cpu().numpy(), counted.cpu().numpy())
    policy.train(was_training)
    if not n:
        return {}
    metrics = {k.replace("val/total", "val/loss"): v / n for k, v in totals.items()}
    for name, err in (("norm_err", norm_err), ("dir_err", dir_err)):
        for label, value in zip(bin_names(NORM_BINS), err.means(), strict=True):
            metrics[f"val/{name}/norm_{label}"] = value
    if counted_all > 0:
        metrics["val/match_acc"] = hits_all / counted_all
        for label, value in zip(bin_names(ROTATION_BINS), rot.means(), strict=True):
            metrics[f"val/match_acc/rot_{label}"] = value
    return metrics


def plot_validation(metrics_file: Path, out: Path) -> Path | None:
    """Draw matching accuracy by rotation bin and the velocity errors by label-norm bin over the training steps.

    Reads metrics.jsonl; writes `out` (PNG) and returns it, or None when no validation was logged yet.
    """
    if not metrics_file.is_file():
        return None
    rows = [json.loads(line) for line in metrics_file.read_text().splitlines() if line.strip()]
    rows = [r for r in rows if "val/loss" in r]
    if not rows:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    panels = (
        (axes[0], "val/match_acc", "rot_", bin_names(ROTATION_BINS), "best match within 1 cell", "relative rotation"),
        (axes[1], None, "norm_", bin_names(NORM_BINS), "|log-norm error| (Eq. 23)", "label norm"),
        (axes[2], None, "norm_", bin_names(NORM_BINS), "1 - cos (Eq. 23)", "label norm"),
    )
    prefixes = ("val/match_acc/", "val/norm_err/", "val/dir_err/")
    for (ax, overall, tag, labels, ylabel, legend), prefix in zip(panels, prefixes, strict=True):
        steps = [r["step"] for r in rows]
        if overall is not None and any(overall in r for r in rows):
            ax.plot(steps, [r.get(overall, np.nan) for r in rows], "k-o", label="all")
        for label in labels:
            key = f"{prefix}{tag}{label}"
            ax.plot(steps, [r.get(key, np.nan) for r in rows], marker=".", label=label)
        ax.set_xlabel("step")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend(title=legend, fontsize=8)
    fig.suptitle("validation (held-out scenes)")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        with atomic_path(out) as tmp:
            fig.savefig(tmp, dpi=90, format="png")
    finally:
        plt.close(fig)
    return out
