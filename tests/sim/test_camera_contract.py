"""The camera contract (sim/camera_contract.py) on every render backend; absent backends are skipped with the reason."""

from __future__ import annotations

import numpy as np
import pytest

from sim.camera_contract import DEPTH_TOL, check_case, random_case
from sim.isaac_backend import unavailable_reason
from sim.render import BACKENDS, make_renderer

pytestmark = pytest.mark.integration


def _unavailable(name: str) -> str | None:
    if name == "isaac":  # starting the app takes minutes; ask the cheap check instead
        return unavailable_reason()
    try:
        make_renderer(name, 16, 16).close()
    except (ImportError, RuntimeError) as err:
        return str(err)
    return None


BACKEND_PARAMS = [
    pytest.param(name, marks=pytest.mark.skipif(reason is not None, reason=f"{name} backend: {reason}"))
    for name, reason in ((n, _unavailable(n)) for n in BACKENDS)
]


@pytest.mark.parametrize("backend", BACKEND_PARAMS)
@pytest.mark.parametrize("size", [(224, 224), (256, 256), (512, 512), (320, 240)])
def test_plate_projects_exactly(backend: str, size: tuple[int, int]) -> None:
    W, H = size
    rng = np.random.default_rng(W * 1000 + H)
    renderer = make_renderer(backend, W, H)
    try:
        for _ in range(4):
            cam, wTc, wTo = random_case(rng, W, H)
            r = check_case(renderer, cam, wTc, wTo)
            assert r.plate_pixels > 200, "the case generator should keep the plate in view"
            assert r.wrong_pixels == 0, f"{r.wrong_pixels} pixels differ from the analytic projection ({cam})"
            assert r.depth_error <= DEPTH_TOL and r.background_is_inf
            # The check is sensitive: half a pixel of principal-point error must show up as many wrong pixels.
            assert r.shifted_wrong_pixels >= 5
    finally:
        renderer.close()


def test_frames_carry_the_camera_they_were_rendered_with() -> None:
    if _unavailable("mujoco"):
        pytest.skip("mujoco backend unavailable")
    rng = np.random.default_rng(7)
    cam, wTc, wTo = random_case(rng, 64, 48)
    with make_renderer("mujoco", 64, 48) as r:
        check_case(r, cam, wTc, wTo)
        frame = r.render(cam.K, wTc)
    np.testing.assert_array_equal(frame.K, cam.K)
    np.testing.assert_array_equal(frame.wTc, wTc)
