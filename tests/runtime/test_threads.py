"""Thread counts chosen from config: the automatic shares, their validation, and that each process applies them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from configs import load_config
from configs.loader import ConfigError
from runtime import threads
from runtime.threads import auto_threads, resolve_threads, set_torch_threads

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.unit
def test_automatic_shares_divide_the_usable_cpus(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(threads, "usable_cpus", lambda: 8)
    assert auto_threads() == 8
    assert auto_threads(processes=3) == 2
    assert auto_threads(cpus=4) == 4 and auto_threads(cpus=16) == 8  # a Ray reservation, capped at what is usable
    assert auto_threads(cpus=2.5) == 2 and auto_threads(cpus=0.5) == 1  # floored, at least 1
    assert auto_threads(cpus=8, reserved=4) == 4 and auto_threads(cpus=1, reserved=1) == 1  # never below 1
    assert resolve_threads(3, cpus=1) == 3  # an explicit count wins
    assert resolve_threads(0, default=1) == 1 and resolve_threads(None, cpus=4) == 4
    with pytest.raises(ValueError, match="processes"):
        auto_threads(processes=0)
    with pytest.raises(ValueError, match="threads must be an integer >= 0"):
        resolve_threads(-1)
    with pytest.raises(ValueError, match="threads"):
        set_torch_threads(0)


@pytest.mark.unit
def test_usable_cpus_follow_the_affinity_mask() -> None:
    code = "import os; from runtime.threads import usable_cpus; os.sched_setaffinity(0, {0}); print(usable_cpus())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "1"


@pytest.mark.unit
@pytest.mark.parametrize("key", ["policy.servo.threads", "datagen.hemisphere.threads", "data.threads", "train.threads"])
def test_thread_keys_are_validated_with_the_key_named(key: str) -> None:
    assert load_config("smoke", [f"{key}=2"]) is not None
    assert load_config("smoke", [f"{key}=null"]) is not None  # null is automatic, as 0 is
    with pytest.raises(ConfigError, match=rf"{key}: .*greater than or equal to 0"):
        load_config("smoke", [f"{key}=-1"])


@pytest.mark.unit
def test_producers_and_loader_workers_apply_their_counts(monkeypatch: pytest.MonkeyPatch) -> None:
    from datagen.actors import apply_threads
    from training.dataset import _init_worker, loader_threads

    cfg = load_config("smoke", ["datagen.dagger.num_cpus=2", "datagen.hemisphere.threads=1"])
    monkeypatch.setattr(threads, "usable_cpus", lambda: 8)
    before = torch.get_num_threads()
    try:
        assert apply_threads(cfg.datagen.dagger) == 2 == torch.get_num_threads()  # automatic: its num_cpus
        assert apply_threads(cfg.datagen.hemisphere) == 1 == torch.get_num_threads()
        assert loader_threads(cfg.data) == 1 and loader_threads(cfg.data.model_copy(update={"threads": 3})) == 3
        _init_worker(2, worker_id=0)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
