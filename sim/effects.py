"""Camera effects on a rendered image: exposure gain, Gaussian blur and sensor noise."""

from __future__ import annotations

import cv2
import numpy as np

from sim.scene import ImageEffects


def apply_effects(rgb: np.ndarray, effects: ImageEffects, rng: np.random.Generator) -> np.ndarray:
    """Return a new uint8 image with exposure, blur and noise applied (the input is left untouched)."""
    if effects.identity:
        return rgb.copy()
    img = rgb.astype(np.float32)
    if effects.exposure != 1.0:
        img *= effects.exposure
    if effects.blur_sigma > 0.0:
        img = cv2.GaussianBlur(img, (0, 0), sigmaX=effects.blur_sigma, borderType=cv2.BORDER_REFLECT)
    if effects.noise_std > 0.0:
        img += rng.normal(0.0, effects.noise_std, img.shape).astype(np.float32)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)
