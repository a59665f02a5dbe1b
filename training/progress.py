"""The training progress bar of the driver (`make train`, `make pipeline`): step, loss, samples/s and ETA.

The trainer runs inside Ray Train workers, whose output reaches the driver only as forwarded log lines. Rank 0 already
appends every logged window to runs/<name>/metrics.jsonl, so the driver follows that file while `fit()` runs: no
extra channel between the processes, and the bar shows exactly what the metrics say.
"""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from configs.schema import Config


class MetricsTail:
    """Reads the rows appended to a metrics.jsonl since the last read; a line still being written waits for its
    newline, and a line that is not JSON is skipped (the file is a log, not a contract)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0

    def skip_existing(self) -> None:
        """Start after what the file holds now (the rows of earlier runs under the same name)."""
        self.offset = self.path.stat().st_size if self.path.is_file() else 0

    def read(self) -> list[dict[str, Any]]:
        """The complete rows appended since the last call."""
        try:
            with self.path.open("rb") as f:
                f.seek(self.offset)
                data = f.read()
        except FileNotFoundError:
            return []
        end = data.rfind(b"\n") + 1
        self.offset += end
        rows = []
        for line in data[:end].splitlines():
            try:
                row = json.loads(line)
            except ValueError:
                continue
            if isinstance(row, dict):
                rows.append(row)
        return rows


@dataclass
class TrainProgress:
    """What the bar shows, from the metrics rows: the newest step, its loss and throughput, and the time left.

    The ETA is the steps left times the samples of one step (batch x accumulate x workers) over the newest window's
    samples/s; it comes from the rows alone, so it is the same whenever the driver reads them.
    """

    target: int
    samples_per_step: int
    step: int = 0
    loss: float = math.nan
    samples_per_s: float = math.nan

    def update(self, rows: list[dict[str, Any]]) -> None:
        """Take the newest training row among `rows` (validation and other rows carry no train/loss)."""
        for row in rows:
            if "train/loss" in row and "step" in row:
                self.step = int(row["step"])
                self.loss = float(row["train/loss"])
                self.samples_per_s = float(row.get("train/samples_per_s", math.nan))

    def eta_seconds(self) -> float | None:
        """Seconds left at the newest throughput; None before the first row or without a throughput."""
        if not math.isfinite(self.samples_per_s) or self.samples_per_s <= 0:
            return None
        return max(self.target - self.step, 0) * self.samples_per_step / self.samples_per_s

    def fields(self) -> dict[str, str]:
        """The bar's text fields: loss, samples/s and ETA, as printed."""
        eta = self.eta_seconds()
        return {
            "loss": "-" if math.isnan(self.loss) else f"{self.loss:.4f}",
            "rate": "-" if math.isnan(self.samples_per_s) else f"{self.samples_per_s:.1f}",
            "eta": "-" if eta is None else _clock(eta),
        }


def _clock(seconds: float) -> str:
    s = round(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


@contextmanager
def training_progress(cfg: Config, metrics: Path, enabled: bool = True, poll_seconds: float = 0.5) -> Iterator[None]:
    """Show a progress bar fed by `metrics` (rank 0's metrics.jsonl) while the body runs; nothing when not enabled.

    Lines that Ray forwards from the workers meanwhile are printed above the bar, as evaluation's bar does.
    """
    if not enabled:
        yield
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    t = cfg.train
    state = TrainProgress(target=t.steps, samples_per_step=t.batch_size * t.accumulate * t.workers)
    tail = MetricsTail(metrics)
    tail.skip_existing()
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]}  {task.fields[rate]} samples/s  ETA {task.fields[eta]}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns) as progress:
        task = progress.add_task("training", total=t.steps, **state.fields())

        def refresh() -> None:
            rows = tail.read()
            if rows:
                state.update(rows)
                progress.update(task, completed=state.step, **state.fields())

        stop = threading.Event()

        def follow() -> None:
            while not stop.wait(poll_seconds):
                refresh()

        thread = threading.Thread(target=follow, name="training-progress", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()
            refresh()  # the last rows, written just before fit() returned
