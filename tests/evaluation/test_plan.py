"""Which checkpoint an evaluation measures, and which episodes it plans."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from configs.loader import ConfigError
from evaluation.plan import make_plan, resolve_checkpoint
from policy.pretrained import pretrained_path
from tests.fixtures.factories import small_config, small_overrides

pytestmark = pytest.mark.unit


def _saved_at(cfg, step: int) -> Path:  # type: ignore[no-untyped-def]
    from training.trainer import TrainState

    state = TrainState(cfg, torch.device("cpu"))
    state.step = step
    return state.save()


def test_the_checkpoint_is_the_named_one_or_the_newest_and_always_absolute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = small_config(root=tmp_path)
    assert resolve_checkpoint(cfg, ["oracle", "sift_pbvs"]) is None  # no CNSv2 row, no checkpoint needed
    older, newer = _saved_at(cfg, 2), _saved_at(cfg, 5)
    monkeypatch.chdir(tmp_path)  # relative folders resolve against the working directory
    assert resolve_checkpoint(cfg, ["cnsv2"]) == str(newer.resolve())
    named = small_config(f"eval.checkpoint={older.relative_to(tmp_path)}", root=tmp_path)
    assert resolve_checkpoint(named, ["cnsv2_pbvs"]) == str(older.resolve())
    shipped = small_config("eval.checkpoint=pretrained:cnsv2-cpu", root=tmp_path)
    assert resolve_checkpoint(shipped, ["cnsv2"]) == str(pretrained_path("pretrained:cnsv2-cpu").resolve())


def test_a_missing_checkpoint_is_named_in_the_error(tmp_path: Path) -> None:
    empty = small_config(root=tmp_path)
    with pytest.raises(FileNotFoundError, match=f"no CNSv2 checkpoint under {empty.train.checkpoints}"):
        resolve_checkpoint(empty, ["cnsv2"])
    named = small_config(f"eval.checkpoint={tmp_path / 'nowhere'}", root=tmp_path)
    with pytest.raises(FileNotFoundError, match=f"no CNSv2 checkpoint {tmp_path / 'nowhere'}: run"):
        resolve_checkpoint(named, ["cnsv2"])


def test_a_suite_plans_only_the_controllers_it_measures(tmp_path: Path) -> None:
    # The focal-unaware suites concern CNSv2 only: the oracle has no episode there.
    args = small_overrides("eval.suites=[canonical,f0.5_d0.5_unaware]", "eval.controllers=[oracle]",
                           "eval.episodes=2", root=tmp_path)  # fmt: skip
    _, plan = make_plan("smoke", args)
    assert [(j.suite, j.controller) for j in plan.jobs] == [("canonical", "oracle")] * 2
    only_unaware = small_overrides("eval.suites=[f0.5_d0.5_unaware]", "eval.controllers=[oracle]", root=tmp_path)
    with pytest.raises(ConfigError, match="measure nothing"):
        make_plan("smoke", only_unaware)


def test_an_onnx_run_takes_an_export_folder_as_it_is_and_exports_anything_else_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from evaluation.plan import Plan, prepare_export
    from policy.onnx_policy import SIDECAR

    exports: list[tuple[str, Path, object]] = []

    def export_source(source: str, out: Path, **kwargs: object) -> Path:
        exports.append((source, Path(out), kwargs.get("echo")))
        return Path(out)

    monkeypatch.setattr("policy.export.export_source", export_source)
    onnx = small_config("eval.runtime=onnx", root=tmp_path)
    folder, ckpt = tmp_path / "export", tmp_path / "ckpt"
    for d in (folder, ckpt):
        d.mkdir()
    (folder / SIDECAR).write_text("{}")
    plan = Plan([], {}, [], str(folder))
    prepare_export(onnx, plan)
    assert plan.export == str(folder) and exports == []
    plan = Plan([], {}, [], str(ckpt))
    prepare_export(onnx, plan, echo=print)
    prepare_export(onnx, plan)  # once per run
    assert exports == [(str(ckpt), Path(onnx.eval.root) / "onnx", print)]
    assert plan.export == str(Path(onnx.eval.root) / "onnx")
    for cfg, checkpoint in ((onnx, None), (small_config(root=tmp_path), str(ckpt))):  # no CNSv2; the torch runtime
        plan = Plan([], {}, [], checkpoint)
        prepare_export(cfg, plan)
        assert plan.export is None
    assert len(exports) == 1
