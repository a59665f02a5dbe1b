"""The loss curve: every loss in the legend has a visible line on the log axis."""

from __future__ import annotations

import pytest

from training.dashboard import loss_figure

pytestmark = pytest.mark.unit


def test_a_loss_that_is_zero_throughout_is_named_but_gets_no_empty_legend_entry() -> None:
    import matplotlib.pyplot as plt

    rows = [
        {"step": s, "train/loss": 2.0 / s, "train/norm": 1.0 / s, "train/direction": 0.5, "train/aux_match": 0.0}
        for s in range(1, 6)
    ]
    rows.append({"step": 5, "val/loss": 0.7})
    fig = loss_figure(rows)
    try:
        legend = fig.axes[0].get_legend()
        labels = [t.get_text() for t in legend.get_texts()]
        assert labels == ["train/loss", "train/norm", "train/direction", "val/loss"]
        assert "train/aux_match" in legend.get_title().get_text()
        assert all(max(line.get_ydata()) > 0 for line in fig.axes[0].get_lines())
    finally:
        plt.close(fig)

    fig = loss_figure([{"step": 1, "train/loss": 1.0, "train/aux_match": 0.0}, {"step": 2, "train/aux_match": 0.3}])
    try:  # zero at some steps only: drawn (the log axis shows the positive part)
        assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == ["train/loss", "train/aux_match"]
        assert fig.axes[0].get_legend().get_title().get_text() == ""
    finally:
        plt.close(fig)
