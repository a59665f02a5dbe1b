"""A run's outputs are shared: datagen -> train -> eval through the CLIs, as `make` runs them, under umask 0o022 leaves
every file group-readable and every folder group-readable and enterable (issue 15: the trainer and the DAgger workers
of a cluster run as different users of one group). The same run checks that the terminal shows none of Ray's chatter,
with another local Ray running on the machine (a benchmark beside a training run)."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fixtures.factories import small_overrides

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]
CHATTER = ("PlacementGroupCleaner", "TrainingReport(", "PreemptionWatcher", "Token authentication is enabled")


def _cli(module: str, *overrides: str, root: Path) -> str:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update(WANDB_MODE="offline", OMP_NUM_THREADS="1")
    args = small_overrides("run.name=shared", *overrides, root=root)
    done = subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=ROOT, env=env, umask=0o022, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-3000:]
    return out


@pytest.fixture
def another_local_ray() -> Iterator[None]:
    """A second local Ray on this machine for the test's duration: Ray's "auto" lookups then find two clusters."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    code = "import sys, ray; ray.init(num_cpus=1, include_dashboard=False); print('up', flush=True); sys.stdin.read()"
    other = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, text=True
    )
    assert other.stdout is not None and other.stdin is not None
    try:
        assert other.stdout.readline().strip() == "up", "the second local Ray did not start"
        yield
    finally:
        other.stdin.close()  # it shuts its Ray down and exits
        other.wait(timeout=120)


def test_a_runs_outputs_are_group_readable_and_its_console_is_quiet(tmp_path: Path, another_local_ray: None) -> None:
    logs = _cli("datagen", "datagen.hemisphere.samples=16", "datagen.hemisphere.shard_samples=8",
                "datagen.dagger.samples=0", "--quiet", root=tmp_path)  # fmt: skip
    logs += _cli("training", "train.steps=2", "train.batch_size=4", "train.log_every=1", "train.image_every=1",
                 "train.val_every=2", "train.val_batches=1", "train.checkpoint_every=1", "train.push_every=100",
                 "train.warmup_steps=1", "data.workers=0", "data.shuffle_buffer=8", "data.block=4",
                 root=tmp_path)  # fmt: skip
    logs += _cli("evaluation", "eval.suites=[canonical]", "eval.controllers=[cnsv2]", "eval.episodes=1",
                 "eval.workers=0", "eval.trajectories=1", "eval.wandb.mode=offline", "sim.env.max_steps=3",
                 root=tmp_path)  # fmt: skip
    run = tmp_path / "shared"
    assert {"data", "checkpoints", "eval", "wandb", "metrics.jsonl"} <= {p.name for p in run.iterdir()}
    private = []
    for path in [run, *run.rglob("*")]:
        if path.is_symlink():  # W&B's latest-run links; what they point to is checked as itself
            continue
        mode = stat.S_IMODE(path.stat().st_mode)
        need = stat.S_IRGRP | stat.S_IXGRP if path.is_dir() else stat.S_IRGRP
        if mode & need != need:
            private.append(f"{oct(mode)} {path.relative_to(run)}")
    assert not private, "not group-readable under umask 0o022:\n" + "\n".join(private)

    assert "training: step 2," in logs and "W&B offline run" in logs and "eval: 1 episodes" in logs
    assert [c for c in CHATTER if c in logs] == []
