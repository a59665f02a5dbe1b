"""Data generation on a local Ray: both producers end to end, reruns, and a producer killed mid-shard."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest

from datagen.runner import run_datagen, start_producers
from shards import DatasetReader, validate_arrays

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_make_datagen_shape_end_to_end_and_rerun(tmp_path: Path, ray_session, small_cfg) -> None:  # type: ignore[no-untyped-def]
    cfg = small_cfg(
        "run.name=e2e", "datagen.hemisphere.samples=30", "datagen.hemisphere.shard_samples=10",
        "datagen.dagger.samples=20", "datagen.dagger.shard_samples=10", "datagen.dagger.episode_steps=10",
    )  # fmt: skip
    summary = run_datagen(cfg, show_progress=False)
    assert summary.samples == {"hemisphere": 30, "dagger": 20} and summary.shards == {"hemisphere": 3, "dagger": 2}
    assert summary.root == str(tmp_path / "e2e" / "data") and summary.new_samples == 50
    assert (tmp_path / "e2e" / "data" / "config.yaml").is_file()
    assert "50 samples" in summary.line() and "dagger 20" in summary.line()
    again = run_datagen(cfg, show_progress=False)
    assert again.new_samples == 0 and again.samples == summary.samples


def test_a_killed_producer_resumes_and_no_partial_shard_is_ever_listed(ray_session, small_cfg) -> None:  # type: ignore[no-untyped-def]
    ray = ray_session
    cfg = small_cfg(
        "run.name=kill", "datagen.hemisphere.samples=80", "datagen.hemisphere.shard_samples=10",
        "datagen.hemisphere.max_restarts=2", "datagen.dagger.samples=0",
    )  # fmt: skip
    from datagen.producer import open_writer

    open_writer(cfg)
    reader = DatasetReader(cfg.datagen.root)
    actor = start_producers(cfg)["hemisphere"][0]
    pid = ray.get(actor.pid.remote())
    ref = actor.run.remote()
    deadline = time.time() + 120
    while len(reader.refresh()) < 2:
        assert time.time() < deadline, "no shard was published"
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)  # mid-run: most likely in the middle of rendering or writing a shard
    seen: set[str] = set()
    while True:
        done, _ = ray.wait([ref], timeout=0.2)
        for shard in reader.refresh():  # whatever is listed must be whole and valid
            if shard.id not in seen:
                a = reader.read(shard)
                validate_arrays(a, height=64, width=64)
                assert len(a["vel"]) == shard.n == 10
                seen.add(shard.id)
        if done:
            break
        assert time.time() < deadline + 120, "the restarted producer did not finish"
    ray.get(ref)
    assert ray.get(actor.pid.remote()) != pid  # Ray restarted the actor and retried run(), which resumed
    ids = [s.id for s in reader.refresh()]
    assert sorted(ids) == [f"hemisphere-r0000-{i:06d}" for i in range(8)]
    manifest = [json.loads(line)["id"] for line in (Path(cfg.datagen.root) / "manifest.jsonl").read_text().splitlines()]
    assert sorted(manifest) == sorted(ids)  # one line per shard, no duplicates
    assert not any((Path(cfg.datagen.root) / "_tmp").iterdir())  # the restart cleaned what the kill left
    first = reader.read(reader.shards[0])
    assert np.isfinite(first["vel"]).all()
    ray.kill(actor)  # idle, it would hold a CPU of the session's Ray for the tests after this one
