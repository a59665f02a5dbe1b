"""The driver's training progress: rows read from a growing metrics.jsonl, the step, loss, samples/s and ETA."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from training.progress import MetricsTail, TrainProgress

pytestmark = pytest.mark.unit


def _row(step: int, loss: float, rate: float) -> str:
    return json.dumps({"step": step, "train/loss": loss, "train/samples_per_s": rate, "train/lr": 1e-4}) + "\n"


def test_the_tail_reads_only_new_complete_rows(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    tail = MetricsTail(path)
    assert tail.read() == []  # no file yet: rank 0 has not logged
    path.write_text(_row(10, 3.0, 8.0))  # an earlier run's row
    tail.skip_existing()
    with path.open("a") as f:
        f.write(_row(11, 2.5, 8.0) + "not json\n" + '{"step": 12, "train/lo')  # the last line is being written
    assert [r["step"] for r in tail.read()] == [11]
    with path.open("a") as f:
        f.write('ss": 2.0}\n')
    assert tail.read() == [{"step": 12, "train/loss": 2.0}]
    assert tail.read() == []


def test_progress_takes_the_newest_training_row_and_estimates_the_time_left() -> None:
    progress = TrainProgress(target=200, samples_per_step=16)
    assert progress.eta_seconds() is None
    assert progress.fields() == {"loss": "-", "rate": "-", "eta": "-"}
    progress.update([json.loads(_row(40, 2.5, 4.0)), json.loads(_row(50, 2.0, 8.0)), {"step": 50, "val/loss": 9.0}])
    assert (progress.step, progress.loss, progress.samples_per_s) == (50, 2.0, 8.0)
    assert progress.eta_seconds() == pytest.approx(150 * 16 / 8.0)  # 150 steps of 16 samples at 8 samples/s
    assert progress.fields() == {"loss": "2.0000", "rate": "8.0", "eta": "0:05:00"}
    progress.update([json.loads(_row(200, 1.0, 8.0))])
    assert progress.eta_seconds() == 0.0
    progress.update([json.loads(_row(201, 1.0, 0.0))])  # no throughput: no estimate rather than a division by zero
    assert progress.eta_seconds() is None
