"""training.ship: a checkpoint becomes a shipped policy (weights, policy.json, model card), never above 25 MB."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from policy import build_policy, save_checkpoint
from policy.checkpoint import load_checkpoint
from tests.fixtures.factories import small_config
from training import ship as ship_module
from training.ship import ship

pytestmark = pytest.mark.unit


@pytest.fixture
def checkpoint(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    policy = build_policy(small_config().policy)
    return save_checkpoint(policy, tmp_path / "run" / "checkpoints" / "step_000010", 10, trainer_state={"step": 10})


def test_ship_writes_weights_metadata_and_a_model_card_without_the_optimiser(checkpoint: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    (run / "train_config.yaml").write_text("train:\n  steps: 10\n")
    (run / "metrics.jsonl").write_text(json.dumps({"step": 10, "val/loss": 1.5, "val/cos": 0.25}) + "\n")
    results = tmp_path / "results.md"
    results.write_text("| controller | SR |\n|---|---|\n| cnsv2 | 3/20 |\n")
    out = ship(checkpoint, "tiny", run=run, wall_minutes=12.5, eval_md=results, dest_root=tmp_path / "pretrained")
    assert sorted(p.name for p in out.iterdir()) == ["MODEL_CARD.md", "model.safetensors", "policy.json"]
    card = (out / "MODEL_CARD.md").read_text()
    for text in ("policy version (training step): 10", "12.5 min", "loss 1.500", "cos 0.250", "| cnsv2 | 3/20 |",
                 "steps: 10"):  # fmt: skip
        assert text in card, text
    _, meta = load_checkpoint(out)
    assert meta["policy_version"] == 10 and not (out / "trainer.pt").exists()
    assert not list((tmp_path / "pretrained").glob(".tiny.*"))  # no temporary folder left behind


def test_ship_refuses_a_package_over_the_limit(checkpoint: Path, tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(ship_module, "MAX_BYTES", 1000)
    with pytest.raises(ValueError, match="exceeds"):
        ship(checkpoint, "tiny", dest_root=tmp_path / "pretrained")
    assert not (tmp_path / "pretrained" / "tiny").exists()
    assert not list((tmp_path / "pretrained").glob(".tiny.*"))
