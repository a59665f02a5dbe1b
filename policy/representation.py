"""The probabilistic matching representation P of CNSv2 (paper Eq. 16-17) and the paper's ablation inputs phi_S, phi_M.

Conventions: an h x w patch grid in row-major order (i = row * w + col); a patch's position is (x, y) = (col, row) in
patch units. S is (B, N, N), N = h * w: rows are current patches, columns desired patches, each row sums to 1.
The particles of current patch i are all desired patches j, at offset f_ij = x_d^j - x_c^i with quantity S_ij. There are
k anchors per axis at the cell centres -n + (a + 0.5) * 2n / k (n = w for x, h for y), so they tile [-n, n] exactly;
the paper does not place them. Output channel qy * k + px is the anchor (anchor_x[px], anchor_y[qy]).

Patches sit on an integer lattice and the kernel is separable, so Eq. 16 is exactly two batched products against
per-axis kernel tables (shared/notes/network.md): no scatter, no loop, differentiable, N*N*k + N*w*k*k multiply-adds.
The denominator counts particles, not scores, so it is a table too.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["anchor_positions", "bspline2", "p2g", "phi_m", "phi_s"]

# Lattice offsets land exactly on the kernel's 1.5-cell edge. Were rounding to put one a hair inside, an anchor with no
# other particle would get a tiny weight, and num / den would turn it into a full, spurious value.
SUPPORT = 1.5 - 1e-9


def anchor_positions(n: int, k: int) -> Tensor:
    """Return the k anchor offsets -n + (a + 0.5) * 2n / k (float64), patch units, of an axis n patches long."""
    return -n + (torch.arange(k, dtype=torch.float64) + 0.5) * (2.0 * n / k)


def bspline2(a: Tensor) -> Tensor:
    """Return the quadratic B-spline kappa(a) of Eq. 17, zero for |a| >= 1.5 - 1e-9."""
    a = a.abs()
    inner = 0.75 - a * a
    outer = 0.5 * (1.5 - a) ** 2
    return torch.where(a < 0.5, inner, torch.where(a < SUPPORT, outer, torch.zeros_like(a)))


def _axis_table(n: int, k: int) -> Tensor:
    # table[c, a, d] = kappa((d - c - anchor_a) / g), g = 2n / k. Written as (d - c + n) k / 2n - (a + 0.5), a support
    # edge (an integer there) is computed exactly, before SUPPORT even matters.
    c = torch.arange(n, dtype=torch.float64)[:, None, None]
    a = torch.arange(k, dtype=torch.float64)[None, :, None]
    d = torch.arange(n, dtype=torch.float64)[None, None, :]
    return bspline2((d - c + n) * k / (2 * n) - (a + 0.5))


@functools.lru_cache(maxsize=64)
def _tables(h: int, w: int, k: int, device: torch.device, dtype: torch.dtype) -> tuple[Tensor, Tensor, Tensor]:
    # Built outside inference mode so a first call under torch.inference_mode() cannot cache tensors that a later
    # training step is forbidden to save for backward.
    with torch.inference_mode(False), torch.no_grad():
        kx = _axis_table(w, k)  # (w, k, w): [col, px, x_d]
        ky = _axis_table(h, k)  # (h, k, h): [row, qy, y_d]
        # The denominator of Eq. 16 counts particles, not scores: it is the same for every S.
        den = ky.sum(-1)[:, None, :, None] * kx.sum(-1)[None, :, None, :]  # (h, w, k, k): [row, col, qy, px]
        inv_den = torch.where(den > 0, 1.0 / torch.where(den > 0, den, 1.0), 0.0)
        return kx.to(device, dtype), ky.to(device, dtype), inv_den.to(device, dtype)


def _check_scores(S: Tensor, h: int, w: int) -> None:
    if not isinstance(S, Tensor) or not S.is_floating_point():
        raise ValueError(f"S: expected a floating-point tensor, got {type(S).__name__} {getattr(S, 'dtype', '')}")
    if h < 1 or w < 1:
        raise ValueError(f"h, w: the patch grid must be at least 1 x 1, got h={h}, w={w}")
    if S.ndim != 3 or S.shape[1] != h * w or S.shape[2] != h * w:
        raise ValueError(f"S: expected shape (B, {h * w}, {h * w}) for an h={h} x w={w} grid, got {tuple(S.shape)}")


def _check_k(k: int) -> None:
    if isinstance(k, bool) or not isinstance(k, int) or k < 2:
        raise ValueError(f"k: the number of anchors per axis must be an integer >= 2, got {k!r}")


def _compute_dtype(S: Tensor) -> torch.dtype:
    # float32 at least: half-precision sums of N small scores lose the probabilities P is made of.
    return torch.promote_types(S.dtype, torch.float32)


def p2g(S: Tensor, h: int, w: int, k: int) -> Tensor:
    """Return P of Eq. 16, (B, k*k, h, w): each current patch's match scores splatted onto k x k offset anchors."""
    _check_scores(S, h, w)
    _check_k(k)
    dtype = _compute_dtype(S)
    kx, ky, inv_den = _tables(h, w, k, S.device, dtype)
    # CUDA autocast would run these products in fp16.
    with torch.autocast(device_type=S.device.type, enabled=False):
        s = S.to(dtype).reshape(S.shape[0], h, w, h, w)  # [b, row, col, y_d, x_d]
        # The notes' two einsums, as broadcast matmuls: einsum copies S into a c-major layout first, which made it
        # 2-4x slower on CPU at 32 x 32 patches.
        t = ky[:, None] @ s  # [b, row, col, qy, x_d]
        num = t @ kx.transpose(1, 2)  # [b, row, col, qy, px]
        return (num * inv_den).permute(0, 3, 4, 1, 2).reshape(S.shape[0], k * k, h, w)


def phi_s(S: Tensor, h: int, w: int, k: int) -> Tensor:
    """Return the phi_S input (B, k*k, h, w): each row of S as an h x w image, bilinearly resized to k x k."""
    _check_scores(S, h, w)
    _check_k(k)
    B = S.shape[0]
    with torch.autocast(device_type=S.device.type, enabled=False):
        img = S.to(_compute_dtype(S)).reshape(B * h * w, 1, h, w)
        # The paper says "bilinearly sample": plain bilinear, no antialias, so downsampling can skip mass.
        small = F.interpolate(img, size=(k, k), mode="bilinear", align_corners=False)
        return small.reshape(B, h, w, k * k).permute(0, 3, 1, 2).contiguous()


def phi_m(S: Tensor, h: int, w: int) -> Tensor:
    """Return the explicit-match ablation input (B, 3, h, w): argmax offset (dx / w, dy / h) and that max score.

    The argmax is piecewise constant, so gradients reach S only through the max-score channel.
    """
    _check_scores(S, h, w)
    B, N = S.shape[0], h * w
    with torch.autocast(device_type=S.device.type, enabled=False):
        score, j = S.to(_compute_dtype(S)).max(dim=-1)  # (B, N)
        i = torch.arange(N, device=S.device)
        dx = (j % w - i % w).to(score.dtype) / w
        dy = (j // w - i // w).to(score.dtype) / h
        return torch.stack([dx, dy, score], dim=1).reshape(B, 3, h, w)
