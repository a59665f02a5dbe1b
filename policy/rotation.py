"""Quarter-turn canonicalisation of the current image: large in-plane rotations turned into small ones, exactly.

Learned patch matching fails beyond about 60 deg of in-plane rotation (shared/notes/network.md), yet most benchmark
episodes start there. Turning a square image by k x 90 deg about its centre is a rotation of the camera about its own
optical axis, so it changes no information: the current camera c becomes c' with cTc' = Rz(k pi/2) (`rot90_pose`).
`np.rot90(image, k)` turns about the pixel (W-1)/2, but the canonical camera's principal point is W/2, so the turned
image is then shifted by one pixel along the axes that need it (`turn_image`, `turn_images`): that makes it what c'
sees, to 0.01 grey levels on MuJoCo renders (without the shift: 2-3 levels). With the k that brings c' nearest the
desired orientation (`nearest_quarter_turn`), every relative rotation's in-plane part falls within +-45 deg, and the
theta-u label, which flips sign at 180 deg, is never asked to average two opposite targets.

Training picks k from the true pose (`draw_quarter_turn`: any turn that leaves at most `data.rot90_max_deg`, so the
network also learns the far side of the +-45 deg boundary that closed loop always crosses) and rotates the label
(`rotate_label`) and the ground-truth matches (`rotate_match_grid`) with the image. At run time no pose is known:
`Servo` runs all four turns in one batch, keeps the one whose matches are most confident, and maps the velocity back
to the real camera (`velocity_from_turned`): the PBVS velocity is inverted to a pose (Eq. 18), composed with the
turn, and turned into PBVS again (Eq. 5).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import ArrayLike

from policy.control import normalize_velocity, pbvs, pbvs_inverse
from sim.geometry import rot_z, rotation_angle
from sim.validate import as_array, as_pose

if TYPE_CHECKING:
    from torch import Tensor

__all__ = [
    "QUARTER_TURNS",
    "draw_quarter_turn",
    "nearest_quarter_turn",
    "rot90_pose",
    "rotate_label",
    "rotate_match_grid",
    "turn_angles",
    "turn_image",
    "turn_images",
    "unturn_pixels",
    "velocity_from_turned",
]

QUARTER_TURNS = (0, 1, 2, 3)
# The one-pixel shift (rows, cols) after np.rot90(k) that moves the turned principal point back to (W/2, H/2).
_SHIFT = {0: (0, 0), 1: (1, 0), 2: (1, 1), 3: (0, 1)}


def _check_k(k: int) -> int:
    if isinstance(k, bool) or not isinstance(k, int | np.integer):
        raise ValueError(f"k: expected an integer number of quarter turns, got {k!r}")
    return int(k) % 4


def turn_image(image: np.ndarray, k: int) -> np.ndarray:
    """What the turned camera c' (`rot90_pose(k)`) sees, from a square (H, H, ...) image of the canonical camera.

    np.rot90 over axes (0, 1), then a one-pixel shift whose uncovered edge repeats its neighbour.
    """
    a = np.asarray(image)
    if a.ndim < 2 or a.shape[0] != a.shape[1]:
        raise ValueError(f"image: a quarter turn needs a square (H, H, ...) image, got shape {a.shape}")
    k = _check_k(k)
    out = np.rot90(a, k, axes=(0, 1))
    dy, dx = _SHIFT[k]
    if dy:
        out = np.concatenate([out[:1], out[:-1]], axis=0)
    if dx:
        out = np.concatenate([out[:, :1], out[:, :-1]], axis=1)
    return np.ascontiguousarray(out)


def turn_images(images: Tensor, k: int) -> Tensor:
    """`turn_image` for a batch (B, C, H, H) of tensors."""
    if images.ndim != 4 or images.shape[-1] != images.shape[-2]:
        raise ValueError(f"images: a quarter turn needs square (B, C, H, H) images, got {tuple(images.shape)}")
    import torch  # here: Servo on exported graphs (policy.onnx_policy) turns numpy images and never imports torch

    k = _check_k(k)
    out = torch.rot90(images, k, dims=(-2, -1))
    dy, dx = _SHIFT[k]
    if dy:
        out = torch.cat([out[..., :1, :], out[..., :-1, :]], dim=-2)
    if dx:
        out = torch.cat([out[..., :1], out[..., :-1]], dim=-1)
    return out


def unturn_pixels(px: np.ndarray, k: int, width: int, height: int) -> np.ndarray:
    """Map pixels (N, 2) of `np.rot90(image, k)` back to `image`, of size `width` x `height` (OpenCV's convention:
    pixel centres at integers).

    One turn maps `image[y, x]` to `turned[w - 1 - x, y]`, so its inverse is (x', y') -> (w - 1 - y', x'), with w the
    width of the image before that turn. Exact: a whole pixel maps to the pixel holding the same value.
    """
    p = np.array(px, np.float64, copy=True).reshape(-1, 2)
    widths = [width if j % 2 == 0 else height for j in range(4)]  # the width before turn j + 1
    for j in range(_check_k(k) - 1, -1, -1):
        p = np.column_stack([widths[j] - 1 - p[:, 1], p[:, 0]])
    return p


def rot90_pose(k: int) -> np.ndarray:
    """Return cTc' (4x4), the turned camera c' in the current camera's frame: a rotation Rz(k pi/2), no translation.

    It is the camera whose image is `turn_image(image, k)`.
    """
    T = np.eye(4)
    T[:3, :3] = np.round(rot_z(_check_k(k) * np.pi / 2))  # exact zeros and ones
    return T


def nearest_quarter_turn(dTc: ArrayLike) -> int:
    """Return the k in 0..3 whose turned camera c' has the smallest rotation angle to the desired camera.

    dTc: (4, 4) pose of the current camera in the desired one. Ties go to the smaller k.
    """
    return _nearest(turn_angles(dTc))


def _nearest(angles: np.ndarray) -> int:
    # Rounded so that float noise cannot break a tie against the smaller k.
    return int(np.argmin(np.round(angles, 9)))


def turn_angles(dTc: ArrayLike) -> np.ndarray:
    """The rotation angle (degrees) from each turned camera c' (k = 0..3) to the desired camera, shape (4,)."""
    T = as_pose(dTc, "dTc")
    return np.array([np.degrees(rotation_angle(T[:3, :3] @ rot90_pose(k)[:3, :3])) for k in QUARTER_TURNS])


def draw_quarter_turn(dTc: ArrayLike, max_deg: float, rng: np.random.Generator) -> int:
    """A training turn: uniform among the turns that leave at most `max_deg` of rotation, else the nearest.

    With `max_deg` = 45 this is always the nearest turn. Closed-loop servoing crosses the +-45 deg boundary between
    two turns in every large-rotation episode, and a network that has only seen residuals within +-45 deg confuses
    +45 with -45 there (textures with 90-degree symmetry look alike) and turns the wrong way. Drawing from the turns
    within a wider `max_deg` teaches both sides of the boundary.
    """
    angles = turn_angles(dTc)
    ok = np.flatnonzero(angles <= max_deg)
    return int(rng.choice(ok)) if ok.size else _nearest(angles)


def rotate_label(dTc: ArrayLike, k: int, scene_scale: float) -> np.ndarray:
    """Return the normalised PBVS label [v / d*, w] (6,) of the turned camera: PBVS(dTc @ rot90_pose(k))."""
    return normalize_velocity(pbvs(as_pose(dTc, "dTc") @ rot90_pose(k)), scene_scale)


def velocity_from_turned(vel_turned: ArrayLike, k: int) -> np.ndarray:
    """Map a normalised PBVS velocity (6,) predicted for the turned camera c' back to the real camera c.

    dTc' = PBVS^-1(v') (Eq. 18), dTc = dTc' @ c'Tc, v = PBVS(dTc) (Eq. 5). Exact for lambda = 1 in the unit world;
    k = 0 returns the input unchanged.
    """
    v = as_array(vel_turned, (6,), "vel_turned")
    k = _check_k(k)
    if k == 0:
        return v.copy()
    return pbvs(pbvs_inverse(v) @ rot90_pose(-k))


def rotate_match_grid(match: np.ndarray, valid: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Ground-truth coarse matches (h, w, 2) and validity (h, w) of the turned current image.

    The desired image does not turn, so the values (desired patch coordinates) stay; only the current patches move,
    as the current image's pixels do (the one-pixel shift of `turn_image` is 1/patch of a cell and is left out).
    The grid must be square.
    """
    m, v = np.asarray(match), np.asarray(valid)
    if m.ndim != 3 or m.shape[-1] != 2 or v.shape != m.shape[:2] or m.shape[0] != m.shape[1]:
        raise ValueError(f"match, valid: expected a square (h, h, 2) grid and (h, h), got {m.shape} and {v.shape}")
    k = _check_k(k)
    return np.rot90(m, k, axes=(0, 1)).copy(), np.rot90(v, k, axes=(0, 1)).copy()
