"""The Isaac Sim backend's parts that run without Isaac Sim: availability checks, launch settings, fail-fast CLIs.

The camera contract on Isaac itself is in test_camera_contract.py (skipped with the reason when it cannot run);
`python -m sim.isaac_check` is the one-off check for an RTX machine.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from configs import load_config
from sim import isaac_backend
from sim.isaac_backend import IsaacUnavailable, app_config, render_gpu, unavailable_reason
from sim.render import check_backend, make_renderer
from tests.sim.isaac_stand_ins import Settings, World, fake_isaac

NOT_HERE = unavailable_reason() is not None


@pytest.mark.unit
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


@pytest.mark.unit
def test_app_pins_one_gpu_by_cuda_index(monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = app_config(256, 256, 3)
    assert cfg["headless"] and cfg["multi_gpu"] is False
    assert cfg["extra_args"] == ["--/renderer/multiGpu/activeCudaGpus=3,"]  # the trailing comma matters to Kit
    # SimulationApp 5.1 turns these keys into --/physics/cudaDevice, /rtx/post/aa/op and the viewport switch.
    assert cfg["physics_gpu"] == 3 and cfg["anti_aliasing"] == 0 and cfg["disable_viewport_updates"] is True
    monkeypatch.setenv("CNSV2_ISAAC_GPU", "2")
    assert render_gpu() == 2
    monkeypatch.setenv("CNSV2_ISAAC_GPU", "cuda:1")
    with pytest.raises(ValueError, match="CNSV2_ISAAC_GPU"):
        render_gpu()


@pytest.mark.unit
@pytest.mark.skipif(not NOT_HERE, reason="Isaac Sim can run here")
def test_without_isaac_the_backend_fails_at_once_with_an_install_hint() -> None:
    with pytest.raises(IsaacUnavailable, match=r"pip install 'isaacsim\[all,extscache\]==5\.1\.0'"):
        make_renderer("isaac", 64, 64)
    with pytest.raises(IsaacUnavailable, match=r"Dockerfile\.isaac"):
        check_backend("isaac")
    assert load_config("smoke", ["sim.backend=isaac"]).sim.renderer.backend == "isaac"  # the short key works


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.skipif(not NOT_HERE, reason="Isaac Sim can run here")
@pytest.mark.parametrize(
    ("module", "extra"),
    [("datagen", []), ("training.pipeline", []), ("evaluation", ["eval.controllers=[oracle]"])],  # no checkpoint
)
def test_cli_refuses_isaac_before_starting_ray(module: str, extra: list[str], tmp_path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", module, f"run.root={tmp_path}", "sim.backend=isaac", *extra],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 2
    assert "Isaac Sim is not installed" in out.stderr and "pip install" in out.stderr
    assert "Started a local Ray instance" not in out.stderr + out.stdout
    assert not (tmp_path / "smoke").exists()  # nothing written


@pytest.mark.unit
def test_joining_a_cluster_leaves_the_check_to_the_workers(monkeypatch: pytest.MonkeyPatch) -> None:
    from runtime.ray_cluster import check_local_backend

    cfg = load_config("smoke", ["sim.backend=isaac", "datagen.ray_address=auto"])
    check_local_backend(cfg)  # the RTX workers check for themselves
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    if NOT_HERE:
        with pytest.raises(IsaacUnavailable):
            check_local_backend(load_config("smoke", ["sim.backend=isaac"]))


@pytest.mark.unit
def test_renderer_wiring_against_stand_ins(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    log = fake_isaac(monkeypatch).world.log
    from sim.camera import Camera
    from sim.geometry import look_at
    from sim.scene import SceneSpec
    from sim.usd_camera import project_with_usd

    r = isaac_backend.IsaacRenderer(64, 48, rt_subframes=2, cache_dir=tmp_path)
    assert log[0] == ("app", "--/renderer/multiGpu/activeCudaGpus=0,")  # the app starts before any setting is made
    with pytest.raises(RuntimeError, match="no scene loaded"):
        r.render(np.eye(3), np.eye(4))
    r.load(SceneSpec())
    cam = Camera.from_focal(50.0, 64, 48, 55.0, 30.0, 25.0)
    wTc = look_at([0.3, -0.2, 1.0], [0, 0, 0], up=[0, 1, 0])
    frame = r.render(cam.K, wTc)
    assert ("step", {"rt_subframes": 2, "delta_time": 0.0, "pause_timeline": False}) in log
    assert frame.rgb.shape == (48, 64, 3) and frame.rgb.dtype == np.uint8 and (frame.rgb == 200).all()
    assert np.isinf(frame.depth[:2]).all() and (frame.depth[2:] == np.float32(0.7)).all()
    # The stage's camera images like K from wTc.
    pts = np.random.default_rng(0).uniform(-0.2, 0.2, (20, 3))
    expected, _ = cam.project_world(pts, wTc)
    got = project_with_usd(r._camera, pts, 64, 48)
    assert np.abs(got - expected).max() < 1e-3
    r.render(cam.K, look_at([0.0, 0.0, 1.5], [0, 0, 0], up=[0, 1, 0]))  # pose-only update
    r.close()
    assert ("destroy",) in log and ("detach", "rgb") in log
    with pytest.raises(RuntimeError, match="closed"):
        r.load(SceneSpec())


@pytest.mark.unit
def test_kit_never_sees_the_processs_own_arguments(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    fake = fake_isaac(monkeypatch)
    argv = ["/app/sim/isaac_check.py", "--frames", "50", "sim.renderer.backend=isaac", "--node-ip-address=10.0.0.2"]
    monkeypatch.setattr(sys, "argv", list(argv))
    with pytest.raises(RuntimeError, match=r"Kit: unknown command-line arguments \['--frames', '50'"):
        fake.App(isaac_backend.app_config(64, 64, 0))  # the stand-in is as strict as the real hand-over
    isaac_backend.IsaacRenderer(64, 64, cache_dir=tmp_path)
    assert sys.argv == argv  # put back for the caller's own parser


@pytest.mark.unit
def test_captures_are_pixel_exact_after_every_stage_reset(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    from sim.scene import SceneSpec

    fake = fake_isaac(monkeypatch)
    r = isaac_backend.IsaacRenderer(32, 32, cache_dir=tmp_path)
    r.load(SceneSpec())
    K = [[32.0, 0.0, 16.0], [0.0, 32.0, 16.0], [0.0, 0.0, 1.0]]
    r.render(K, np.eye(4))
    fake.ctx.new_stage()  # another stage load brings SimulationApp's defaults back
    assert fake.world.settings["/rtx/post/aa/op"] == 3
    r.app.update()
    r.render(K, np.eye(4))
    assert len(fake.world.captures) == 2
    for captured, viewport_updates in fake.world.captures:
        assert {k: captured[k] for k in isaac_backend.PIXEL_EXACT_SETTINGS} == isaac_backend.PIXEL_EXACT_SETTINGS
        assert viewport_updates is False
    # The launch itself asks for no anti-aliasing, so SimulationApp's reset_render_settings() keeps it off too.
    assert isaac_backend.app_config(32, 32, 0)["anti_aliasing"] == 0


@pytest.mark.unit
def test_apply_render_settings_writes_only_what_differs() -> None:
    world = World()
    world.settings.update({**isaac_backend.PIXEL_EXACT_SETTINGS, "/rtx/post/aa/op": 3})
    writes: list = []
    settings = Settings(world)
    settings.set = lambda key, value: (writes.append(key), world.settings.__setitem__(key, value))
    assert isaac_backend.apply_render_settings(settings) == ["/rtx/post/aa/op"]
    assert writes == ["/rtx/post/aa/op"] and world.settings["/rtx/post/aa/op"] == 0
    assert isaac_backend.apply_render_settings(settings) == []
    assert writes == ["/rtx/post/aa/op"]  # nothing rewritten once it holds


@pytest.mark.unit
def test_physics_and_renderer_share_the_cuda_device(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    fake = fake_isaac(monkeypatch)
    monkeypatch.setenv("CNSV2_ISAAC_GPU", "3")
    r = isaac_backend.IsaacRenderer(32, 32, cache_dir=tmp_path)
    assert r.app.kit.settings["/physics/cudaDevice"] == "3"
    assert r.app.kit.settings["/renderer/multiGpu/activeCudaGpus"] == "3,"
    assert fake.world.viewport.updates_enabled is False
    with pytest.raises(ValueError, match="CUDA device index"):
        isaac_backend.app_config(32, 32, -1)


@pytest.mark.unit
@pytest.mark.parametrize("route", ["lens", "aperture"])
def test_k_route_decides_whether_the_lens_schema_is_authored(
    route: str, monkeypatch: pytest.MonkeyPatch, tmp_path
) -> None:
    from sim.camera import Camera
    from sim.scene import SceneSpec
    from sim.usd_camera import LENS_SCHEMA

    fake_isaac(monkeypatch)
    monkeypatch.setenv("CNSV2_ISAAC_K_ROUTE", route)
    r = isaac_backend.IsaacRenderer(64, 48, cache_dir=tmp_path)
    r.load(SceneSpec())
    r.render(Camera.from_focal(50.0, 64, 48, 55.0, 30.0, 25.0).K, np.eye(4))
    prim = r._camera.GetPrim()
    assert (LENS_SCHEMA in prim.GetAppliedSchemas() or prim.HasAttribute("omni:lensdistortion:model")) == (
        route == "lens"
    )
    monkeypatch.setenv("CNSV2_ISAAC_K_ROUTE", "crop")
    with pytest.raises(ValueError, match="CNSV2_ISAAC_K_ROUTE"):
        isaac_backend.default_k_route()
