"""Near the goal, track the desired image's corners into the current image with pyramidal Lucas-Kanade.

Descriptor matching re-detects keypoints in every frame: each match carries a fresh detection error of a few tenths
of a pixel in both images, and the set of matched points changes from frame to frame. Near the goal that noise is
all that is left of the image error, so a matcher-driven servo wanders by millimetres around the goal instead of
converging. Once the current image is close to the desired one, the classical controllers instead follow one fixed
set of desired-image corners (Shi-Tomasi), found once per episode, and locate each in the current image by
pyramidal Lucas-Kanade (Bouguet's implementation in OpenCV): sub-pixel, and the same points every frame. A
forward-backward check (track back into the desired image and compare) drops corners that drifted or were occluded.
"""

from __future__ import annotations

import cv2
import numpy as np

__all__ = ["DesiredTracker"]


class DesiredTracker:
    """Lucas-Kanade tracking of the desired image's corners into later images of the same view.

    `max_corners`, `quality` and `min_distance_px` choose the corners (cv2.goodFeaturesToTrack); `window_px` and
    `levels` are the Lucas-Kanade window and pyramid depth; a corner whose forward-backward track misses its start by
    more than `fb_max_px` pixels is dropped.
    """

    def __init__(
        self,
        max_corners: int = 500,
        quality: float = 0.01,
        min_distance_px: float = 5.0,
        window_px: int = 21,
        levels: int = 3,
        fb_max_px: float = 0.25,
    ) -> None:
        if max_corners < 1 or not 0 < quality < 1 or min_distance_px < 0 or window_px < 3 or levels < 0:
            raise ValueError(
                "need max_corners >= 1, 0 < quality < 1, min_distance_px >= 0, window_px >= 3, levels >= 0; got "
                f"{max_corners}, {quality}, {min_distance_px}, {window_px}, {levels}"
            )
        if not fb_max_px > 0:
            raise ValueError(f"fb_max_px must be > 0, got {fb_max_px}")
        self.max_corners, self.quality, self.min_distance = int(max_corners), float(quality), float(min_distance_px)
        self.lk = {
            "winSize": (int(window_px), int(window_px)),
            "maxLevel": int(levels),
            "criteria": (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 30, 0.01),
        }
        self.fb_max = float(fb_max_px)
        self.desired: np.ndarray | None = None
        self.corners = np.zeros((0, 2), np.float32)

    def set_desired(self, gray: np.ndarray) -> None:
        """Find the corners of the desired grey image (H, W) uint8 once; an image without corners gives none."""
        gray = _check_gray(gray, "gray")
        found = cv2.goodFeaturesToTrack(gray, self.max_corners, self.quality, self.min_distance, blockSize=7)
        self.desired = gray
        self.corners = np.zeros((0, 2), np.float32) if found is None else found.reshape(-1, 2).astype(np.float32)

    def track(self, gray: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Where the desired corners are in `gray` (same size as the desired image): (px_cur, px_des), both (N, 2)
        float64 pixels, for the corners whose forward-backward track closes within `fb_max_px`."""
        if self.desired is None:
            raise RuntimeError("DesiredTracker: call set_desired(gray) first")
        gray = _check_gray(gray, "gray")
        if gray.shape != self.desired.shape:
            raise ValueError(f"gray: expected the desired image's size {self.desired.shape}, got {gray.shape}")
        empty = np.zeros((0, 2))
        if len(self.corners) == 0:
            return empty, empty
        p0 = self.corners.reshape(-1, 1, 2)
        p1, ok1, _ = cv2.calcOpticalFlowPyrLK(self.desired, gray, p0, None, **self.lk)
        if p1 is None:
            return empty, empty
        back, ok2, _ = cv2.calcOpticalFlowPyrLK(gray, self.desired, p1, None, **self.lk)
        if back is None:
            return empty, empty
        closes = np.linalg.norm(back.reshape(-1, 2) - self.corners, axis=1) < self.fb_max
        keep = ok1.ravel().astype(bool) & ok2.ravel().astype(bool) & closes
        return p1.reshape(-1, 2)[keep].astype(np.float64), self.corners[keep].astype(np.float64)


def _check_gray(gray: np.ndarray, name: str) -> np.ndarray:
    a = np.asarray(gray)
    if a.dtype != np.uint8 or a.ndim != 2:
        raise ValueError(f"{name}: expected a uint8 grey image (H, W), got {a.dtype} {a.shape}")
    return np.ascontiguousarray(a)
