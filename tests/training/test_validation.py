"""training.validation: matching accuracy against ground truth, by rotation, and the losses by label norm."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from training.validation import NORM_BINS, ROTATION_BINS, _Bins, bin_names, match_hits, plot_validation

pytestmark = pytest.mark.unit


def _logits_pointing_at(targets: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """(B, N) desired cells -> (B, N, N) logits whose argmax is that cell."""
    B, N = targets.shape
    logits = torch.zeros(B, N, h * w)
    logits.scatter_(2, targets[..., None], 10.0)
    return logits


def test_match_hits_count_the_three_by_three_neighbourhood_of_valid_patches() -> None:
    h = w = 4
    match = torch.zeros(1, h, w, 2)
    match[..., 0], match[..., 1] = 1.4, 2.2  # every patch truly lands near cell (x=1, y=2)
    valid = torch.ones(1, h, w, dtype=torch.bool)
    valid[0, 0, 0] = False
    # Predictions: patch 0 (invalid) anywhere, patches 1-4 one cell off (hits), 5-8 two cells off (misses).
    pred = torch.full((1, h * w), 2 * w + 1)
    pred[0, 1:5] = torch.tensor([1 * w + 0, 3 * w + 2, 2 * w + 2, 1 * w + 1])
    pred[0, 5:9] = torch.tensor([0 * w + 1, 2 * w + 3, 0 * w + 3, 3 * w + 3])
    hits, counted = match_hits(_logits_pointing_at(pred, h, w), match, valid, h, w)
    assert counted.tolist() == [15.0]
    assert hits.tolist() == [15.0 - 4.0]
    assert match_hits(_logits_pointing_at(pred, h, w), match, torch.zeros_like(valid), h, w)[1].tolist() == [0.0]


def test_bins_average_per_bin_and_name_their_edges() -> None:
    b = _Bins(ROTATION_BINS)
    b.add(np.array([10.0, 20.0, 100.0, 180.0]), np.array([1.0, 0.0, 3.0, 2.0]), np.array([1.0, 1.0, 4.0, 2.0]))
    means = b.means()
    assert means[0] == 0.5 and means[3] == 0.75 and means[4] == 1.0
    assert np.isnan(means[1]) and np.isnan(means[2])
    assert bin_names(ROTATION_BINS)[0] == "0-30" and bin_names(NORM_BINS)[-1] == "1+"


def test_validation_plot_is_written_only_once_validation_was_logged(tmp_path: Path) -> None:
    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text(json.dumps({"step": 1, "train/loss": 1.0}) + "\n")
    assert plot_validation(metrics, tmp_path / "v.png") is None
    rows = [
        {"step": s, "val/loss": 1.0 / s, "val/match_acc": 0.1 * s, "val/match_acc/rot_0-30": 0.2 * s} for s in (1, 2)
    ]
    metrics.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    out = plot_validation(metrics, tmp_path / "v.png")
    assert out is not None and out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
