"""The partial episode log, <eval.root>/episodes.partial.jsonl: one line per finished episode, appended and flushed as
the benchmark runs, so that a run that dies keeps what it measured and `eval.resume` can carry on from it.

Each line is a line of episodes.jsonl plus `settings`, a digest of everything that decides an episode's outcome
(the suite's sim section, the servo's limits and stop rule, the device, the runtime and the CNSv2 weights). Episodes
measured under other settings are refused rather than mixed into one table; the digest covers the settings, not the
code, so a resumed run is only as comparable as the code it ran on.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from configs.schema import Config
from evaluation.metrics import Episode
from evaluation.plan import Job
from file_io import write_bytes

PARTIAL = "episodes.partial.jsonl"


class PartialLogError(ValueError):
    """The partial log cannot be resumed from: damaged, or measured under other settings or another plan."""


class _Record(BaseModel):
    """One line of the partial log; strict, so that a damaged line is never read as a good episode."""

    model_config = ConfigDict(extra="forbid", strict=True)

    suite: str
    controller: str
    seed: int
    success: bool
    te_mm: float
    re_deg: float
    steps: int
    reason: str
    initial_te_mm: float
    initial_re_deg: float
    controller_seconds: float
    settings: str


def settings_digest(cfg: Config, checkpoint: str | None) -> str:
    """A 16-hex-digit digest of the settings that decide an episode of the suite whose config is `cfg`.

    `checkpoint`: the CNSv2 checkpoint folder the run measures (`Plan.checkpoint`, absolute), None without CNSv2.
    """
    settings = {
        "sim": cfg.sim.model_dump(mode="json"),
        "servo": cfg.policy.servo.model_dump(mode="json"),
        "stop": [cfg.eval.stop_velocity, cfg.eval.stop_steps],
        "device": cfg.eval.device,
        "runtime": cfg.eval.runtime,
        "checkpoint": checkpoint,
    }
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def episode_record(job: Job, ep: Episode) -> dict[str, Any]:
    """The episodes.jsonl line of one episode (millimetres, degrees, controller seconds)."""
    return {
        "suite": job.suite,
        "controller": job.controller,
        "seed": ep.seed,
        "success": ep.success,
        "te_mm": ep.te_m * 1e3,
        "re_deg": ep.re_deg,
        "steps": ep.steps,
        "reason": ep.reason,
        "initial_te_mm": ep.initial_te_m * 1e3,
        "initial_re_deg": ep.initial_re_deg,
        "controller_seconds": ep.seconds,
    }


def append_partial(root: str | Path, job: Job, ep: Episode, settings: str) -> Path:
    """Append one finished episode to <root>/episodes.partial.jsonl, flushed to disk; returns the file.

    `settings`: the suite's `settings_digest`. `write_report` removes the file once the full report exists.
    """
    path = Path(root) / PARTIAL
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        f.write(json.dumps({**episode_record(job, ep), "settings": settings}) + "\n")
        f.flush()
        os.fsync(f.fileno())
    return path


def resume_partial(root: str | Path, jobs: Sequence[Job], settings: Mapping[str, str]) -> dict[Job, Episode]:
    """The episodes of `jobs` that <root>/episodes.partial.jsonl already holds, keyed by job (without their traces,
    so the plots leave them out); the file is rewritten to exactly those lines, ready to be appended to.

    `settings`: suite name -> `settings_digest` of this run. A last line cut short (the run died while writing it)
    is dropped; nothing else is. No file: nothing to resume, {}.

    Raises:
        PartialLogError: a line that is not a whole, valid record; a record of a job this run does not plan, a
            second record of the same job, or one measured under other settings (the message names the line).
    """
    path = Path(root) / PARTIAL
    if not path.exists():
        return {}
    text = path.read_text()
    lines = text.split("\n")
    torn = lines.pop()  # "" when the file ends in a newline, as every whole line does
    planned = set(jobs)
    kept: dict[Job, Episode] = {}
    good: list[str] = []
    for number, line in enumerate(lines, start=1):
        where = f"{path}:{number}"
        try:
            rec = _Record.model_validate_json(line)
        except ValidationError as err:
            problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'line'}: {e['msg']}" for e in err.errors())
            raise PartialLogError(f"{where} is not a valid episode record ({problems})") from err
        job = Job(rec.suite, rec.controller, rec.seed)
        if job not in planned:
            raise PartialLogError(
                f"{where} is {job.suite}/{job.controller} seed {job.seed}, which this run does not plan; resume with "
                "the suites, controllers, seed and episodes of the run that wrote it"
            )
        if job in kept:
            raise PartialLogError(f"{where} repeats {job.suite}/{job.controller} seed {job.seed}")
        if rec.settings != settings[job.suite]:
            raise PartialLogError(
                f"{where} was measured under other settings (digest {rec.settings}, this run's {settings[job.suite]} "
                f"for suite {job.suite}); run without eval.resume to start over"
            )
        kept[job] = _episode(rec)
        good.append(line + "\n")
    if torn:
        write_bytes(path, "".join(good).encode())
    return kept


def _episode(rec: _Record) -> Episode:
    return Episode(
        success=rec.success,
        te_m=rec.te_mm / 1e3,
        re_deg=rec.re_deg,
        steps=rec.steps,
        initial_re_deg=rec.initial_re_deg,
        seconds=rec.controller_seconds,
        seed=rec.seed,
        reason=rec.reason,
        initial_te_m=rec.initial_te_mm / 1e3,
    )
