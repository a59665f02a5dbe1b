"""Lucas-Kanade tracking of the desired corners (policy.near_goal_tracking) against shifts made by image warping."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from policy.near_goal_tracking import DesiredTracker, local_contrast

pytestmark = pytest.mark.unit


def _texture(size: int = 128, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (size // 8, size // 8), dtype=np.uint8)
    return cv2.GaussianBlur(cv2.resize(coarse, (size, size), interpolation=cv2.INTER_NEAREST), (5, 5), 1.5)


def _shifted(img: np.ndarray, dx: float, dy: float) -> np.ndarray:
    # Content moves by (dx, dy): a point at u in img is at u + (dx, dy) in the result.
    return cv2.warpAffine(img, np.array([[1.0, 0.0, dx], [0.0, 1.0, dy]]), img.shape[::-1], flags=cv2.INTER_CUBIC,
                          borderMode=cv2.BORDER_REFLECT)  # fmt: skip


@pytest.mark.parametrize(("dx", "dy"), [(0.3, -0.2), (4.6, 2.25), (-9.0, 7.5)])
def test_corners_are_found_where_a_known_shift_moved_them(dx: float, dy: float) -> None:
    des = _texture()
    tracker = DesiredTracker()
    tracker.set_desired(des)
    assert len(tracker.corners) > 30
    pc, pd = tracker.track(_shifted(des, dx, dy))
    inside = np.all((pd > 16) & (pd < 112), axis=1)  # away from the reflected border
    assert inside.sum() > 20
    np.testing.assert_allclose(np.median(pc[inside] - pd[inside], axis=0), [dx, dy], atol=0.05)
    assert np.percentile(np.linalg.norm(pc[inside] - pd[inside] - [dx, dy], axis=1), 90) < 0.2


def test_corners_that_no_longer_match_are_dropped() -> None:
    des = _texture()
    cur = des.copy()
    cur[:, :64] = _texture(seed=7)[:, :64]  # the left half replaced by another texture (an occluder)
    tracker = DesiredTracker()
    tracker.set_desired(des)
    pc, pd = tracker.track(cur)
    left = tracker.corners[:, 0] < 56
    assert left.sum() > 10 and len(pc) > 10
    # The forward-backward check drops most corners of the replaced half (a chance fit can pass; the controller's
    # RANSAC is the next line of defence) and keeps those of the unchanged half where they were: beyond the reach of
    # the Lucas-Kanade window (10 px) and of the contrast normalisation's window (3 sigma = 12 px) from the occluder.
    assert np.sum(pd[:, 0] < 56) <= 0.2 * left.sum()
    right = pd[:, 0] > 64 + 10 + 12
    assert right.sum() >= 0.8 * np.sum(tracker.corners[:, 0] > 64 + 10 + 12)
    np.testing.assert_allclose(pc[right], pd[right], atol=0.05)


def test_an_image_without_corners_tracks_nothing_and_bad_input_is_named() -> None:
    tracker = DesiredTracker()
    with pytest.raises(RuntimeError, match="set_desired"):
        tracker.track(_texture())
    tracker.set_desired(np.full((64, 64), 90, np.uint8))
    pc, pd = tracker.track(np.full((64, 64), 90, np.uint8))
    assert pc.shape == pd.shape == (0, 2)
    tracker.set_desired(_texture(64))
    with pytest.raises(ValueError, match="desired image's size"):
        tracker.track(_texture(128))
    with pytest.raises(ValueError, match="uint8 grey"):
        tracker.track(np.zeros((64, 64, 3), np.uint8))
    with pytest.raises(ValueError, match="fb_max_px"):
        DesiredTracker(fb_max_px=0.0)
    with pytest.raises(ValueError, match="max_corners"):
        DesiredTracker(max_corners=0)


def _relit(img: np.ndarray) -> np.ndarray:
    # Another lamp: the gain falls from 1.4 on the left to 0.6 on the right and a 25-level offset is added, the way
    # shading changes across a scene lit from another side.
    w = img.shape[1]
    gain = np.linspace(1.4, 0.6, w, dtype=np.float32)[None, :]
    return np.clip(img.astype(np.float32) * gain + 25.0, 0, 255).astype(np.uint8)


def test_a_lighting_change_does_not_pull_the_tracked_corners() -> None:
    des = _texture()
    dx, dy = 2.4, -1.3
    cur = _relit(_shifted(des, dx, dy))
    errors = {}
    for sigma in (0.0, 4.0):
        tracker = DesiredTracker(normalise_sigma_px=sigma, fb_max_px=1.0)
        tracker.set_desired(des)
        pc, pd = tracker.track(cur)
        inside = np.all((pd > 16) & (pd < 112), axis=1)
        assert inside.sum() > 20
        errors[sigma] = np.median(np.linalg.norm(pc[inside] - pd[inside] - [dx, dy], axis=1))
    # Raw intensities break brightness constancy and the track is off by a third of a pixel; normalised, by a twentieth
    # (the uint8 rounding of the normalised images).
    assert errors[0.0] > 0.2
    assert errors[4.0] < 0.08


def test_local_contrast_ignores_gain_and_offset_and_keeps_edges_in_place() -> None:
    img = _texture()
    a = local_contrast(img, 8.0).astype(int)
    b = local_contrast(np.clip(img.astype(np.float32) * 0.7 + 30, 0, 255).astype(np.uint8), 8.0).astype(int)
    assert np.percentile(np.abs(a - b), 99) <= 3  # uint8 rounding and the std floor only
    assert np.array_equal(local_contrast(img, 0.0), img)
    with pytest.raises(ValueError, match="sigma_px"):
        local_contrast(img, -1.0)
    with pytest.raises(ValueError, match="normalise_sigma_px"):
        DesiredTracker(normalise_sigma_px=-1.0)
