"""P2G (paper Eq. 16-17) against a literal loop, its translation equivariance, and the phi_S / phi_M ablation inputs."""

from __future__ import annotations

import functools
from fractions import Fraction

import numpy as np
import pytest
import torch

from policy.representation import anchor_positions, bspline2, p2g, phi_m, phi_s

pytestmark = pytest.mark.unit


def _row_stochastic(B: int, N: int, seed: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.softmax(3.0 * torch.randn(B, N, N, generator=g, dtype=dtype), dim=-1)


@functools.cache
def _kappa_exact(a: Fraction) -> float:
    # Eq. 17 on an exact rational argument, so a particle on the 1.5 support edge gets exactly 0.
    a = abs(a)
    if a < Fraction(1, 2):
        return float(Fraction(3, 4) - a * a)
    if a < Fraction(3, 2):
        return float(Fraction(1, 2) * (Fraction(3, 2) - a) ** 2)
    return 0.0


def _p2g_literal(S: np.ndarray, h: int, w: int, k: int) -> np.ndarray:
    """Eq. 16 as written: for each current patch and anchor, sum over the particles (all desired patches)."""
    B = S.shape[0]
    gx, gy = Fraction(2 * w, k), Fraction(2 * h, k)
    ax = [-w + (a + Fraction(1, 2)) * gx for a in range(k)]
    ay = [-h + (a + Fraction(1, 2)) * gy for a in range(k)]
    P = np.zeros((B, k * k, h, w))
    for b in range(B):
        for i in range(h * w):
            row, col = divmod(i, w)
            for qy in range(k):
                for px in range(k):
                    num = den = 0.0
                    for j in range(h * w):
                        fy, fx = j // w - row, j % w - col
                        weight = _kappa_exact((fx - ax[px]) / gx) * _kappa_exact((fy - ay[qy]) / gy)
                        num += S[b, i, j] * weight
                        den += weight
                    P[b, qy * k + px, row, col] = num / den if den > 0 else 0.0
    return P


# Non-square grids, odd and even k, and (3, 4, 10): there x offset 0 sits exactly on the right support edge of anchor
# px = 3 (-1.2, g = 0.8), its only candidate particle for column 0; (0 - anchor) / g evaluated naively in floats is
# 1.4999999999999996, which would invent a full value there.
@pytest.mark.parametrize(("h", "w", "k"), [(3, 4, 2), (4, 4, 3), (5, 3, 4), (6, 6, 5), (3, 4, 10)])
def test_p2g_matches_literal_eq16(h: int, w: int, k: int) -> None:
    S = _row_stochastic(2, h * w, seed=h * 100 + w * 10 + k)
    expected = _p2g_literal(S.numpy(), h, w, k)
    got = p2g(S.float(), h, w, k)
    assert got.shape == (2, k * k, h, w)
    assert got.dtype == torch.float32
    np.testing.assert_allclose(got.double().numpy(), expected, atol=1e-6, rtol=0)
    np.testing.assert_allclose(p2g(S, h, w, k).numpy(), expected, atol=1e-12, rtol=0)


def test_support_edge_gives_zero_not_a_spurious_value() -> None:
    # w = 4, k = 10: anchor px = 3 sits at -1.2 with g = 0.8, so offset 0 lies exactly on its support edge. Column 0
    # sees offsets 0..3 only, so this anchor has no particle strictly inside its support there: P must be exactly 0.
    h, w, k = 2, 4, 10
    anchor, g = -w + 3.5 * (2 * w / k), 2 * w / k
    assert (0 - anchor) / g < 1.5  # the naive float evaluation this guards against
    S = _row_stochastic(1, h * w, seed=0)
    P = p2g(S, h, w, k)
    assert torch.all(P[0, torch.arange(k) * k + 3, :, 0] == 0)
    assert torch.any(P[0, torch.arange(k) * k + 3, :, 1] > 0)  # one column over it has particles
    assert bspline2(torch.tensor([1.5, -1.5, 1.5 - 1e-12], dtype=torch.float64)).eq(0).all()


def test_bspline_values_and_partition_of_unity() -> None:
    a = torch.tensor([0.0, 0.25, 0.5, 1.0, 1.49, 2.0], dtype=torch.float64)
    expected = torch.tensor([0.75, 0.6875, 0.5, 0.125, 0.5 * 0.01**2, 0.0], dtype=torch.float64)
    torch.testing.assert_close(bspline2(a), expected)
    # Integer-spaced kernels sum to one anywhere, the property that makes anchors tile the offset range.
    x = torch.linspace(-0.5, 0.5, 11, dtype=torch.float64)
    total = sum(bspline2(x - n) for n in range(-3, 4))
    torch.testing.assert_close(total, torch.ones_like(x))


def test_anchors_are_cell_centres_tiling_the_offset_range() -> None:
    a = anchor_positions(4, 4)
    torch.testing.assert_close(a, torch.tensor([-3.0, -1.0, 1.0, 3.0], dtype=torch.float64))
    assert anchor_positions(6, 3)[1] == 0  # odd k: an anchor at zero offset


def _support_inside(anchor: float, g: float, lo: int, hi: int) -> bool:
    # Every lattice offset the anchor's kernel reaches lies inside the window [lo, hi] of existing offsets.
    reach = [f for f in range(lo - 10, hi + 11) if abs(f - anchor) / g < 1.5 - 1e-9]
    return not reach or (min(reach) >= lo and max(reach) <= hi)


def test_translation_equivariance() -> None:
    """A spatially stationary match gives the same P vector at every patch, for anchors away from the borders.

    Exactly: each current patch whose 3 x 3 neighbourhood around offset (dx0, dy0) fits in the grid gets the same
    peaked row, S_ij = G(x_d^j - x_c^i), G a random distribution on offsets {dx0-1..dx0+1} x {dy0-1..dy0+1} (every
    patch moved by the same integer flow, as under a pure image shift). For any two such patches i, i' and every anchor
    whose kernel support (all lattice offsets strictly within 1.5 g of it, per axis) lies inside both patches' offset
    windows [-col, w-1-col] x [-row, h-1-row], P[ch, i'] == P[ch, i] to 1e-12: channels do not shuffle, whereas the
    rows of S, which hold the same distribution in different columns, do.
    """
    h, w, k = 10, 12, 10
    gx, gy = 2 * w / k, 2 * h / k
    dx0, dy0 = 1, -1
    g = torch.Generator().manual_seed(3)
    G = torch.rand(3, 3, generator=g, dtype=torch.float64) + 0.1
    G = G / G.sum()
    S = _row_stochastic(1, h * w, seed=4)
    peaked = []
    for i in range(h * w):
        row, col = divmod(i, w)
        if not (0 <= col + dx0 - 1 and col + dx0 + 1 < w and 0 <= row + dy0 - 1 and row + dy0 + 1 < h):
            continue
        S[0, i] = 0
        for ey in range(3):
            for ex in range(3):
                S[0, i, (row + dy0 - 1 + ey) * w + col + dx0 - 1 + ex] = G[ey, ex]
        peaked.append((row, col))
    P = p2g(S, h, w, k)[0]
    ax, ay = anchor_positions(w, k).tolist(), anchor_positions(h, k).tolist()

    in_x = {(px, c): _support_inside(ax[px], gx, -c, w - 1 - c) for px in range(k) for c in range(w)}
    in_y = {(qy, r): _support_inside(ay[qy], gy, -r, h - 1 - r) for qy in range(k) for r in range(h)}
    compared = nonzero = 0
    r0, c0 = peaked[len(peaked) // 2]
    for row, col in peaked:
        for qy in range(k):
            for px in range(k):
                if in_x[px, c0] and in_x[px, col] and in_y[qy, r0] and in_y[qy, row]:
                    ch = qy * k + px
                    assert P[ch, row, col].item() == pytest.approx(P[ch, r0, c0].item(), abs=1e-12)
                    compared += 1
                    nonzero += P[ch, r0, c0].item() > 1e-3
    assert compared > 100 and nonzero >= 4  # the test compared real, non-empty anchors
    # The raw rows shuffle: the same match distribution sits in different columns of S.
    i0, i1 = r0 * w + c0, peaked[0][0] * w + peaked[0][1]
    assert not torch.equal(S[0, i0], S[0, i1])


def test_translation_equivariance_under_content_shift() -> None:
    """Shifting the content of both images by (sx, sy) patches shifts P by (sx, sy), channels unchanged.

    Exactly: S1 is random; each row of a patch (r, c) with r + sy < h, c + sx < w spreads over desired patches (y, x)
    with y + sy < h, x + sx < w only, so the shifted scene is representable. S2 moves every such entry to
    S2[(r + sy, c + sx), (y + sy, x + sx)] (its other rows random). Then P2[ch, r + sy, c + sx] == P1[ch, r, c] to
    1e-12 for every anchor whose support lies inside the offset windows of both (r, c) and (r + sy, c + sx).
    """
    h, w, k, sx, sy = 8, 9, 8, 2, 1
    gen = torch.Generator().manual_seed(5)
    S1 = _row_stochastic(1, h * w, seed=6)
    S2 = _row_stochastic(1, h * w, seed=7)
    keep = torch.zeros(h, w, dtype=torch.float64)
    keep[: h - sy, : w - sx] = 1
    moved = []
    for r in range(h - sy):
        for c in range(w - sx):
            row = torch.rand(h, w, generator=gen, dtype=torch.float64) ** 4 * keep
            S1[0, r * w + c] = (row / row.sum()).reshape(-1)
            S2[0, (r + sy) * w + c + sx] = 0
            S2[0, (r + sy) * w + c + sx].view(h, w)[sy:, sx:] = (row / row.sum())[: h - sy, : w - sx]
            moved.append((r, c))
    torch.testing.assert_close(S2.sum(-1), torch.ones(1, h * w, dtype=torch.float64))
    P1, P2 = p2g(S1, h, w, k)[0], p2g(S2, h, w, k)[0]
    ax, ay = anchor_positions(w, k).tolist(), anchor_positions(h, k).tolist()
    gx, gy = 2 * w / k, 2 * h / k
    compared = 0
    for r, c in moved:
        for qy in range(k):
            if not (
                _support_inside(ay[qy], gy, -r, h - 1 - r) and _support_inside(ay[qy], gy, -r - sy, h - 1 - r - sy)
            ):
                continue
            for px in range(k):
                if _support_inside(ax[px], gx, -c, w - 1 - c) and _support_inside(ax[px], gx, -c - sx, w - 1 - c - sx):
                    ch = qy * k + px
                    assert P2[ch, r + sy, c + sx].item() == pytest.approx(P1[ch, r, c].item(), abs=1e-12)
                    compared += P1[ch, r, c].item() > 1e-4
    assert compared >= 20  # non-trivial anchors (P > 1e-4) were compared


def test_border_anchors_rescale_by_partial_kernel_mass() -> None:
    # S = identity (zero offset everywhere). An anchor whose support leaves the window is rescaled by the partial
    # kernel mass (Eq. 16's denominator), so some such anchor must differ between a corner patch and a central one.
    h = w = k = 8
    S = torch.zeros(1, h * w, h * w, dtype=torch.float64)
    for i in range(h * w):
        S[0, i, i] = 1.0  # zero offset everywhere: content and view are identical
    P = p2g(S, h, w, k)[0]
    assert not torch.allclose(P[:, 0, 0], P[:, 4, 4])


def test_p2g_one_hot_row_is_local() -> None:
    # A one-hot row at offset (+3, -1) makes P non-zero exactly at the anchors whose support contains that offset.
    h, w, k = 6, 8, 7
    row, col, fx, fy = 3, 2, 3, -1
    S = torch.zeros(1, h * w, h * w)
    S[0, row * w + col, (row + fy) * w + col + fx] = 1.0
    P = p2g(S, h, w, k)[0, :, row, col].reshape(k, k)
    near_x = (fx - anchor_positions(w, k)).abs() / (2 * w / k) < 1.5
    near_y = (fy - anchor_positions(h, k)).abs() / (2 * h / k) < 1.5
    assert torch.equal(P > 0, near_y[:, None] & near_x[None, :])
    assert P.sum() > 0


def test_p2g_gradcheck_double() -> None:
    S = _row_stochastic(1, 2 * 3, seed=7).requires_grad_()
    assert torch.autograd.gradcheck(lambda s: p2g(s, 2, 3, 2), (S,))
    assert torch.autograd.gradcheck(lambda s: phi_s(s, 2, 3, 2), (S,))


def test_gradients_flow() -> None:
    S = _row_stochastic(2, 12, seed=8, dtype=torch.float32).requires_grad_()
    (p2g(S, 3, 4, 4).square().sum() + phi_s(S, 3, 4, 4).square().sum()).backward()
    assert S.grad is not None and torch.isfinite(S.grad).all() and S.grad.abs().sum() > 0


def test_low_precision_input_gives_float32_and_autocast_is_ignored() -> None:
    S = _row_stochastic(2, 12, seed=9, dtype=torch.float32)
    ref = p2g(S, 3, 4, 3)
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        out = p2g(S.bfloat16(), 3, 4, 3)
        same = p2g(S, 3, 4, 3)
    assert out.dtype == torch.float32 and same.dtype == torch.float32
    torch.testing.assert_close(same, ref)
    torch.testing.assert_close(out, ref, atol=1e-2, rtol=0)


def test_tables_cached_under_inference_mode_still_train() -> None:
    # The first call of an (h, w, k) under inference_mode must not poison the cache for a later backward pass.
    h, w, k = 3, 7, 5
    with torch.inference_mode():
        p2g(torch.rand(1, h * w, h * w), h, w, k)
    S = torch.rand(1, h * w, h * w, requires_grad=True)
    p2g(S, h, w, k).sum().backward()
    assert S.grad is not None


@pytest.mark.parametrize(
    ("S", "h", "w", "k", "match"),
    [
        (torch.rand(12, 12), 3, 4, 2, "shape"),
        (torch.rand(1, 12, 13), 3, 4, 2, "shape"),
        (torch.rand(1, 12, 12), 4, 4, 2, "shape"),
        (torch.rand(1, 12, 12), 3, 4, 1, "anchors per axis"),
        (torch.ones(1, 12, 12, dtype=torch.long), 3, 4, 2, "floating-point"),
    ],
)
def test_p2g_rejects_bad_input(S: torch.Tensor, h: int, w: int, k: int, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        p2g(S, h, w, k)


def test_phi_s_shape_and_values() -> None:
    h, w, k = 4, 6, 3
    S = _row_stochastic(2, h * w, seed=10, dtype=torch.float32)
    out = phi_s(S, h, w, k)
    assert out.shape == (2, k * k, h, w) and out.dtype == torch.float32
    # A row that is constant over the desired image stays that constant in every channel.
    S[1, 5] = 1.0 / (h * w)
    torch.testing.assert_close(phi_s(S, h, w, k)[1, :, 0, 5], torch.full((k * k,), 1.0 / (h * w)))
    # Same size: bilinear resampling is the identity, and channel qy * k + px is desired patch (row qy, col px).
    sq = _row_stochastic(1, 9, seed=11, dtype=torch.float32)
    torch.testing.assert_close(phi_s(sq, 3, 3, 3)[0].reshape(9, 9).T, sq[0])


def test_phi_m_one_hot_offsets() -> None:
    h, w = 3, 5
    S = torch.zeros(2, h * w, h * w)
    target = torch.tensor([(i * 7 + 3) % (h * w) for i in range(h * w)])
    S[:, torch.arange(h * w), target] = 0.9
    S[:, :, 0] += 0.1 / h / w  # a little off-argmax mass
    out = phi_m(S, h, w)
    assert out.shape == (2, 3, h, w)
    for i in range(h * w):
        row, col = divmod(i, w)
        j = int(target[i])
        assert out[0, 0, row, col] == pytest.approx((j % w - col) / w)
        assert out[0, 1, row, col] == pytest.approx((j // w - row) / h)
        assert out[0, 2, row, col] == pytest.approx(float(S[0, i].max()))
    Sg = S.clone().requires_grad_()
    phi_m(Sg, h, w)[:, 2].sum().backward()
    assert Sg.grad is not None and Sg.grad.sum() == pytest.approx(2 * h * w)  # one unit per row, through the max
