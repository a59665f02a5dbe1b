"""The runnable examples run: examples/servo_loop.py drives Servo against ServoEnv as a robot loop would."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.integration
def test_servo_loop_runs_the_shipped_policy_and_prints_a_summary() -> None:
    args = ["--max-steps", "3", "--every", "1", "sim.camera.width=128", "sim.camera.height=128"]
    out = subprocess.run(
        [sys.executable, "examples/servo_loop.py", *args], capture_output=True, text=True, cwd=ROOT, timeout=300
    )
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.strip().splitlines()
    assert [line.split(":")[0] for line in lines[:3]] == ["step    1", "step    2", "step    3"]
    summary = re.fullmatch(
        r"servo_loop: (.+) after (\d+) steps \(\d+ ms/step, 1 torch thread\(s\)\); error ([\d.]+) mm ([\d.]+) deg -> "
        r"([\d.]+) mm ([\d.]+) deg; pretrained:cnsv2-cpu, seed 1000004",
        lines[-1],
    )
    assert summary is not None, lines[-1]
    assert summary[1] == "step limit" and summary[2] == "3"
    assert float(summary[3]) > 0 and float(summary[5]) > 0


@pytest.mark.integration
def test_servo_loop_rejects_a_bad_override() -> None:
    out = subprocess.run(
        [sys.executable, "examples/servo_loop.py", "sim.camera.widht=128"], capture_output=True, text=True, cwd=ROOT
    )
    assert out.returncode == 2 and "widht" in out.stderr
