"""Camera effects: exposure, blur and noise."""

from __future__ import annotations

import numpy as np
import pytest

from sim.effects import apply_effects
from sim.scene import ImageEffects

pytestmark = pytest.mark.unit


def _image() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(40, 200, (32, 48, 3), dtype=np.uint8)


def test_identity_returns_an_equal_copy() -> None:
    img = _image()
    out = apply_effects(img, ImageEffects(), np.random.default_rng(0))
    assert out is not img and np.array_equal(out, img)


def test_exposure_scales_and_clips() -> None:
    img = _image()
    out = apply_effects(img, ImageEffects(exposure=1.5), np.random.default_rng(0))
    np.testing.assert_array_equal(out, np.clip(np.rint(img * np.float32(1.5)), 0, 255).astype(np.uint8))
    assert out.max() == 255


def test_blur_smooths() -> None:
    img = _image()
    out = apply_effects(img, ImageEffects(blur_sigma=1.5), np.random.default_rng(0))
    assert np.abs(np.diff(out.astype(float), axis=1)).mean() < 0.5 * np.abs(np.diff(img.astype(float), axis=1)).mean()
    assert abs(out.mean() - img.mean()) < 1.0


def test_noise_is_seeded() -> None:
    img = _image()
    fx = ImageEffects(noise_std=3.0)
    a = apply_effects(img, fx, np.random.default_rng(5))
    b = apply_effects(img, fx, np.random.default_rng(5))
    c = apply_effects(img, fx, np.random.default_rng(6))
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert 2.0 < (a.astype(float) - img).std() < 4.0
