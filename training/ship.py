"""`python -m training.ship`: package a trained checkpoint as a shipped policy (`policy/pretrained/<name>/`).

Copies the weights and `policy.json` (never the optimiser state) and writes `MODEL_CARD.md`: the training config,
the data the run consumed (counts per producer, DAgger rounds), steps, wall time, the last validation metrics, and
the closed-loop evaluation table when one is given. Refuses a package above the size limit.

    python -m training.ship runs/cpu/checkpoints/step_003000 --name cnsv2-cpu --run runs/cpu \\
        --wall-minutes 88 --eval runs/cpu/eval/results.md
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from file_io import atomic_dir
from policy.checkpoint import META, WEIGHTS, read_meta
from policy.pretrained import PRETRAINED_DIR

MAX_BYTES = 25 * 1024 * 1024
CARD = "MODEL_CARD.md"


def _data_counts(root: Path) -> dict[str, int]:
    from shards import DatasetReader

    counts: dict[str, int] = {}
    rounds: set[int] = set()
    for s in DatasetReader(root).refresh():
        counts[s.key.producer] = counts.get(s.key.producer, 0) + s.n
        if s.key.producer == "dagger":
            rounds.add(s.key.round)
    counts["dagger_rounds"] = len(rounds)
    return counts


def _last_validation(metrics: Path) -> dict[str, float]:
    if not metrics.is_file():
        return {}
    rows = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    val = [r for r in rows if "val/loss" in r]
    return val[-1] if val else {}


def model_card(name: str, meta: dict, run: Path | None, wall_minutes: float | None, eval_md: Path | None) -> str:
    """The model card's markdown."""
    lines = [f"# {name}", "", "A CNSv2 visual-servo policy trained by this project's CPU recipe.", ""]
    lines += [f"- policy version (training step): {meta['policy_version']}", f"- created: {meta['created']}"]
    if wall_minutes is not None:
        lines.append(
            f"- wall time, empty root to this checkpoint (producers and trainer together): {wall_minutes:g} min"
        )
    if run is not None:
        data_root = run / "data"
        if data_root.is_dir():
            counts = _data_counts(data_root)
            lines.append(
                "- data consumed: "
                + ", ".join(f"{k} {v}" for k, v in counts.items())
                + " (samples per producer; DAgger rounds = pushed policies that collected data)"
            )
        val = _last_validation(run / "metrics.jsonl")
        if val:
            keys = ("val/loss", "val/cos", "val/match_acc", *(k for k in val if k.startswith("val/match_acc/")))
            lines.append(f"- last validation (step {val['step']}, held-out scenes): " + ", ".join(
                f"{k.removeprefix('val/')} {val[k]:.3f}" for k in keys if k in val
            ))  # fmt: skip
    lines += ["", "## Closed-loop evaluation", ""]
    if eval_md is not None and eval_md.is_file():
        lines += [eval_md.read_text().strip(), ""]
    else:
        lines += ["Not evaluated when shipped.", ""]
    lines += ["## Network", "", "```json", json.dumps(meta["policy"], indent=1), "```", ""]
    if run is not None and (run / "train_config.yaml").is_file():
        lines += ["## Training config", "", "```yaml", (run / "train_config.yaml").read_text().strip(), "```", ""]
    return "\n".join(lines)


def ship(
    checkpoint: Path,
    name: str,
    run: Path | None = None,
    wall_minutes: float | None = None,
    eval_md: Path | None = None,
    dest_root: Path = PRETRAINED_DIR,
) -> Path:
    """Write `dest_root/<name>/` atomically: weights, policy.json and MODEL_CARD.md; returns the folder.

    Raises ValueError when the package would exceed 25 MB, FileNotFoundError when `checkpoint` is not one.
    """
    meta = read_meta(checkpoint)
    dest_root.mkdir(parents=True, exist_ok=True)
    out = dest_root / name
    with atomic_dir(out) as tmp:  # ordinary modes (less the umask), not mkdtemp's private 0o700: it is package data
        shutil.copy2(checkpoint / WEIGHTS, tmp / WEIGHTS)
        # The optimiser state stays behind, and so does its checksum.
        shipped = {**meta, "sha256": {k: v for k, v in (meta.get("sha256") or {}).items() if k == WEIGHTS}}
        (tmp / META).write_text(json.dumps(shipped, indent=1))
        (tmp / CARD).write_text(model_card(name, meta, run, wall_minutes, eval_md))
        size = sum(p.stat().st_size for p in tmp.iterdir())
        if size > MAX_BYTES:
            raise ValueError(f"{name}: {size / 2**20:.1f} MB exceeds the {MAX_BYTES / 2**20:.0f} MB limit")
    return out


def main(argv: list[str] | None = None) -> int:
    """CLI; prints where the policy went and its size."""
    parser = argparse.ArgumentParser(prog="python -m training.ship", description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--name", required=True)
    parser.add_argument("--run", type=Path, default=None, help="the run folder (metrics, data, train_config.yaml)")
    parser.add_argument("--wall-minutes", type=float, default=None)
    parser.add_argument("--eval", type=Path, default=None, help="results.md of the closed-loop evaluation")
    args = parser.parse_args(argv)
    out = ship(args.checkpoint, args.name, args.run, args.wall_minutes, args.eval)
    size = sum(p.stat().st_size for p in out.iterdir())
    print(f"ship: {args.checkpoint} -> {out} ({size / 2**20:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
