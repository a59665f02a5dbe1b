"""Matching outputs: score matrix precision, dual softmax, coarse flow, gravity centres, true matches, aux loss."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from policy.matching import (
    aux_match_loss,
    coarse_flow,
    dual_softmax_confidence,
    gravity_centres,
    gt_coarse_match,
    patch_centres_px,
    patch_positions,
    patch_to_pixels,
    pixels_to_patch,
    score_logits,
    score_matrix,
)
from sim.camera import Camera
from sim.geometry import inv_pose, make_pose, rot_y

pytestmark = pytest.mark.unit


def _features(B: int, N: int, C: int, seed: int, scale: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return scale * torch.randn(B, N, C, generator=g), scale * torch.randn(B, N, C, generator=g)


def test_patch_centres_follow_the_opencv_convention() -> None:
    c = patch_centres_px(2, 3, 16)
    assert c.shape == (6, 2) and c.dtype == torch.float32
    torch.testing.assert_close(c[0], torch.tensor([7.5, 7.5]))
    torch.testing.assert_close(c[5], torch.tensor([39.5, 23.5]))  # row 1, col 2
    torch.testing.assert_close(c[4], torch.tensor([23.5, 23.5]))
    # The grid's outer pixel edges map to the patch-unit edges -0.5 and w - 0.5.
    edges = np.array([[-0.5, -0.5], [47.5, 31.5]])
    np.testing.assert_allclose(pixels_to_patch(edges, 16), [[-0.5, -0.5], [2.5, 1.5]])
    xy = torch.tensor([[0.25, 1.75], [-0.5, 3.0]], dtype=torch.float64)
    torch.testing.assert_close(pixels_to_patch(patch_to_pixels(xy, 14), 14), xy)


def test_score_matrix_rows_sum_to_one_in_fp32_under_bf16_autocast() -> None:
    fc, fd = _features(2, 12, 64, seed=0, scale=4.0)
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        S = score_matrix(fc.bfloat16(), fd.bfloat16())
        assert torch.matmul(fc, fd.transpose(1, 2)).dtype == torch.bfloat16  # autocast really is on
    assert S.dtype == torch.float32 and S.shape == (2, 12, 12)
    torch.testing.assert_close(S.sum(-1), torch.ones(2, 12), atol=1e-6, rtol=0)
    expected = torch.softmax(fc.bfloat16().float() @ fd.bfloat16().float().transpose(1, 2) / 8.0, dim=-1)
    torch.testing.assert_close(S, expected, atol=1e-6, rtol=1e-5)


def test_score_logits_do_not_overflow_with_large_fp16_features() -> None:
    # |f| ~ 300 at C = 64: raw dot products pass fp16's 65504, so an fp16 correlation would be inf.
    fc, fd = _features(1, 8, 64, seed=1, scale=300.0)
    fc, fd = fc.half(), fd.half()
    exact = fc.double() @ fd.double().transpose(1, 2)
    assert exact.abs().max() > torch.finfo(torch.float16).max
    logits = score_logits(fc, fd)
    assert logits.dtype == torch.float32
    torch.testing.assert_close(logits.double(), exact / 8.0, rtol=1e-5, atol=1e-2)
    S = score_matrix(fc, fd)
    assert torch.isfinite(S).all()
    torch.testing.assert_close(S.sum(-1), torch.ones(1, 8))


def test_score_matrix_rejects_mismatched_features() -> None:
    with pytest.raises(ValueError, match="fc, fd"):
        score_matrix(torch.rand(1, 4, 8), torch.rand(1, 4, 7))


def test_dual_softmax_confidence() -> None:
    N = 16
    perm = torch.randperm(N, generator=torch.Generator().manual_seed(2))
    clean = torch.full((1, N, N), -10.0)
    clean[0, torch.arange(N), perm] = 10.0
    noisy = torch.randn(3, N, N, generator=torch.Generator().manual_seed(3))
    for reduce in ("max", "sum"):
        c_clean = dual_softmax_confidence(clean, reduce=reduce)
        c_noisy = dual_softmax_confidence(noisy, reduce=reduce)
        assert c_clean.shape == (1, N) and c_clean.dtype == torch.float32
        assert (c_clean > 0.99).all() and (c_clean <= 1).all()
        assert ((c_noisy >= 0) & (c_noisy <= 1)).all() and c_noisy.mean() < 0.5
    # Two current patches claiming the same desired patch share its column: each keeps only half the confidence.
    shared = clean.clone()
    shared[0, 1] = shared[0, 0]
    c_shared = dual_softmax_confidence(shared)
    torch.testing.assert_close(c_shared[0, :2], torch.full((2,), 0.5), atol=1e-3, rtol=0)
    assert (c_shared[0, 2:] > 0.99).all()
    uniform = dual_softmax_confidence(torch.zeros(1, N, N))
    torch.testing.assert_close(uniform, torch.full((1, N), 1.0 / N**2))
    torch.testing.assert_close(dual_softmax_confidence(torch.zeros(1, N, N), reduce="sum"), torch.full((1, N), 1.0 / N))
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        assert dual_softmax_confidence(noisy.bfloat16()).dtype == torch.float32


def test_coarse_flow_of_one_hot_rows_is_the_integer_offset() -> None:
    h, w = 3, 5
    N = h * w
    target = torch.stack([torch.randperm(N, generator=torch.Generator().manual_seed(s)) for s in (4, 5)])
    S = torch.zeros(2, N, N)
    S.scatter_(2, target[..., None], 1.0)
    flow = coarse_flow(S, h, w)
    assert flow.shape == (2, 2, h, w)
    i = torch.arange(N)
    expected = torch.stack([target % w - i % w, target // w - i // w], dim=1).float().reshape(2, 2, h, w)
    assert torch.equal(flow, expected)
    # A row split evenly between two patches points halfway.
    S2 = torch.zeros(1, N, N)
    S2[0, :, 0] = 0.5
    S2[0, :, N - 1] = 0.5
    torch.testing.assert_close(coarse_flow(S2, h, w)[0, :, 0, 0], torch.tensor([(w - 1) / 2, (h - 1) / 2]))


def test_gravity_centres_uniform_confidence_is_the_plain_mean() -> None:
    h, w = 4, 6
    flow = torch.randn(2, 2, h, w, generator=torch.Generator().manual_seed(6))
    conf = torch.full((2, h * w), 0.3)
    gc, gd = gravity_centres(conf, flow, h, w)
    torch.testing.assert_close(gc, torch.tensor([[(w - 1) / 2, (h - 1) / 2]] * 2))
    torch.testing.assert_close(gd, gc + flow.mean(dim=(2, 3)))
    # All-zero confidence falls back to the same uniform weights, with finite gradients.
    zero = torch.zeros(2, h * w, requires_grad=True)
    gz, _ = gravity_centres(zero, flow, h, w)
    torch.testing.assert_close(gz, gc)
    gz.sum().backward()
    assert torch.isfinite(zero.grad).all()


def test_gravity_centres_hand_built_eq25() -> None:
    # 2 x 2 grid, positions (0,0) (1,0) (0,1) (1,1); confidence 1, 0, 0, 3.
    conf = torch.tensor([[1.0, 0.0, 0.0, 3.0]])
    flow = torch.zeros(1, 2, 2, 2)
    flow[0, :, 0, 0] = torch.tensor([2.0, 1.0])  # patch (0,0) moves to (2, 1)
    flow[0, :, 1, 1] = torch.tensor([-1.0, 0.0])  # patch (1,1) moves to (0, 1)
    flow[0, :, 0, 1] = torch.tensor([50.0, 50.0])  # zero confidence: must not count
    gc, gd = gravity_centres(conf, flow, 2, 2)
    torch.testing.assert_close(gc, torch.tensor([[0.75, 0.75]]))  # (1*(0,0) + 3*(1,1)) / 4
    torch.testing.assert_close(gd, torch.tensor([[0.5, 1.0]]))  # (1*(2,1) + 3*(0,1)) / 4
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        gc16, gd16 = gravity_centres(conf, flow, 2, 2)
    assert gc16.dtype == gd16.dtype == torch.float32
    torch.testing.assert_close((gc16, gd16), (gc, gd))


def _plane_depth(cam: Camera, n: np.ndarray, d: float) -> np.ndarray:
    # z-depth of the plane n . P = d seen through every pixel centre: Z = d / (n . K^-1 [u, v, 1]).
    u, v = np.meshgrid(np.arange(cam.width, dtype=np.float64), np.arange(cam.height, dtype=np.float64))
    rays = np.stack([(u - cam.cx) / cam.fx, (v - cam.cy) / cam.fy, np.ones_like(u)], axis=-1)
    return d / (rays @ n)


CAM = Camera.from_focal(64.0, 64, 48)  # h = 3, w = 4 patches of 16 px


# 0.25 and -0.25 put a column exactly on the left (inclusive) and right (exclusive) image edge; -0.26 just inside
# the last half pixel.
@pytest.mark.parametrize("tx", [0.5, 0.3, -0.2, 0.25, -0.25, -0.26])
def test_gt_match_fronto_parallel_translation(tx: float) -> None:
    Z, p = 2.0, 16
    depth = np.full((CAM.height, CAM.width), Z, dtype=np.float32)
    wTd = make_pose(np.eye(3), [tx, 0.0, 0.0])  # the desired camera is the current one moved by tx along x
    dTc = inv_pose(wTd)  # current camera at the world origin
    match, valid = gt_coarse_match(depth, CAM.K, dTc, p)
    assert match.shape == (3, 4, 2) and valid.shape == (3, 4) and valid.dtype == bool
    shift = -tx * CAM.fx / (Z * p)
    own = patch_positions(3, 4).numpy().reshape(3, 4, 2)
    expected = own + np.array([shift, 0.0])
    inside = (expected[..., 0] >= -0.5) & (expected[..., 0] < 4 - 0.5)
    np.testing.assert_array_equal(valid, inside)
    assert (~valid).any() == (shift >= 0.5 or shift < -0.5)  # a column leaves the image past half a patch
    np.testing.assert_allclose(match[inside], expected[inside], atol=1e-12)


def test_gt_match_identity_pose_returns_own_position_for_any_surface() -> None:
    n = np.array([0.3, -0.2, 1.0])
    depth = _plane_depth(CAM, n / np.linalg.norm(n), 1.5).astype(np.float32)
    match, valid = gt_coarse_match(depth, CAM.K, np.eye(4), 16)
    assert valid.all()
    np.testing.assert_allclose(match, patch_positions(3, 4).numpy().reshape(3, 4, 2), atol=1e-9)


@pytest.mark.parametrize("patch", [16, 15])
def test_gt_match_tilted_plane_uses_the_exact_centre_depth(patch: int) -> None:
    # The patch centre falls between pixels (patch 16) or on one (patch 15); either way its depth must be the plane's.
    cam = Camera.from_focal(70.0, 4 * patch, 3 * patch)
    n = np.array([0.4, 0.3, 1.0])
    n = n / np.linalg.norm(n)
    depth = _plane_depth(cam, n, 2.0)
    dTc = make_pose(rot_y(0.1), [0.2, -0.05, 0.1])
    match, valid = gt_coarse_match(depth, cam.K, dTc, patch)
    uv = patch_centres_px(3, 4, patch).double().numpy()
    rays = np.stack([(uv[:, 0] - cam.cx) / cam.fx, (uv[:, 1] - cam.cy) / cam.fy, np.ones(len(uv))], axis=1)
    P_c = rays * (2.0 / (rays @ n))[:, None]  # exact ray-plane intersection at the centre
    uv_d, _ = cam.project(P_c @ dTc[:3, :3].T + dTc[:3, 3])
    expected = pixels_to_patch(uv_d, patch).reshape(3, 4, 2)
    np.testing.assert_allclose(match[valid], expected[valid], atol=1e-9)
    assert valid.sum() >= 6


def test_gt_match_invalid_sky_behind_and_occluded() -> None:
    p = 16
    depth = np.full((CAM.height, CAM.width), 2.0)
    depth[20:28, 36:44] = np.inf  # the centre pixels of patch (row 1, col 2) see sky
    depth[0, 0] = np.inf  # not a centre pixel of any patch: irrelevant
    match, valid = gt_coarse_match(depth, CAM.K, np.eye(4), p)
    assert not valid[1, 2] and np.isnan(match[1, 2]).all()
    assert valid.sum() == 11
    # Moving 3 m forward puts the 2 m plane behind the desired camera.
    _, behind = gt_coarse_match(depth, CAM.K, inv_pose(make_pose(np.eye(3), [0.0, 0.0, 3.0])), p)
    assert not behind.any()
    # With the desired depth, a surface in front of the point there hides it.
    depth_d = np.full_like(depth, 2.0)
    depth_d[:, :32] = 1.0  # left half of the desired image sees a nearer wall
    _, seen = gt_coarse_match(depth, CAM.K, np.eye(4), p, depth_d=depth_d)
    expected = valid.copy()
    expected[:, :2] = False
    np.testing.assert_array_equal(seen, expected)


def test_gt_match_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="multiple of patch"):
        gt_coarse_match(np.ones((50, 64)), CAM.K, np.eye(4), 16)
    with pytest.raises(ValueError, match="dTc"):
        gt_coarse_match(np.ones((48, 64)), CAM.K, np.eye(3), 16)


def test_aux_match_loss_decreases_as_scores_concentrate_on_the_truth() -> None:
    h, w = 3, 4
    N = h * w
    match = patch_positions(h, w).reshape(1, h, w, 2) + torch.tensor([1.2, -0.3])
    valid = (match[..., 0] < w - 0.5) & (match[..., 1] >= -0.5)
    match[~valid] = float("nan")
    tx = torch.floor(match[..., 0] + 0.5).reshape(-1)
    ty = torch.floor(match[..., 1] + 0.5).reshape(-1)
    truth = torch.zeros(1, N, N)
    for i in range(N):
        if valid.reshape(-1)[i]:
            truth[0, i, int(ty[i] * w + tx[i])] = 1.0
    losses = [aux_match_loss(a * truth, match, valid, h, w).item() for a in (0.0, 1.0, 3.0, 10.0)]
    assert losses[0] == pytest.approx(np.log(N))
    assert all(b < a for a, b in itertools.pairwise(losses)) and losses[-1] < 1e-3
    # log S works as logits, and a wrong concentration costs more than none.
    S = torch.softmax(5.0 * truth, dim=-1)
    assert aux_match_loss(S.log(), match, valid, h, w).item() == pytest.approx(
        aux_match_loss(5.0 * truth, match, valid, h, w).item()
    )
    wrong = torch.roll(truth, 1, dims=2)
    assert aux_match_loss(5.0 * wrong, match, valid, h, w) > losses[0]


def test_aux_match_loss_without_valid_patches_is_a_differentiable_zero() -> None:
    h, w = 2, 3
    logits = torch.randn(2, 6, 6, requires_grad=True)
    match = np.full((2, h, w, 2), np.nan)
    loss = aux_match_loss(logits, match, np.zeros((2, h, w), dtype=bool), h, w)
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    assert torch.equal(logits.grad, torch.zeros_like(logits))
    with pytest.raises(ValueError, match="match, valid"):
        aux_match_loss(logits, match[:1], np.zeros((2, h, w), dtype=bool), h, w)
