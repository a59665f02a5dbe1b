"""RoPE attention: offset-only interactions on the grid, and the symmetric shared-weight feature transformer."""

from __future__ import annotations

import pytest
import torch
from timm.layers import apply_rot_embed_cat

from policy.attention import FeatureTransformer, GridRope, Mlp, apply_rope, rope_table

pytestmark = pytest.mark.unit


def test_rope_logits_depend_only_on_the_grid_offset() -> None:
    torch.manual_seed(0)
    h, w, hd = 6, 7, 32
    rope = GridRope(hd, temperature=100.0)(h, w, torch.zeros(1))
    q, k = torch.randn(hd), torch.randn(hd)
    Q = apply_rot_embed_cat(q.expand(h * w, hd).clone(), rope)
    Kt = apply_rot_embed_cat(k.expand(h * w, hd).clone(), rope)
    logits = Q @ Kt.T  # (N, N)

    def at(r: int, c: int) -> int:
        return r * w + c

    for dr, dc in [(0, 1), (2, -3), (-1, 0), (3, 2)]:
        vals = [
            logits[at(r, c), at(r + dr, c + dc)]
            for r in range(h)
            for c in range(w)
            if 0 <= r + dr < h and 0 <= c + dc < w
        ]
        vals = torch.stack(vals)
        assert torch.allclose(vals, vals[0].expand_as(vals), atol=2e-5)
    # ... and different offsets give different logits: the embedding really encodes position.
    assert not torch.isclose(logits[at(0, 0), at(0, 1)], logits[at(0, 0), at(1, 0)], atol=1e-3)


def test_rope_needs_a_head_dim_divisible_by_four() -> None:
    with pytest.raises(ValueError, match="divisible by 4"):
        GridRope(30)


def test_feature_transformer_treats_both_images_alike() -> None:
    torch.manual_seed(0)
    ft = FeatureTransformer(dim=32, depth=2, heads=4, mlp_ratio=2.0, rope_temperature=100.0).eval()
    a, b = torch.randn(2, 12, 32), torch.randn(2, 12, 32)
    fa, fb = ft(a, b, 3, 4)
    gb, ga = ft(b, a, 3, 4)
    torch.testing.assert_close(fa, ga, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(fb, gb, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(fa, a)


@pytest.mark.parametrize(
    ("h", "w", "head_dim", "temperature"), [(6, 7, 32, 100.0), (16, 16, 32, 100.0), (3, 5, 64, 1e4)]
)
def test_rope_and_mlp_are_timms_exactly(h: int, w: int, head_dim: int, temperature: float) -> None:
    from timm.layers import Mlp as TimmMlp
    from timm.layers import RotaryEmbeddingCat

    ours = rope_table(h, w, head_dim, temperature)
    theirs = RotaryEmbeddingCat(head_dim, in_pixels=False, temperature=temperature).get_embed(shape=[h, w])
    assert torch.equal(ours, theirs)
    x = torch.randn(2, 4, h * w, head_dim)
    assert torch.equal(apply_rope(x, ours), apply_rot_embed_cat(x, theirs))
    timm_mlp, mlp = TimmMlp(head_dim, 2 * head_dim), Mlp(head_dim, 2 * head_dim)
    mlp.load_state_dict(timm_mlp.state_dict())  # same parameter names: checkpoints are unchanged
    assert torch.equal(mlp(x), timm_mlp(x))
