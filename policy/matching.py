"""Matching outputs of the CNSv2 patch matcher: score matrix (Eq. 14), coarse flow (Eq. 15), dual-softmax confidence and
image gravity centres (Eq. 25), and ground-truth coarse matches with a LoFTR-style auxiliary loss.

Conventions: an h x w patch grid in row-major order (i = row * w + col); a patch's position is (x, y) = (col, row) in
patch units, and its pixel centre, for a patch size p, is ((col + 0.5) p - 0.5, (row + 0.5) p - 0.5) in OpenCV pixels
(pixel centres at integers, as sim.camera). S is (B, N, N), N = h * w: rows are current patches, columns desired
patches. Scores are computed in float32 at least whatever the input or autocast dtype: fp16 overflowed there
(shared/notes/network.md).
"""

from __future__ import annotations

import math
from typing import Literal, TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import ArrayLike
from torch import Tensor

from sim.validate import as_array, as_pose

__all__ = [
    "aux_match_loss",
    "coarse_flow",
    "dual_softmax_confidence",
    "gravity_centres",
    "gt_coarse_match",
    "nearest_cells",
    "patch_centres_px",
    "patch_positions",
    "patch_to_pixels",
    "pixels_to_patch",
    "score_logits",
    "score_matrix",
]

Coords = TypeVar("Coords", Tensor, np.ndarray)


def _compute_dtype(x: Tensor) -> torch.dtype:
    return torch.promote_types(x.dtype, torch.float32)


def _check_scores(S: Tensor, h: int, w: int, name: str = "S") -> None:
    if not isinstance(S, Tensor) or not S.is_floating_point():
        raise ValueError(f"{name}: expected a floating-point tensor, got {type(S).__name__} {getattr(S, 'dtype', '')}")
    if h < 1 or w < 1:
        raise ValueError(f"h, w: the patch grid must be at least 1 x 1, got h={h}, w={w}")
    if S.ndim != 3 or S.shape[1] != h * w or S.shape[2] != h * w:
        raise ValueError(
            f"{name}: expected shape (B, {h * w}, {h * w}) for an h={h} x w={w} grid, got {tuple(S.shape)}"
        )


def patch_positions(
    h: int, w: int, device: torch.device | str | None = None, dtype: torch.dtype = torch.float32
) -> Tensor:
    """Return the (N, 2) patch-unit positions (x, y) = (col, row) of an h x w grid, row-major."""
    row, col = torch.meshgrid(
        torch.arange(h, device=device, dtype=dtype), torch.arange(w, device=device, dtype=dtype), indexing="ij"
    )
    return torch.stack([col.reshape(-1), row.reshape(-1)], dim=1)


def patch_to_pixels(xy_patch: Coords, patch: int) -> Coords:
    """Map patch-unit coordinates (..., 2) to OpenCV pixel coordinates: (x + 0.5) * patch - 0.5."""
    return (xy_patch + 0.5) * patch - 0.5


def pixels_to_patch(uv: Coords, patch: int) -> Coords:
    """Map OpenCV pixel coordinates (..., 2) to patch-unit coordinates, the inverse of `patch_to_pixels`."""
    return (uv + 0.5) / patch - 0.5


def patch_centres_px(h: int, w: int, patch: int, device: torch.device | str | None = None) -> Tensor:
    """Return the (N, 2) float32 pixel centres (u, v) of an h x w grid of patch x patch pixels, row-major."""
    return patch_to_pixels(patch_positions(h, w, device=device), patch)


def score_logits(fc: Tensor, fd: Tensor) -> Tensor:
    """Return the (B, N, M) correlation fc fd^T / sqrt(C) of (B, N, C), (B, M, C) token features, float32 at least."""
    if fc.ndim != 3 or fd.ndim != 3 or fc.shape[0] != fd.shape[0] or fc.shape[2] != fd.shape[2]:
        raise ValueError(f"fc, fd: expected (B, N, C) and (B, M, C), got {tuple(fc.shape)} and {tuple(fd.shape)}")
    dtype = torch.promote_types(_compute_dtype(fc), fd.dtype)
    with torch.autocast(device_type=fc.device.type, enabled=False):
        return (fc.to(dtype) * (1.0 / math.sqrt(fc.shape[2]))) @ fd.to(dtype).transpose(1, 2)


def score_matrix(fc: Tensor, fd: Tensor) -> Tensor:
    """Return S of Eq. 14, softmax over desired patches of `score_logits(fc, fd)`, float32 at least."""
    logits = score_logits(fc, fd)
    with torch.autocast(device_type=logits.device.type, enabled=False):
        return logits.softmax(dim=-1)


def dual_softmax_confidence(logits: Tensor, reduce: Literal["max", "sum"] = "max") -> Tensor:
    """Return the (B, N) dual-softmax confidence of each current patch, in [0, 1], from (B, N, M) score logits.

    C_i reduces softmax_row(logits)_ij * softmax_col(logits)_ij over j: "max" is LoFTR's mutual score of the best
    match; "sum" is Eq. 25's text, sum_j S_c->d S_d->c, which also credits ambiguous partners.
    """
    if logits.ndim != 3:
        raise ValueError(f"logits: expected (B, N, M), got {tuple(logits.shape)}")
    with torch.autocast(device_type=logits.device.type, enabled=False):
        x = logits.to(_compute_dtype(logits))
        mutual = x.softmax(dim=-1) * x.softmax(dim=-2)
        if reduce == "max":
            return mutual.amax(dim=-1)
        if reduce == "sum":
            return mutual.sum(dim=-1)
    raise ValueError(f"reduce: expected 'max' or 'sum', got {reduce!r}")


def coarse_flow(S: Tensor, h: int, w: int) -> Tensor:
    """Return the (B, 2, h, w) coarse flow of Eq. 15, expected desired position minus current position, patch units."""
    _check_scores(S, h, w)
    with torch.autocast(device_type=S.device.type, enabled=False):
        s = S.to(_compute_dtype(S))
        xy = patch_positions(h, w, device=S.device, dtype=s.dtype)
        flow = s @ xy - xy  # (B, N, 2)
        return flow.transpose(1, 2).reshape(S.shape[0], 2, h, w)


def gravity_centres(confidence: Tensor, flow: Tensor, h: int, w: int) -> tuple[Tensor, Tensor]:
    """Return Eq. 25's image gravity centres (current, desired), each (B, 2) in patch units, weighted by confidence.

    The current centre averages patch positions x_c; the desired one averages x_c + flow. A sample whose confidence
    is zero everywhere falls back to uniform weights rather than dividing by zero.
    """
    B, N = confidence.shape[0], h * w
    if confidence.shape != (B, N) or flow.shape != (B, 2, h, w):
        raise ValueError(
            f"confidence, flow: expected ({B}, {N}) and ({B}, 2, {h}, {w}), got {tuple(confidence.shape)} and "
            f"{tuple(flow.shape)}"
        )
    dtype = torch.promote_types(_compute_dtype(confidence), flow.dtype)
    with torch.autocast(device_type=confidence.device.type, enabled=False):
        c = confidence.to(dtype)
        total = c.sum(dim=1, keepdim=True)
        # The inner where keeps the unused branch finite, so its gradient cannot turn into NaN.
        weights = torch.where(total > 0, c / torch.where(total > 0, total, 1.0), 1.0 / N)
        xy = patch_positions(h, w, device=c.device, dtype=dtype)  # (N, 2)
        centre_c = weights @ xy
        centre_d = centre_c + torch.einsum("bn,bkn->bk", weights, flow.to(dtype).reshape(B, 2, N))
        return centre_c, centre_d


def gt_coarse_match(
    depth: ArrayLike,
    K: ArrayLike,
    dTc: ArrayLike,
    patch: int,
    depth_d: ArrayLike | None = None,
    occlusion_rtol: float = 0.05,
) -> tuple[np.ndarray, np.ndarray]:
    """Return where each current patch centre lands in the desired image, as (match, valid).

    depth: the current image's z-depth (H, W) in metres, +inf (or NaN, or <= 0) where there is no surface; H and W are
    multiples of `patch`. K: the 3x3 intrinsics of both images. dTc: the 4x4 pose with P_d = R P_c + t.
    match: (h, w, 2) float64, the desired-image position (x, y) in desired *patch* units (`pixels_to_patch` of the
    projected pixel; the nearest desired patch is its rounding); NaN where the point cannot be projected.
    valid: (h, w) bool, finite positive depth, in front of the desired camera, inside the desired image, and, when the
    desired depth `depth_d` is given, not hidden there (projected depth <= (1 + occlusion_rtol) * depth_d at the
    nearest pixel). Without depth_d occlusion is not checked.
    A patch centre with an even `patch` falls between four pixels: its depth is the mean of their inverse depths,
    exact for any plane, and the patch is invalid if any of them is not a finite positive depth.
    """
    Z = np.asarray(depth, dtype=np.float64)
    if Z.ndim != 2:
        raise ValueError(f"depth: expected an (H, W) array, got shape {Z.shape}")
    if isinstance(patch, bool) or not isinstance(patch, int | np.integer) or patch < 1:
        raise ValueError(f"patch: expected an integer >= 1, got {patch!r}")
    H, W = Z.shape
    if H % patch or W % patch or H == 0 or W == 0:
        raise ValueError(f"depth: image size {W}x{H} must be a positive multiple of patch={patch}")
    K = as_array(K, (3, 3), "K")
    T = as_pose(dTc, "dTc")
    h, w = H // patch, W // patch

    # The 1 (odd patch) or 2 (even patch) pixels per axis nearest the patch centre.
    offs = np.unique([(patch - 1) // 2, patch // 2])
    rows = (np.arange(h)[:, None] * patch + offs).reshape(-1)
    cols = (np.arange(w)[:, None] * patch + offs).reshape(-1)
    block = Z[np.ix_(rows, cols)].reshape(h, offs.size, w, offs.size)
    with np.errstate(divide="ignore", invalid="ignore"):
        ok = np.all(np.isfinite(block) & (block > 0), axis=(1, 3))
        z = 1.0 / np.mean(1.0 / block, axis=(1, 3))  # inverse depth is affine in pixels on a plane
    z = np.where(ok, z, np.nan)

    uv = patch_to_pixels(np.stack(np.meshgrid(np.arange(w), np.arange(h)), axis=-1).astype(np.float64), patch)
    rays = np.concatenate([uv, np.ones((h, w, 1))], axis=-1) @ np.linalg.inv(K).T
    P_d = (rays * z[..., None]) @ T[:3, :3].T + T[:3, 3]
    front = ok & (P_d[..., 2] > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        proj = P_d @ K.T
        uv_d = np.where(front[..., None], proj[..., :2] / proj[..., 2:], np.nan)
    inside = (
        front & (uv_d[..., 0] >= -0.5) & (uv_d[..., 0] < W - 0.5) & (uv_d[..., 1] >= -0.5) & (uv_d[..., 1] < H - 0.5)
    )
    valid = inside
    if depth_d is not None:
        Zd = np.asarray(depth_d, dtype=np.float64)
        if Zd.shape != Z.shape:
            raise ValueError(f"depth_d: expected shape {Z.shape} like depth, got {Zd.shape}")
        iu = np.clip(np.floor(np.nan_to_num(uv_d[..., 0]) + 0.5), 0, W - 1).astype(np.intp)
        iv = np.clip(np.floor(np.nan_to_num(uv_d[..., 1]) + 0.5), 0, H - 1).astype(np.intp)
        with np.errstate(invalid="ignore"):
            valid = inside & ~(P_d[..., 2] > (1.0 + occlusion_rtol) * Zd[iv, iu])
    return pixels_to_patch(uv_d, patch), valid


def nearest_cells(match: Tensor, valid: Tensor, h: int, w: int) -> tuple[Tensor, Tensor]:
    """The desired cell (x, y), each (B, N) long, nearest each current patch's true match (B, h, w, 2) or (B, N, 2).

    Invalid patches (valid False; their match may be NaN) get cell (0, 0); positions are clamped into the grid.
    """
    B = match.shape[0]
    m = match.reshape(B, h * w, 2)
    m = torch.where(valid.reshape(B, h * w)[..., None], m, torch.zeros((), dtype=m.dtype, device=m.device))
    tx = torch.floor(m[..., 0] + 0.5).clamp(0, w - 1).long()
    ty = torch.floor(m[..., 1] + 0.5).clamp(0, h - 1).long()
    return tx, ty


def aux_match_loss(logits: Tensor, match: Tensor | np.ndarray, valid: Tensor | np.ndarray, h: int, w: int) -> Tensor:
    """Return the mean cross-entropy of each valid current patch against the desired patch nearest its true match.

    logits: (B, N, N) score logits (passing log S works the same, since log_softmax(log S) = log S). match: (B, h, w, 2)
    desired patch-unit positions and valid: (B, h, w) bool, as stacked `gt_coarse_match` outputs. With no valid patch
    the loss is a zero that still has a (zero) gradient.
    """
    _check_scores(logits, h, w, "logits")
    B, N = logits.shape[0], h * w
    m = torch.as_tensor(match, device=logits.device)
    v = torch.as_tensor(valid, device=logits.device, dtype=torch.bool)
    if m.shape != (B, h, w, 2) or v.shape != (B, h, w) or not m.is_floating_point():
        raise ValueError(
            f"match, valid: expected float ({B}, {h}, {w}, 2) and bool ({B}, {h}, {w}), got {tuple(m.shape)} {m.dtype} "
            f"and {tuple(v.shape)}"
        )
    v = v.reshape(B, N)
    tx, ty = nearest_cells(m, v, h, w)
    target = ty * w + tx
    with torch.autocast(device_type=logits.device.type, enabled=False):
        x = logits.to(_compute_dtype(logits))
        # Summing over the selected rows keeps the no-valid case a finite 0 (a mean over nothing is NaN).
        ce = F.cross_entropy(x[v], target[v], reduction="sum")
        return ce / v.sum().clamp_min(1).to(ce.dtype)
