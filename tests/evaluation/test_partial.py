"""The partial episode log: what a resumed benchmark keeps, what it drops and what it refuses."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from evaluation.metrics import Episode
from evaluation.partial import PARTIAL, PartialLogError, append_partial, resume_partial, settings_digest
from evaluation.plan import Job
from tests.fixtures.factories import small_config

JOBS = [Job("canonical", "sift_pbvs", 7), Job("canonical", "sift_pbvs", 8), Job("lighting", "sift_pbvs", 7)]
SETTINGS = {"canonical": "a" * 16, "lighting": "b" * 16}


def _episode(seed: int, success: bool = True) -> Episode:
    return Episode(success, 0.0021, 0.3, 140, 25.0, seconds=1.5, seed=seed, reason="stop", initial_te_m=float("nan"))


def _log(root: Path, *jobs: Job) -> Path:
    for job in jobs:
        path = append_partial(root, job, _episode(job.seed), SETTINGS[job.suite])
    return path


@pytest.mark.unit
def test_a_resumed_log_gives_back_its_episodes_and_drops_only_a_torn_last_line(tmp_path: Path) -> None:
    assert resume_partial(tmp_path, JOBS, SETTINGS) == {}  # nothing logged yet
    path = _log(tmp_path, JOBS[2], JOBS[0])
    whole = path.read_text()
    path.write_text(whole + '{"suite": "canonical", "contr')  # the run died while writing its third line
    kept = resume_partial(tmp_path, JOBS, SETTINGS)
    assert list(kept) == [JOBS[2], JOBS[0]]
    ep = kept[JOBS[0]]
    assert (ep.success, ep.te_m, ep.re_deg, ep.steps, ep.seconds, ep.seed, ep.reason) == (
        True,
        pytest.approx(0.0021),
        0.3,
        140,
        1.5,
        7,
        "stop",
    )
    assert math.isnan(ep.initial_te_m) and ep.trace is None
    assert path.read_text() == whole  # ready to be appended to: the torn line is gone, the whole ones stay
    append_partial(tmp_path, JOBS[1], _episode(8), SETTINGS["canonical"])
    assert list(resume_partial(tmp_path, JOBS, SETTINGS)) == [JOBS[2], JOBS[0], JOBS[1]]


@pytest.mark.unit
@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda r: {**r, "te_mm": "2.1"}, r":1 is not a valid episode record.*te_mm"),
        (lambda r: {k: v for k, v in r.items() if k != "settings"}, r":1 is not a valid episode record.*settings"),
        (lambda r: {**r, "controller": "orb_pbvs"}, r":1 is canonical/orb_pbvs seed 7, which this run does not plan"),
        (lambda r: {**r, "settings": "c" * 16}, r":1 was measured under other settings \(digest c+, this run's a+"),
    ],
)
def test_a_damaged_or_foreign_record_is_refused_with_its_line(tmp_path: Path, damage, message: str) -> None:  # type: ignore[no-untyped-def]
    path = _log(tmp_path, JOBS[0], JOBS[1])
    first, second = path.read_text().splitlines()
    path.write_text(json.dumps(damage(json.loads(first))) + "\n" + second + "\n")
    with pytest.raises(PartialLogError, match=message):
        resume_partial(tmp_path, JOBS, SETTINGS)


@pytest.mark.unit
def test_a_cut_line_before_the_last_and_a_repeated_job_are_refused(tmp_path: Path) -> None:
    path = _log(tmp_path, JOBS[0], JOBS[1])
    first, second = path.read_text().splitlines()
    path.write_text(first[:30] + "\n" + second + "\n")
    with pytest.raises(PartialLogError, match=rf"{PARTIAL}:1 is not a valid episode record"):
        resume_partial(tmp_path, JOBS, SETTINGS)
    path.write_text(first + "\n" + second + "\n" + first + "\n")
    with pytest.raises(PartialLogError, match=r":3 repeats canonical/sift_pbvs seed 7"):
        resume_partial(tmp_path, JOBS, SETTINGS)


@pytest.mark.unit
def test_the_settings_digest_follows_what_decides_an_episode_and_nothing_else() -> None:
    base = settings_digest(small_config(), None)
    assert len(base) == 16 and base == settings_digest(small_config("eval.workers=7", "eval.root=elsewhere"), None)
    assert settings_digest(small_config(), "/ckpt/step_000100") != base
    changed = ["eval.device=cuda", "sim.camera.width=512", "policy.servo.stop_steps=99", "eval.stop_steps=3"]
    assert len({base, *(settings_digest(small_config(c), None) for c in changed)}) == 1 + len(changed)
