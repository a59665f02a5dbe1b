"""What the terminal shows of Ray and W&B: their internal chatter is dropped, real warnings and errors are kept."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from runtime.ray_cluster import is_chatter, quiet_ray_driver
from runtime.tracking import describe_wandb_run, wandb_run_dir, wandb_settings

pytestmark = pytest.mark.unit

# Copied from a `make train` on Ray 2.60 before the filter (the TrainingReport line cut short).
CHATTER = [
    "(PlacementGroupCleaner pid=20320) Failed to query Ray Train Controller actor state. State API may be temporarily "
    "unavailable. Continuing to monitor.",
    "(TrainController pid=20209) [2026-11-30 04:46:33,084 E 20209 20251] core_worker.cc:2465: Actor with class name: "
    "'PreemptionWatcher' and ID: '84be0b5d1b73c32396673de701000000' has constructor arguments in the object store and "
    "max_restarts > 0. If the arguments in the object store go out of scope or are lost, the actor restart will fail.",
    "(RayTrainWorker pid=20355) Reporting training result 12: TrainingReport(checkpoint=None, metrics={'train/loss': 8",
]
REAL = [
    "(HemisphereSampler pid=4242) FileNotFoundError: sim.assets.mesh_dirs: /data/gso does not exist",
    "(RayTrainWorker pid=20355) Traceback (most recent call last):",
    "(raylet) A worker died or was killed while executing a task by an unexpected system error.",
    "(RayTrainWorker pid=20355) wandb: WARNING Step only supports monotonically increasing values",
    "(DAggerWorker pid=7) Reporting that the training result was bad",  # our words, not Ray Train's report line
]


def test_the_chatter_filter_drops_rays_known_lines_and_keeps_real_errors() -> None:
    assert [is_chatter(line) for line in CHATTER] == [True] * len(CHATTER)
    assert [is_chatter(line) for line in REAL] == [False] * len(REAL)


def test_the_driver_prints_no_chatter_but_every_other_worker_line(monkeypatch: pytest.MonkeyPatch) -> None:
    # Through Ray's own deduplicator, the object that decides what the driver prints: a Ray upgrade that renames it
    # fails here rather than filling the terminal again.
    from ray._private import ray_logging

    quiet_ray_driver()
    batch = {"ip": "127.0.0.1", "pid": 1, "is_err": False, "lines": [*CHATTER, *REAL]}
    printed = [line for out in ray_logging.stdout_deduplicator.deduplicate(batch) for line in out["lines"]]
    assert printed == REAL


def test_rays_token_auth_notice_is_dropped_and_its_other_warnings_are_kept(caplog: pytest.LogCaptureFixture) -> None:
    quiet_ray_driver()
    log = logging.getLogger("ray._private.authentication.authentication_token_setup")
    with caplog.at_level(logging.WARNING, logger=log.name):
        log.warning("Token authentication is enabled for this Ray cluster. Set RAY_AUTH_MODE=disabled to opt out.")
        log.warning("Token authentication is disabled; anyone on the network can submit jobs.")
    assert [r.getMessage() for r in caplog.records] == [
        "Token authentication is disabled; anyone on the network can submit jobs."
    ]


def test_wandb_is_quiet_but_not_silent() -> None:
    import wandb

    settings = wandb.Settings(**wandb_settings())
    assert settings.quiet and not settings.show_info
    assert settings.show_warnings and settings.show_errors and not settings.silent


def test_the_wandb_run_folder_is_found_and_named(tmp_path: Path) -> None:
    assert wandb_run_dir(tmp_path) is None
    old = tmp_path / "wandb" / "offline-run-20260101_000000-other-1234"
    mine = tmp_path / "wandb" / "offline-run-20260102_000000-mine-5678"
    for p in (old, mine):
        p.mkdir(parents=True)
    (tmp_path / "wandb" / "latest-run").symlink_to(old.name)
    assert wandb_run_dir(tmp_path, "mine-5678") == mine
    assert wandb_run_dir(tmp_path, "other-1234") == old
    assert describe_wandb_run("offline", mine) == f"W&B offline run {mine} (upload: wandb sync {mine})"
    assert describe_wandb_run("disabled", None) == "W&B disabled"
