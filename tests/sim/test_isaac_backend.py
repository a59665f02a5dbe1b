"""The Isaac Sim backend's parts that run without Isaac Sim: availability checks, launch settings, fail-fast CLIs.

The camera contract on Isaac itself is in test_camera_contract.py (skipped with the reason when it cannot run);
`python -m sim.isaac_check` is the one-off check for an RTX machine.
"""

from __future__ import annotations

import subprocess
import sys
import types

import numpy as np
import pytest

from configs import load_config
from sim import isaac_backend
from sim.isaac_backend import IsaacUnavailable, app_config, render_gpu, unavailable_reason
from sim.render import check_backend, make_renderer

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


class _FakeAnnotator:
    def __init__(self, name: str, log: list) -> None:
        self.name, self.log, self.product = name, log, None

    def attach(self, products: list) -> None:
        self.product = products[0]

    def detach(self) -> None:
        self.log.append(("detach", self.name))

    def get_data(self) -> np.ndarray:
        w, h = self.product.size
        if self.name == "rgb":
            return np.full((h, w, 4), 200, np.uint8)
        depth = np.full((h, w), 0.7, np.float32)
        depth[0, :] = np.inf  # what the annotator reports where nothing was hit
        depth[1, :] = 0.0
        return depth


def _fake_isaac(monkeypatch: pytest.MonkeyPatch) -> list:
    """Stand-ins for isaacsim, carb, omni.usd and omni.replicator.core around a real usd-core stage."""
    usd = pytest.importorskip("pxr.Usd")
    log: list = []
    names = ("isaacsim", "carb", "carb.settings", "omni", "omni.usd", "omni.replicator", "omni.replicator.core")
    mods = {name: types.ModuleType(name) for name in names}

    class App:
        def __init__(self, cfg: dict) -> None:
            log.append(("app", cfg["extra_args"][0]))
            self.cfg = cfg

        def update(self) -> None:
            log.append(("update",))

    class Settings:
        def set(self, key: str, value: object) -> None:
            log.append(("setting", key, value))

    class Context:
        stage = None

        def new_stage(self) -> None:
            self.stage = usd.Stage.CreateInMemory()

        def get_stage(self):
            return self.stage

    class Product:
        def __init__(self, path: str, size: tuple) -> None:
            self.path, self.size = path, size

        def destroy(self) -> None:
            log.append(("destroy",))

    ctx = Context()
    mods["isaacsim"].SimulationApp = App
    mods["carb.settings"].get_settings = Settings
    mods["omni.usd"].get_context = lambda: ctx
    rep = mods["omni.replicator.core"]
    rep.create = types.SimpleNamespace(render_product=lambda path, size: Product(path, size))
    rep.AnnotatorRegistry = types.SimpleNamespace(get_annotator=lambda name: _FakeAnnotator(name, log))
    rep.orchestrator = types.SimpleNamespace(step=lambda **kw: log.append(("step", kw)))
    for name, mod in mods.items():
        monkeypatch.setitem(sys.modules, name, mod)
        parent, _, child = name.rpartition(".")
        if parent:
            setattr(mods[parent], child, mod)
    monkeypatch.setattr(isaac_backend, "_app", None)
    monkeypatch.setattr(isaac_backend, "unavailable_reason", lambda: None)
    return log


@pytest.mark.unit
def test_renderer_wiring_against_stand_ins(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    log = _fake_isaac(monkeypatch)
    from sim.camera import Camera
    from sim.geometry import look_at
    from sim.scene import SceneSpec
    from sim.usd_camera import project_with_usd

    r = isaac_backend.IsaacRenderer(64, 48, rt_subframes=2, cache_dir=tmp_path)
    assert log[0] == ("app", "--/renderer/multiGpu/activeCudaGpus=0,")  # the app starts before any setting is made
    assert ("setting", "/omni/replicator/captureOnPlay", False) in log
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
