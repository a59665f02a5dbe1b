"""The benchmark report: results.json rows, a results.md table, episodes.jsonl, PNG curves and paths, and W&B."""

from __future__ import annotations

import io
import json
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from configs.schema import Config
from evaluation.episodes import CNS_GAIN
from evaluation.metrics import Episode, by_initial_rotation, summarise
from evaluation.partial import PARTIAL, episode_record
from evaluation.plan import Job, Plan
from evaluation.suites import Suite
from file_io import write_bytes

SPLITS = ("S", "M", "L")


@dataclass(frozen=True)
class Report:
    """Where the report went."""

    markdown: Path
    json: Path
    episodes: Path
    images: list[Path]
    rows: list[dict[str, Any]]
    wandb_run: Path | None = None  # the W&B run folder, when W&B is on


def _grouped(results: Sequence[tuple[Job, Episode]]) -> dict[tuple[str, str], list[Episode]]:
    out: dict[tuple[str, str], list[Episode]] = {}
    for job, ep in results:
        out.setdefault((job.suite, job.controller), []).append(ep)
    return out


def _failures(episodes: Sequence[Episode]) -> str:
    # The part before ":" names the kind of end ("controller failed: 3 matches ..."); episodes.jsonl keeps the rest.
    counts = Counter((e.reason or "unknown").split(":")[0] for e in episodes if not e.success)
    return "; ".join(f"{reason} x{n}" for reason, n in counts.most_common())


def _row(suite: str, controller: str, split: str, episodes: Sequence[Episode]) -> dict[str, Any]:
    return {
        "suite": suite,
        "controller": controller,
        "split": split,
        **summarise(episodes),
        "failures": _failures(episodes),
        "initial_re_deg_min": min(e.initial_re_deg for e in episodes),
        "initial_re_deg_max": max(e.initial_re_deg for e in episodes),
    }


def make_rows(suites: Sequence[Suite], results: Sequence[tuple[Job, Episode]]) -> list[dict[str, Any]]:
    """One row per (suite, controller) over all episodes (split "all"), then one per S/M/L third of them."""
    rows = []
    for (suite, controller), eps in _grouped(results).items():
        rows.append(_row(suite, controller, "all", eps))
        rows += [_row(suite, controller, split, part) for split, part in by_initial_rotation(eps).items() if part]
    order = {s.name: i for i, s in enumerate(suites)}
    rows.sort(key=lambda r: order.get(r["suite"], len(order)))  # stable: controllers and splits keep their order
    return rows


def _pm(mean: float, std: float, digits: int) -> str:
    return "-" if math.isnan(mean) else f"{mean:.{digits}f} ± {std:.{digits}f}"


def _sr(row: dict[str, Any]) -> str:
    interval = f"{100 * row['sr_low']:.0f}-{100 * row['sr_high']:.0f}"
    return f"{row['successes']}/{row['episodes']} ({100 * row['sr']:.0f} %, {interval})"


def _assets(c: Config, record: dict[str, Any] | None) -> str:
    """`held-out assets (meshes: 1 from /data/meshes + procedural; ...)`: the split and, when checked, its sources
    and how many folder assets it holds."""
    name = {"train": "train", "heldout": "held-out"}[c.sim.assets.split]
    if not record:
        return f"{name} assets"
    parts = []
    for kind, r in record.items():
        if isinstance(r, dict):
            count = f"{r[c.sim.assets.split]} from " if r["folders"] else ""
            sources = [*r["folders"], *(["procedural"] if r["procedural"] else [])]
            parts.append(f"{kind}: {count}{' + '.join(sources) or 'none'}")
    return f"{name} assets ({'; '.join(parts)})"


def _setup(suite: Suite, c: Config, assets: dict[str, Any] | None = None) -> str:
    cam, env, poses = c.sim.camera, c.sim.env, c.sim.poses
    initial = "the desired distribution" if poses.initial == poses.desired else "the training distribution"
    return (
        f"- **{suite.name}**: {suite.description}. {cam.width}x{cam.height} px, f = {cam.focal_scale:g} W, "
        f"d* = {env.scene_scale:g}, {1 / env.dt:.0f} Hz, at most {env.max_steps} steps, {_assets(c, assets)}, "
        f"initial pose from {initial}, CNSv2 {'aware' if c.policy.servo.aware else 'unaware'} of K and d*."
    )


def _data_lines(plan: Plan) -> list[str]:
    """The header's account of where the suites' world came from: the dataset followed and the keys concerned."""
    if plan.followed is None:
        return ["Scene settings: the config file's (no dataset recorded at data.root).", ""]
    notes = plan.followed.notes() or [f"the config file agrees with the dataset {plan.followed.root}"]
    return [f"Scene settings follow the run's dataset {plan.followed.root}: " + "; ".join(notes) + ".", ""]


def _runtime_note(plan: Plan) -> str:
    return f", run on onnxruntime from the export {plan.export}" if plan.export else ""


def markdown(cfg: Config, plan: Plan, rows: Sequence[dict[str, Any]]) -> str:
    """The results table, the S/M/L table and each suite's setup, as Markdown."""
    lines = [
        f"# Servo benchmark: {cfg.run.name}",
        "",
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC. Commands executed at {CNS_GAIN:g}x. Success: final TE < 0.1 "
        f"|desired position| and RE < 10°. TE and RE over successes; SR with a 95 % Wilson interval. "
        f"CNSv2 checkpoint: {plan.checkpoint or 'not measured'}{_runtime_note(plan)}. Suite setups (with their "
        "assets) at the end.",
        "",
        *_data_lines(plan),
        "| suite | controller | SR (95 % CI) | TE (mm) | TE median (mm) | RE (°) | steps | FPS | failures |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if r["split"] == "all":
            steps = "-" if math.isnan(r["steps_mean"]) else f"{r['steps_mean']:.0f}"
            fps = "-" if math.isnan(r["fps"]) else f"{r['fps']:.0f}"
            median = "-" if math.isnan(r["te_mm_median"]) else f"{r['te_mm_median']:.2f}"
            lines.append(
                f"| {r['suite']} | {r['controller']} | {_sr(r)} | {_pm(r['te_mm_mean'], r['te_mm_std'], 2)} | "
                f"{median} | {_pm(r['re_deg_mean'], r['re_deg_std'], 3)} | {steps} | {fps} | {r['failures'] or '-'} |"
            )
    lines += [
        "",
        "## By initial rotation (thirds of each row's episodes: S, M, L)",
        "",
        "| suite | controller | " + " | ".join(f"{s}: SR, TE (mm)" for s in SPLITS) + " |",
        "|---|---|" + "---|" * len(SPLITS),
    ]
    by_key: dict[tuple[str, str], dict[str, dict[str, Any]]] = {}
    for r in rows:
        if r["split"] != "all":
            by_key.setdefault((r["suite"], r["controller"]), {})[r["split"]] = r
    for (suite, controller), parts in by_key.items():
        cells = []
        for s in SPLITS:
            p = parts.get(s)
            cells.append(
                "-"
                if p is None
                else f"{p['successes']}/{p['episodes']}, {_pm(p['te_mm_mean'], p['te_mm_std'], 2)} "
                f"({p['initial_re_deg_min']:.0f}-{p['initial_re_deg_max']:.0f}°)"
            )
        lines.append(f"| {suite} | {controller} | " + " | ".join(cells) + " |")
    lines += ["", "## Suites", ""]
    lines += [_setup(s, plan.configs[s.name], plan.assets.get(s.name)) for s in plan.suites]
    return "\n".join(lines) + "\n"


def plot_errors(suite: str, groups: dict[str, list[Episode]], path: Path) -> Path:
    """Translation and rotation error against step, one colour per controller, one line per episode."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    colours = plt.get_cmap("tab10")
    for k, (controller, eps) in enumerate(groups.items()):
        for i, ep in enumerate(e for e in eps if e.trace is not None):
            err = np.maximum(ep.trace.errors, 1e-6)  # log axes
            label = controller if i == 0 else None
            style = "-" if ep.success else ":"
            axes[0].plot(err[:, 0] * 1e3, style, color=colours(k), alpha=0.7, lw=1, label=label)
            axes[1].plot(err[:, 1], style, color=colours(k), alpha=0.7, lw=1, label=label)
    for ax, name in zip(axes, ("translation error (mm)", "rotation error (°)"), strict=True):
        ax.set_yscale("log")
        ax.set_xlabel("step (50 Hz)")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3, which="both")
    axes[0].legend(fontsize=8)
    fig.suptitle(f"{suite}: error against step (dotted: failed episodes)")
    return _save(fig, path)


def plot_trajectories(suite: str, groups: dict[str, list[Episode]], count: int, path: Path) -> Path:
    """Camera centres of the first `count` episodes in 3-D, one panel per controller (world frame, d* units)."""
    return _save(trajectory_figure(suite, groups, count), path, tight=False)  # its layout leaves room for the legend


def _cube(points: Sequence[np.ndarray]) -> tuple[np.ndarray, float]:
    """Centre and half-side of the smallest axis-aligned cube around every point (with a small margin)."""
    pts = np.concatenate([np.atleast_2d(p) for p in points])
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    return (lo + hi) / 2, max(float((hi - lo).max()) / 2 * 1.05, 1e-3)


def trajectory_figure(suite: str, groups: dict[str, list[Episode]], count: int) -> Any:
    """The figure of `plot_trajectories`: every panel on the same cube of world space, so that panels compare at a
    glance; colour marks the episode (the same seed, hence the same start and goal, in every panel) and the line
    style its outcome, as the legend says."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    n = len(groups)
    cols = min(n, 3)
    rows = math.ceil(n / cols)
    fig = plt.figure(figsize=(5 * cols, 4.5 * rows))
    colours = plt.get_cmap("tab10")
    shown = {c: [e for e in eps if e.trace is not None][:count] for c, eps in groups.items()}
    points = [np.zeros(3)] + [p for eps in shown.values() for e in eps for p in (e.trace.positions, e.trace.desired)]  # type: ignore[union-attr]
    centre, half = _cube(points)
    seeds: dict[int, int] = {}  # seed -> colour index, in order of first appearance
    for k, (controller, eps) in enumerate(shown.items()):
        ax = fig.add_subplot(rows, cols, k + 1, projection="3d")
        for ep in eps:
            colour = colours(seeds.setdefault(ep.seed, len(seeds)) % 10)
            p, d = ep.trace.positions, ep.trace.desired  # type: ignore[union-attr]
            ax.plot(*p.T, color=colour, lw=1.2, ls="-" if ep.success else ":")
            ax.scatter(*p[0], color=colour, marker="o", s=18)
            ax.scatter(*d, color=colour, marker="*", s=80)
        ax.scatter(0, 0, 0, color="k", marker="x", s=40)
        ax.set_title(controller, fontsize=10)
        ax.set_xlim(centre[0] - half, centre[0] + half)
        ax.set_ylim(centre[1] - half, centre[1] + half)
        ax.set_zlim(centre[2] - half, centre[2] + half)
        ax.set_xlabel("x")
        ax.set_ylabel("y")
        ax.set_zlabel("z")
        ax.set_box_aspect((1, 1, 1))
    handles = [Line2D([], [], color=colours(i % 10), lw=2, label=f"seed {s}") for s, i in seeds.items()]
    handles += [
        Line2D([], [], color="k", ls="-", label="success"),
        Line2D([], [], color="k", ls=":", label="failed"),
        Line2D([], [], color="k", ls="", marker="o", label="start"),
        Line2D([], [], color="k", ls="", marker="*", markersize=10, label="goal"),
        Line2D([], [], color="k", ls="", marker="x", label="scene centre"),
    ]
    ncol = min(len(handles), 4 * cols)
    lines = math.ceil(len(handles) / ncol)
    fig.set_figheight(fig.get_figheight() + 0.25 * lines + 0.3)  # room below the panels for the legend
    fig.legend(handles=handles, loc="lower center", ncol=ncol, fontsize=8, frameon=False)
    fig.suptitle(f"{suite}: camera paths\none panel per controller, all on the same axes (d* units)", fontsize=10)
    fig.tight_layout(rect=(0, (0.25 * lines + 0.1) / fig.get_figheight(), 1, 1))
    return fig


def _save(fig: Any, path: Path, *, tight: bool = True) -> Path:
    import matplotlib.pyplot as plt

    if tight:
        fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return _write(path, buf.getvalue())


def _write(path: Path, data: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_bytes(path, data.encode() if isinstance(data, str) else data)


def write_report(cfg: Config, plan: Plan, results: Sequence[tuple[Job, Episode]]) -> Report:
    """Write results.md, results.json, episodes.jsonl and the PNGs to eval.root, and log them to W&B."""
    out = Path(cfg.eval.root)
    suites = plan.suites
    rows = make_rows(suites, results)
    md = _write(out / "results.md", markdown(cfg, plan, rows))
    js = _write(out / "results.json", json.dumps(rows, indent=1, allow_nan=True) + "\n")
    eps = _write(out / "episodes.jsonl", "".join(json.dumps(episode_record(j, e)) + "\n" for j, e in results))
    images = []
    grouped = _grouped(results)
    for s in suites:
        groups = {c: grouped[(s.name, c)] for c in cfg.eval.controllers if (s.name, c) in grouped}
        if groups:
            images.append(plot_errors(s.name, groups, out / f"errors_{s.name}.png"))
            if cfg.eval.trajectories:
                images.append(plot_trajectories(s.name, groups, cfg.eval.trajectories, out / f"paths_{s.name}.png"))
    wandb_run = _log_wandb(cfg, rows, images)
    (out / PARTIAL).unlink(missing_ok=True)  # episodes.jsonl now holds every episode
    return Report(md, js, eps, images, rows, wandb_run)


def _log_wandb(cfg: Config, rows: Sequence[dict[str, Any]], images: Sequence[Path]) -> Path | None:
    """Log the table and the images to the benchmark's own W&B run; returns its folder (None when W&B is off)."""
    from runtime.tracking import wandb_mode, wandb_settings

    mode = wandb_mode(cfg.eval.wandb)
    if mode == "disabled":
        return None
    import wandb

    # W&B prints through process-wide settings, taken from wandb.setup, not from the run's own.
    wandb.setup(settings=wandb.Settings(**wandb_settings()))
    run = wandb.init(
        project=cfg.eval.wandb.project,
        entity=cfg.eval.wandb.entity,
        name=f"{cfg.run.name}-eval",
        job_type="eval",
        dir=cfg.eval.root,
        mode=mode,
        config=cfg.model_dump(mode="json"),
    )
    folder = Path(run.dir).parent  # run.dir is <run folder>/files
    try:
        columns = list(rows[0]) if rows else []
        table = wandb.Table(columns=columns, data=[[r[c] for c in columns] for r in rows])
        run.log({"eval/results": table, **{f"eval/{p.stem}": wandb.Image(str(p)) for p in images}})
        for r in rows:
            if r["split"] == "all":
                run.summary[f"{r['suite']}/{r['controller']}/sr"] = r["sr"]
    finally:
        run.finish()
    return folder
