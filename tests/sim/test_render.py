"""The render-backend interface and the MuJoCo backend's errors and GL selection."""

from __future__ import annotations

import numpy as np
import pytest

from sim import mujoco_gl
from sim.camera import Camera
from sim.geometry import look_at
from sim.render import Frame, make_renderer
from sim.scene import SceneSpec


def test_unknown_and_planned_backends_raise_clearly() -> None:
    with pytest.raises(ValueError, match="unknown renderer 'vulkan'; available: mujoco"):
        make_renderer("vulkan", 64, 64)
    with pytest.raises(NotImplementedError, match="issue #8"):
        make_renderer("isaac", 64, 64)
    with pytest.raises(ValueError, match="positive integers"):
        make_renderer("mujoco", 0, 64)


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


def test_one_gl_context_serves_many_renderers_and_scenes() -> None:
    for _ in range(3):
        with make_renderer("mujoco", 48, 32) as r:
            for _ in range(2):
                r.load(SceneSpec())
                assert r.render(Camera.canonical(48, 32).K, np.eye(4)).rgb.shape == (32, 48, 3)


def test_frame_validates_its_arrays() -> None:
    with pytest.raises(ValueError, match="uint8"):
        Frame(np.zeros((4, 4, 3), np.float32), np.zeros((4, 4), np.float32), np.eye(3), np.eye(4))
    with pytest.raises(ValueError, match="depth"):
        Frame(np.zeros((4, 4, 3), np.uint8), np.zeros((4, 5), np.float32), np.eye(3), np.eye(4))


def test_missing_gl_libraries_are_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MUJOCO_GL", raising=False)
    monkeypatch.setattr(mujoco_gl, "_probe", lambda platform: f"cannot load lib{platform}.so")
    with pytest.raises(RuntimeError) as info:
        mujoco_gl.choose_platform()
    msg = str(info.value)
    assert "libegl.so" in msg and "apt-get install libegl1" in msg
    assert "libosmesa.so" in msg and "apt-get install libosmesa6" in msg


def test_egl_failure_falls_back_to_osmesa(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MUJOCO_GL", raising=False)
    monkeypatch.setattr(mujoco_gl, "_probe", lambda platform: None if platform == "osmesa" else "no EGL display")
    assert mujoco_gl.choose_platform() == "osmesa"
