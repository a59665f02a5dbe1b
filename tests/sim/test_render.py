"""The render-backend interface and the MuJoCo backend's errors and GL selection."""

from __future__ import annotations

import numpy as np
import pytest

from sim import mujoco_gl
from sim.camera import Camera
from sim.geometry import look_at
from sim.render import Frame, make_renderer
from sim.scene import SceneSpec


@pytest.mark.unit
def test_unknown_backends_raise_clearly() -> None:
    with pytest.raises(ValueError, match="unknown renderer 'vulkan'; available: mujoco, isaac"):
        make_renderer("vulkan", 64, 64)
    with pytest.raises(ValueError, match="positive integers"):
        make_renderer("mujoco", 0, 64)


@pytest.mark.integration
def test_render_needs_a_loaded_scene_and_an_open_renderer() -> None:
    r = make_renderer("mujoco", 32, 32)
    with pytest.raises(RuntimeError, match="no scene loaded"):
        r.render(Camera.canonical(32).K, np.eye(4))
    r.load(SceneSpec())
    frame = r.render(Camera.canonical(32).K, look_at([0, 0, 1.0], [0, 0, 0], up=[0, 1, 0]))
    assert np.isinf(frame.depth).all() and frame.rgb.max() == 0  # an empty scene with no sky is black
    r.close()
    with pytest.raises(RuntimeError, match="closed"):
        r.load(SceneSpec())


@pytest.mark.integration
def test_one_gl_context_serves_many_renderers_and_scenes() -> None:
    for _ in range(3):
        with make_renderer("mujoco", 48, 32) as r:
            for _ in range(2):
                r.load(SceneSpec())
                assert r.render(Camera.canonical(48, 32).K, np.eye(4)).rgb.shape == (32, 48, 3)


@pytest.mark.unit
def test_frame_validates_its_arrays() -> None:
    with pytest.raises(ValueError, match="uint8"):
        Frame(np.zeros((4, 4, 3), np.float32), np.zeros((4, 4), np.float32), np.eye(3), np.eye(4))
    with pytest.raises(ValueError, match="depth"):
        Frame(np.zeros((4, 4, 3), np.uint8), np.zeros((4, 5), np.float32), np.eye(3), np.eye(4))


@pytest.mark.unit
def test_missing_gl_libraries_are_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MUJOCO_GL", raising=False)
    monkeypatch.setattr(mujoco_gl, "_probe", lambda platform: f"cannot load lib{platform}.so")
    with pytest.raises(RuntimeError) as info:
        mujoco_gl.choose_platform()
    msg = str(info.value)
    assert "libegl.so" in msg and "apt-get install libegl1" in msg
    assert "libosmesa.so" in msg and "apt-get install libosmesa6" in msg


@pytest.mark.unit
def test_egl_failure_falls_back_to_osmesa(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MUJOCO_GL", raising=False)
    monkeypatch.delenv("PYOPENGL_PLATFORM", raising=False)  # restored afterwards, like MUJOCO_GL
    monkeypatch.setattr(mujoco_gl, "_probe", lambda platform: None if platform == "osmesa" else "no EGL display")
    assert mujoco_gl.choose_platform() == "osmesa"


@pytest.mark.integration
def test_equirectangular_sky_appears_in_the_right_directions() -> None:
    # A sky whose red channel codes longitude and green codes latitude; the centre pixel of a narrow camera
    # looking in a known direction must show that direction's code.
    w, h = 720, 360
    lon = (np.arange(w) + 0.5) / w * 2 * np.pi - np.pi
    lat = np.pi / 2 - (np.arange(h) + 0.5) / h * np.pi
    L, A = np.meshgrid(lon, lat)
    sky = (np.stack([(L + np.pi) / (2 * np.pi), (A + np.pi / 2) / np.pi, np.full_like(L, 0.5)], -1) * 255).astype(
        np.uint8
    )
    from sim.scene import SkySpec

    with make_renderer("mujoco", 33, 33) as r:
        r.load(SceneSpec(sky=SkySpec(image=sky), lights=()))
        cam = Camera.canonical(33, focal_scale=3.0)
        for direction in ([1, 0, 0.1], [0, 1, 0.3], [-0.5, -1, 0.5], [0.2, -0.1, 1.0], [0.3, 0.2, -1.0]):
            d = np.asarray(direction, float) / np.linalg.norm(direction)
            c = r.render(cam.K, look_at([0, 0, 0], d, up=[0, 0.3, 1] if abs(d[2]) < 0.9 else [1, 0, 0])).rgb[16, 16]
            got_lon, got_lat = c[0] / 255 * 360 - 180, c[1] / 255 * 180 - 90
            assert got_lon == pytest.approx(np.degrees(np.arctan2(d[1], d[0])), abs=4.0)
            assert got_lat == pytest.approx(np.degrees(np.arcsin(d[2])), abs=4.0)


@pytest.mark.integration
@pytest.mark.slow
def test_torch_compiler_imports_after_a_gl_context() -> None:
    # Mesa's llvmpipe and Triton both bundle LLVM; importing Triton after a GL context exists used to segfault.
    import subprocess
    import sys

    code = (
        "from sim.mujoco_gl import load_mujoco\n"
        "m = load_mujoco(); ctx = m.GLContext(8, 8); ctx.make_current()\n"
        "import torch._dynamo\nprint('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=False)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]
