"""The partial episode log: what a resumed benchmark keeps, what it drops and what it refuses."""

from __future__ import annotations

import json
import math
from dataclasses import astuple
from pathlib import Path
from types import SimpleNamespace

import pytest

from evaluation.metrics import Episode
from evaluation.partial import PARTIAL, PartialLogError, append_partial, resume_partial, settings_digest
from evaluation.plan import Job
from tests.fixtures.factories import small_config

JOBS = [Job("canonical", "sift_pbvs", 7), Job("canonical", "sift_pbvs", 8), Job("lighting", "sift_pbvs", 7)]
SETTINGS = {"canonical": "a" * 16, "lighting": "b" * 16}


def _episode(seed: int, initial_te_m: float = 0.25) -> Episode:
    return Episode(True, 0.0021, 0.3, 140, 25.0, seconds=1.5, seed=seed, reason="stop", initial_te_m=initial_te_m)


def _log(root: Path, *jobs: Job) -> Path:  # the root need not exist yet
    for job in jobs:
        path = append_partial(root, job, _episode(job.seed), SETTINGS[job.suite])
    return path


@pytest.mark.unit
def test_a_resumed_log_gives_back_its_episodes_and_drops_only_a_torn_last_line(tmp_path: Path) -> None:
    root = tmp_path / "runs" / "eval"
    assert resume_partial(root, JOBS, SETTINGS) == {}  # nothing logged yet
    path = _log(root, JOBS[2], JOBS[0])
    whole = path.read_text()
    path.write_text(whole + '{"suite": "canonical", "contr')  # the run died while writing its third line
    kept = resume_partial(root, JOBS, SETTINGS)
    assert list(kept) == [JOBS[2], JOBS[0]]
    assert astuple(kept[JOBS[0]]) == pytest.approx(astuple(_episode(7)))  # every field back, in metres
    assert kept[JOBS[0]].trace is None
    assert path.read_text() == whole  # ready to be appended to: the torn line is gone, the whole ones stay
    append_partial(root, JOBS[1], _episode(8, initial_te_m=math.nan), SETTINGS["canonical"])
    kept = resume_partial(root, JOBS, SETTINGS)
    assert list(kept) == [JOBS[2], JOBS[0], JOBS[1]] and math.isnan(kept[JOBS[1]].initial_te_m)


@pytest.mark.unit
@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda r: {**r, "te_mm": "2.1"}, r":1 is not a valid episode record \(te_mm: Input should be a valid number"),
        (
            lambda r: {k: v for k, v in r.items() if k not in ("seed", "settings")},
            r"\(seed: .*; settings: Field required\)",
        ),
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
    with pytest.raises(PartialLogError, match=rf"{PARTIAL}:1 is not a valid episode record \(line: Invalid JSON"):
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


class _Section:
    def __init__(self, **fields: object) -> None:
        self.fields = fields

    def model_dump(self, mode: str) -> dict[str, object]:
        assert mode == "json"
        return self.fields


@pytest.mark.unit
def test_the_settings_digest_of_fixed_settings_never_changes() -> None:
    # Logs outlive the code that wrote them (a benchmark resumed after an upgrade): the digest of the same settings
    # must stay the value those logs carry, whatever order the config lists its fields in.
    def digest(sim: _Section) -> str:
        eval_ = SimpleNamespace(stop_velocity=0.01, stop_steps=None, device="cpu", runtime="torch")
        cfg = SimpleNamespace(sim=sim, policy=SimpleNamespace(servo=_Section(gain=0.5)), eval=eval_)
        return settings_digest(cfg, "/ckpt")  # type: ignore[arg-type]

    assert digest(_Section(width=512, fov=[1, 2])) == digest(_Section(fov=[1, 2], width=512)) == "f3f106b1edc83616"
