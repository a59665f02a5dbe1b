"""The report's figures compare: the path panels share one scale and carry a legend."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from evaluation.metrics import Episode, Trace
from evaluation.report import plot_trajectories, trajectory_figure

pytestmark = pytest.mark.unit


def _episode(seed: int, success: bool, start: tuple[float, float, float], scale: float) -> Episode:
    path = np.linspace(start, (0.0, 0.0, 0.8), 5) * scale
    trace = Trace(errors=np.ones((5, 2)), positions=path, desired=np.array([0.0, 0.0, 0.8]))
    return Episode(success, 0.0, 0.0, 4, 10.0, seed=seed, trace=trace)


def test_path_panels_share_one_cube_and_the_legend_names_episodes_and_outcomes(tmp_path: Path) -> None:
    import matplotlib.pyplot as plt

    # One controller wanders ten times further than the other: on their own scales both panels would look alike.
    groups = {
        "near": [_episode(7, True, (0.1, 0.0, 0.5), 1.0), _episode(8, False, (-0.1, 0.1, 0.6), 1.0)],
        "far": [_episode(7, False, (1.0, -1.0, 0.5), 3.0), _episode(8, True, (-0.1, 0.1, 0.6), 1.0)],
    }
    fig = trajectory_figure("suite", groups, count=2)
    try:
        axes = [ax for ax in fig.axes if ax.name == "3d"]
        assert len(axes) == 2
        limits = [(ax.get_xlim(), ax.get_ylim(), ax.get_zlim()) for ax in axes]
        assert limits[0] == limits[1]
        spans = {round(hi - lo, 9) for lo, hi in limits[0]}
        assert len(spans) == 1  # a cube: one unit of distance looks the same along x, y and z
        far = groups["far"][0].trace.positions  # type: ignore[union-attr]
        for (lo, hi), coord in zip(limits[0], far.T, strict=True):
            assert lo <= coord.min() and coord.max() <= hi  # the far path is inside every panel
        labels = [t.get_text() for legend in fig.legends for t in legend.get_texts()]
        assert labels[:2] == ["seed 7", "seed 8"] and {"success", "failed", "start", "goal"} <= set(labels)
        # Seed 7 has the same colour in both panels: the legend's colour is the episode's, whatever the controller.
        colours = [{tuple(line.get_color()) for line in ax.get_lines()} for ax in axes]
        assert colours[0] == colours[1]
    finally:
        plt.close(fig)
    out = plot_trajectories("suite", groups, 2, tmp_path / "paths.png")
    assert out.read_bytes().startswith(b"\x89PNG")
