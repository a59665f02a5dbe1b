"""policy.bench's ONNX columns: which stage each exported node belongs to, and how a profile is split into stages."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from policy.bench import _scope_stage, profile_stages

pytestmark = pytest.mark.unit


def test_nodes_are_staged_by_the_module_scope_the_exporter_records() -> None:
    def meta(*scopes: str) -> dict[str, str]:
        return {"pkg.torch.onnx.name_scopes": repr(["", *scopes])}

    assert _scope_stage(meta("policy", "policy.backbone", "policy.backbone.net.0", "conv2d")) == "backbone"
    assert _scope_stage(meta("policy", "policy.fine.encoder", "conv2d_27")) == "fine"  # FineFeatures.encode
    assert _scope_stage(meta("policy", "policy.representation", "matmul_3")) == "representation"
    assert _scope_stage(meta("policy", "policy.controller", "policy.controller.rep_norm")) == "controller"
    assert _scope_stage(meta("policy", "policy.transformer_x")) == "other"  # a prefix of a name is not a scope
    assert _scope_stage(meta("policy", "softmax")) == "other"
    assert _scope_stage({}) == "other"


def _node(name: str, ts: int, dur: int) -> dict[str, object]:
    return {"cat": "Node", "name": f"{name}_kernel_time", "ts": ts, "dur": dur, "args": {"op_name": "X"}}


def test_a_profile_is_split_into_stages_over_the_last_runs_only(tmp_path: Path) -> None:
    stages = {
        "node_Conv_1": "backbone",
        "conv2d": "backbone",
        "node_MatMul_9": "transformer",
        "node_p2g": "representation",
    }
    events = [
        {"cat": "Session", "name": "model_run", "ts": 0, "dur": 100},  # a warm-up run: left out
        _node("node_Conv_1", 10, 90),
        {"cat": "Session", "name": "model_run", "ts": 1000, "dur": 100},
        _node("conv2d_nchwc", 1001, 4000),  # renamed by onnxruntime: found under its output's name
        _node("ReorderOutput_token_7", 1002, 1000),  # made by onnxruntime: the stage of the node before it
        _node("node_MatMul_9", 1003, 2000),
        _node("node_p2g", 1004, 500),
        {"cat": "Session", "name": "model_run", "ts": 2000, "dur": 100},
        _node("node_Conv_1", 2001, 3000),
        _node("node_MatMul_9", 2002, 2000),
    ]
    trace = tmp_path / "trace.json"
    trace.write_text(json.dumps(events))
    ms = profile_stages(trace, stages, steps=2)
    assert ms["backbone"] == pytest.approx((4000 + 1000 + 3000) / 1e3 / 2)
    assert ms["transformer"] == pytest.approx(2.0) and ms["representation"] == pytest.approx(0.25)
    assert ms["fine"] != ms["fine"] and ms["controller"] != ms["controller"]  # NaN: no such nodes


def test_a_step_time_with_turn_searches_is_the_mean_over_a_search_cycle() -> None:
    from policy.bench import cycle_ms

    # Searches (40 ms) on one step in 4, held steps of 10 ms; one stray slow cycle at the end.
    steps = [0.040, 0.010, 0.010, 0.010] * 3 + [0.080, 0.030, 0.030, 0.030, 0.5]
    assert cycle_ms(steps, 4) == pytest.approx(17.5)  # 70 ms per cycle of 4; the unfinished cycle is dropped
    assert cycle_ms([0.01, 0.03, 0.02], 1) == pytest.approx(20.0)  # every step a search: the median step
    with pytest.raises(ValueError, match="one cycle of 8"):
        cycle_ms(steps[:5], 8)


def test_repeated_runs_give_the_median_row_and_the_range_of_the_step() -> None:
    from policy.bench import over_runs

    runs = [
        {"step": 20.0, "fps": 50.0, "backbone": 5.0, "dv": 1e-7},
        {"step": 14.0, "fps": 71.4, "backbone": 3.0, "dv": 3e-7},
        {"step": 15.0, "fps": 66.7, "backbone": 4.0, "dv": 2e-7},
    ]
    row = over_runs(runs)
    assert row["step"] == 15.0 and row["fps"] == pytest.approx(1e3 / 15.0) and row["backbone"] == 4.0
    assert (row["step_min"], row["step_max"], row["dv"]) == (14.0, 20.0, 3e-7)
    assert "dv" not in over_runs([{"step": 10.0, "fps": 100.0}])  # a torch row has no difference to torch
    with pytest.raises(ValueError, match="no runs"):
        over_runs([])


def test_the_table_of_repeated_runs_has_the_range_column(capsys) -> None:  # type: ignore[no-untyped-def]
    from policy.bench import main

    args = ["--configs", "smoke", "--runtimes", "torch", "--iters", "2", "--warmup", "0", "--no-load", "--repeat", "2"]
    assert main([*args, "policy.input_size=[64,64]"]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("|")]
    assert "fastest-slowest run" in lines[0] and len(lines) == 3  # header, rule, one row
    cells = [c.strip() for c in lines[2].strip("|").split("|")]
    assert len(cells) == lines[0].count("|") - 1 == 12
    fastest, slowest = map(float, cells[9].split("-"))
    assert fastest <= float(cells[8]) <= slowest
    with pytest.raises(SystemExit):
        main([*args[:-1], "0"])


def test_torch_times_every_stage_of_a_network_with_a_cached_desired_stream() -> None:
    import torch

    from policy.bench import STAGES, measure

    overrides = ["policy.input_size=[64,64]", "policy.transformer.cache_desired=true"]
    row = measure("smoke", overrides, torch.device("cpu"), iters=2, warmup=0)
    assert all(row[s] > 0 for s in STAGES), row  # NaN (a stage never timed) fails too
