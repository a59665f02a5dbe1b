"""Look at a dataset: counts, label statistics, a full validation of every shard, and a PNG grid of sample pairs.

    python -m datagen.inspect <root> [--out grid.png] [--samples 16]

Every published shard is opened (which checks every array against the checksums in its sidecar), read in slices and
re-validated (`validate_arrays`), and its group attributes are compared with its key. Bad shards are named and the
command exits with status 1; the statistics cover the good ones. The grid (default `<root>/inspect.png`) shows
(desired | current) pairs spread evenly over the dataset, each captioned with its shard, index, policy version and
label (v, w).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from shards import (
    DESIRED_ARRAY,
    SCHEMA,
    DatasetReader,
    ShardError,
    ShardMeta,
    validate_arrays,
)

LABELS = ("vx", "vy", "vz", "wx", "wy", "wz", "|v|", "|w|")
# Samples per validation slice: about this many raw bytes.
SLICE_BYTES = 32 << 20
THUMB = 256  # largest thumbnail side in the grid


class InspectError(ShardError):
    """Some shards failed validation; `stats` holds what the good ones gave, `bad` maps shard id to the problem."""

    def __init__(self, message: str, stats: dict) -> None:
        super().__init__(message)
        self.stats = stats
        self.bad: dict[str, str] = stats["bad"]


@dataclass
class _Moments:
    n: int = 0
    total: np.ndarray = field(default_factory=lambda: np.zeros(len(LABELS)))
    squares: np.ndarray = field(default_factory=lambda: np.zeros(len(LABELS)))
    low: np.ndarray = field(default_factory=lambda: np.full(len(LABELS), np.inf))
    high: np.ndarray = field(default_factory=lambda: np.full(len(LABELS), -np.inf))

    def add(self, vel: np.ndarray) -> None:
        v = vel.astype(np.float64)
        x = np.concatenate(
            [v, np.linalg.norm(v[:, :3], axis=1, keepdims=True), np.linalg.norm(v[:, 3:], axis=1)[:, None]], 1
        )
        self.n += len(x)
        self.total += x.sum(0)
        self.squares += (x * x).sum(0)
        if len(x):
            self.low = np.minimum(self.low, x.min(0))
            self.high = np.maximum(self.high, x.max(0))

    def merge(self, other: _Moments) -> None:
        self.n += other.n
        self.total += other.total
        self.squares += other.squares
        self.low = np.minimum(self.low, other.low)
        self.high = np.maximum(self.high, other.high)

    def table(self) -> dict[str, dict[str, float]]:
        if not self.n:
            return {}
        mean = self.total / self.n
        std = np.sqrt(np.maximum(self.squares / self.n - mean**2, 0.0))
        return {
            name: {"mean": float(mean[i]), "std": float(std[i]), "min": float(self.low[i]), "max": float(self.high[i])}
            for i, name in enumerate(LABELS)
        }


def check_shard(reader: DatasetReader, shard: ShardMeta, slice_bytes: int = SLICE_BYTES) -> tuple[_Moments, dict]:
    """Validate one shard completely (attributes, every slice, checksums); returns its label moments and the
    sample count per policy version. A ShardError names the shard and the problem."""
    try:
        return _check_shard(reader, shard, slice_bytes)
    except ShardError as e:
        if str(e).startswith(f"shard {shard.id}: "):
            raise
        raise ShardError(f"shard {shard.id}: {e}", array=e.array, shard=shard.id) from e


def _check_shard(reader: DatasetReader, shard: ShardMeta, slice_bytes: int) -> tuple[_Moments, dict]:
    try:
        attrs = json.loads((shard.path / "zarr.json").read_text()).get("attributes", {})
    except (OSError, ValueError) as e:
        raise ShardError(f"unreadable group metadata ({e})", shard=shard.id) from None
    expected = {"schema": SCHEMA, "producer": shard.key.producer, "round": shard.key.round}
    for name, value in expected.items():
        if attrs.get(name) != value:
            raise ShardError(f"group attribute {name} = {attrs.get(name)!r}, expected {value!r}", shard=shard.id)

    # Opening the shard checks every array against the sidecar's checksums (DatasetReader.arrays); what is left
    # here is the content: shapes, dtypes, ranges and rigid poses, slice by slice.
    arrays = reader.arrays(shard)
    names = [name for name in arrays if name != DESIRED_ARRAY]
    des = reader.read(shard, 0, 0, names=[DESIRED_ARRAY], all_desired=True)[DESIRED_ARRAY]
    per_sample = sum(int(np.prod(arrays[name].shape[1:])) * arrays[name].dtype.itemsize for name in names)
    rows = max(1, slice_bytes // max(1, per_sample))
    moments, versions = _Moments(), {}
    for start in range(0, shard.n, rows):
        stop = min(shard.n, start + rows)
        part = reader.read(shard, start, stop, names=names, all_desired=True)
        validate_arrays({**part, DESIRED_ARRAY: des}, height=reader.height, width=reader.width, offset=start)
        moments.add(part["vel"])
        for v, c in zip(*np.unique(part["policy_version"], return_counts=True), strict=True):
            versions[int(v)] = versions.get(int(v), 0) + int(c)
    return moments, versions


def inspect(root: str | Path, out: str | Path | None = None, samples: int = 16, *, console: Any = None) -> dict:
    """Validate every shard of `root`, print counts and label statistics, write the sample grid; return the stats.

    Raises InspectError (a ShardError naming each bad shard) after printing, if any shard fails; FileNotFoundError
    if `root` is not a dataset.
    """
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    console = console or Console()
    started = time.perf_counter()
    reader = DatasetReader(root)
    root = Path(root)
    out = Path(out) if out is not None else root / "inspect.png"

    producers: dict[str, dict[str, int]] = {}
    rounds: dict[str, dict[str, int]] = {}
    versions: dict[int, dict[str, int]] = {}
    bad: dict[str, str] = {}
    good: list[ShardMeta] = []
    moments = _Moments()
    progress = Progress(
        TextColumn("inspect"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("shards"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
        disable=not console.is_terminal,
    )
    with progress:
        task = progress.add_task("shards", total=len(reader.shards))
        for shard in reader.shards:
            try:
                shard_moments, shard_versions = check_shard(reader, shard)
            except ShardError as e:
                bad[shard.id] = str(e).removeprefix(f"shard {shard.id}: ")
                progress.advance(task)
                continue
            good.append(shard)
            moments.merge(shard_moments)
            for table, key in (
                (producers, shard.key.producer),
                (rounds, f"{shard.key.producer}-r{shard.key.round:04d}"),
            ):
                row = table.setdefault(key, {"shards": 0, "samples": 0})
                row["shards"] += 1
                row["samples"] += shard.n
            for v, count in shard_versions.items():
                row = versions.setdefault(v, {"shards": 0, "samples": 0})
                row["shards"] += 1
                row["samples"] += count
            progress.advance(task)

    n_samples = sum(s.n for s in good)
    written = write_grid(reader, good, out, samples) if samples > 0 and n_samples else None
    stats = {
        "root": str(root),
        "shards": len(good),
        "samples": n_samples,
        "bytes_on_disk": reader.disk_bytes(),
        "producers": dict(sorted(producers.items())),
        "rounds": dict(sorted(rounds.items())),
        "policy_versions": dict(sorted(versions.items())),
        "labels": moments.table(),
        "bad": bad,
        "out": str(written) if written else None,
    }
    _print(console, stats)
    grid = f"grid {written}" if written else "no grid"
    summary = (
        f"inspect: {len(good)} shards, {n_samples:,} samples, {stats['bytes_on_disk'] / 1e6:.1f} MB on disk, "
        f"{grid} ({time.perf_counter() - started:.1f} s)"
    )
    if bad:
        summary += f"; {len(bad)} BAD shard{'s' if len(bad) > 1 else ''}: {', '.join(bad)}"
    console.print(summary, highlight=False, soft_wrap=True)
    if bad:
        details = "; ".join(f"shard {k}: {v}" for k, v in bad.items())
        raise InspectError(f"{root}: {len(bad)} bad shard(s): {details}", stats)
    return stats


def _print(console: Any, stats: dict) -> None:
    from rich.table import Table

    counts = Table(title=f"{stats['root']}: counts", title_justify="left")
    for column in ("group", "key", "shards", "samples"):
        counts.add_column(column, justify="right" if column in ("shards", "samples") else "left")
    for group, key in (("producer", "producers"), ("round", "rounds"), ("policy_version", "policy_versions")):
        for name, row in stats[key].items():
            label = "expert (-1)" if key == "policy_versions" and name == -1 else str(name)
            counts.add_row(group, label, f"{row['shards']:,}", f"{row['samples']:,}")
    console.print(counts)
    if stats["labels"]:
        labels = Table(title="labels (normalised velocity)", title_justify="left")
        labels.add_column("component")
        for column in ("mean", "std", "min", "max"):
            labels.add_column(column, justify="right")
        for name, row in stats["labels"].items():
            labels.add_row(name, f"{row['mean']:+.4f}", f"{row['std']:.4f}", f"{row['min']:+.4f}", f"{row['max']:+.4f}")
        console.print(labels)
    for shard_id, problem in stats["bad"].items():
        console.print(f"[bold red]BAD[/] shard {shard_id}: {problem}", highlight=False, soft_wrap=True)


def write_grid(reader: DatasetReader, shards: list[ShardMeta], out: Path, samples: int) -> Path:
    """A PNG of `samples` (desired | current) pairs spread evenly over `shards`, captioned with v and w."""
    total = sum(s.n for s in shards)
    picks = np.unique(np.linspace(0, total - 1, min(samples, total)).round().astype(np.int64))
    starts = np.cumsum([0] + [s.n for s in shards])
    tiles = []
    for g in picks:
        j = int(np.searchsorted(starts, g, side="right") - 1)
        shard, i = shards[j], int(g - starts[j])
        part = reader.read(shard, i, i + 1, names=["cur_rgb", DESIRED_ARRAY, "des_index", "vel", "policy_version"])
        v = part["vel"][0].astype(np.float64)
        pv = int(part["policy_version"][0])
        captions = (
            f"{shard.id}[{i}]" + (f" policy v{pv}" if pv >= 0 else " expert"),
            "v " + " ".join(f"{c:+.2f}" for c in v[:3]),
            "w " + " ".join(f"{c:+.2f}" for c in v[3:]),
        )
        tiles.append((part[DESIRED_ARRAY][part["des_index"][0]], part["cur_rgb"][0], captions))
    image = draw_pairs(tiles, "each pair: desired | current; label v (m/s, / d*) and w (rad/s)")
    out.parent.mkdir(parents=True, exist_ok=True)
    image.save(out)
    return out


def draw_pairs(tiles: list[tuple[np.ndarray, np.ndarray, tuple[str, ...]]], title: str) -> Any:
    """A PIL image of (desired | current) thumbnails in a grid, each with its caption lines under it."""
    from PIL import Image, ImageDraw, ImageFont

    h, w = tiles[0][0].shape[:2]
    scale = min(1.0, THUMB / max(h, w))
    tw, th = max(1, round(w * scale)), max(1, round(h * scale))
    try:
        font = ImageFont.load_default(size=12)
    except TypeError:  # Pillow < 10.1
        font = ImageFont.load_default()
    line, pad = 15, 4
    n_lines = max(len(t[2]) for t in tiles)
    cell_w, cell_h = 2 * tw + 3 * pad, th + n_lines * line + 3 * pad
    cols = max(1, math.ceil(math.sqrt(len(tiles))))
    rows = math.ceil(len(tiles) / cols)
    header = line + 2 * pad
    canvas = Image.new("RGB", (cols * cell_w, header + rows * cell_h), (32, 32, 32))
    draw = ImageDraw.Draw(canvas)
    draw.text((pad, pad), title, fill=(200, 200, 200), font=font)
    for k, (des, cur, captions) in enumerate(tiles):
        x0, y0 = (k % cols) * cell_w + pad, header + (k // cols) * cell_h
        for dx, rgb in ((0, des), (tw + pad, cur)):
            canvas.paste(Image.fromarray(rgb).resize((tw, th), Image.Resampling.BILINEAR), (x0 + dx, y0))
        for r, text in enumerate(captions):
            draw.text((x0, y0 + th + pad + r * line), text, fill=(235, 235, 235), font=font)
    return canvas


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m datagen.inspect", description=__doc__.split("\n\n")[0])
    parser.add_argument("root", help="dataset root (holds info.json)")
    parser.add_argument("--out", default=None, help="PNG grid of sample pairs (default: <root>/inspect.png)")
    parser.add_argument("--samples", type=int, default=16, help="pairs in the grid (0: no grid)")
    args = parser.parse_args(argv)
    if args.samples < 0:
        parser.error(f"--samples must be >= 0, got {args.samples}")
    try:
        inspect(args.root, args.out, args.samples)
    except FileNotFoundError as e:
        print(f"{parser.prog}: error: {e}", file=sys.stderr)
        return 2
    except ShardError as e:
        print(f"{parser.prog}: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
