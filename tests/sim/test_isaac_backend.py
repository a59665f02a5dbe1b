"""The Isaac Sim backend's parts that run without Isaac Sim: availability checks, launch settings, fail-fast CLIs.

The camera contract on Isaac itself is in test_camera_contract.py (skipped with the reason when it cannot run);
`python -m sim.isaac_check` is the one-off check for an RTX machine.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from configs import load_config
from sim import isaac_backend
from sim.isaac_backend import IsaacUnavailable, app_config, render_gpu, unavailable_reason
from sim.render import check_backend, make_renderer

NOT_HERE = unavailable_reason() is not None


def test_reasons_name_the_missing_piece(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(isaac_backend.importlib.util, "find_spec", lambda name: None)
    assert "not installed" in unavailable_reason()
    monkeypatch.setattr(isaac_backend.importlib.util, "find_spec", lambda name: object())
    monkeypatch.setattr(isaac_backend, "_gpu_names", lambda: None)
    assert "no NVIDIA GPU" in unavailable_reason()
    monkeypatch.setattr(isaac_backend, "_gpu_names", lambda: ["NVIDIA H100 80GB HBM3", "NVIDIA A100-SXM4-80GB"])
    assert "no RT cores" in unavailable_reason()
    monkeypatch.setattr(isaac_backend, "_gpu_names", lambda: ["NVIDIA H100 80GB HBM3", "NVIDIA L40S"])
    assert unavailable_reason() is None
    monkeypatch.setattr(isaac_backend, "_gpu_names", lambda: ["NVIDIA GeForce RTX 4090"])
    assert unavailable_reason() is None


def test_app_pins_one_gpu_by_cuda_index(monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = app_config(256, 256, 3)
    assert cfg["headless"] and cfg["multi_gpu"] is False
    assert cfg["extra_args"] == ["--/renderer/multiGpu/activeCudaGpus=3,"]  # the trailing comma matters to Kit
    monkeypatch.setenv("CNSV2_ISAAC_GPU", "2")
    assert render_gpu() == 2
    monkeypatch.setenv("CNSV2_ISAAC_GPU", "cuda:1")
    with pytest.raises(ValueError, match="CNSV2_ISAAC_GPU"):
        render_gpu()


@pytest.mark.skipif(not NOT_HERE, reason="Isaac Sim can run here")
def test_without_isaac_the_backend_fails_at_once_with_an_install_hint() -> None:
    with pytest.raises(IsaacUnavailable, match=r"pip install 'isaacsim\[all,extscache\]==5\.1\.0'"):
        make_renderer("isaac", 64, 64)
    with pytest.raises(IsaacUnavailable, match=r"Dockerfile\.isaac"):
        check_backend("isaac")
    assert load_config("smoke", ["sim.backend=isaac"]).sim.renderer.backend == "isaac"  # the short key works


@pytest.mark.skipif(not NOT_HERE, reason="Isaac Sim can run here")
@pytest.mark.parametrize("module", ["datagen", "training.pipeline"])
def test_cli_refuses_isaac_before_starting_ray(module: str, tmp_path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", module, f"run.root={tmp_path}", "sim.backend=isaac"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 2
    assert "Isaac Sim is not installed" in out.stderr and "pip install" in out.stderr
    assert "Started a local Ray instance" not in out.stderr + out.stdout
    assert not (tmp_path / "smoke").exists()  # nothing written


def test_joining_a_cluster_leaves_the_check_to_the_workers(monkeypatch: pytest.MonkeyPatch) -> None:
    from datagen.runner import check_local_backend

    cfg = load_config("smoke", ["sim.backend=isaac", "datagen.ray_address=auto"])
    check_local_backend(cfg)  # the RTX workers check for themselves
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    if NOT_HERE:
        with pytest.raises(IsaacUnavailable):
            check_local_backend(load_config("smoke", ["sim.backend=isaac"]))
