"""Attention with 2-D axial rotary position embeddings (RoPE) over patch grids: self- and cross-attention blocks.

RoPE with integer grid positions makes q.k depend only on the offset between two patches, so cross-attention
between the current and desired images is translation-equivariant (shared/notes/network.md).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.layers import Mlp, RotaryEmbeddingCat, apply_rot_embed_cat
from torch import Tensor, nn


class GridRope(nn.Module):
    """Axial RoPE tables for an h x w grid of integer positions, cached per grid shape."""

    def __init__(self, head_dim: int, temperature: float = 100.0) -> None:
        super().__init__()
        if head_dim % 4:
            raise ValueError(f"RoPE needs a head dimension divisible by 4 (two axes, sin and cos), got {head_dim}")
        self.rope = RotaryEmbeddingCat(head_dim, in_pixels=False, temperature=temperature)
        self._cache: dict[tuple[int, int, str, torch.dtype], Tensor] = {}

    def forward(self, h: int, w: int, like: Tensor) -> Tensor:
        """Return the (h*w, 2*head_dim) sin/cos table on `like`'s device and dtype."""
        key = (h, w, str(like.device), like.dtype)
        if key not in self._cache:
            self._cache[key] = self.rope.get_embed(shape=[h, w]).to(device=like.device, dtype=like.dtype)
        return self._cache[key]


class RopeAttention(nn.Module):
    """Multi-head attention of `x` onto `context` (itself for self-attention), RoPE on queries and keys."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"attention width {dim} is not divisible by {heads} heads")
        self.heads = heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor, context: Tensor, rope: Tensor) -> Tensor:
        """x, context: (B, N, C) tokens of two grids of the same shape; rope: the grid's table."""
        B, N, C = x.shape
        hd = C // self.heads
        q = self.q(x).view(B, N, self.heads, hd).transpose(1, 2)
        k, v = self.kv(context).view(B, -1, 2, self.heads, hd).permute(2, 0, 3, 1, 4)
        q, k = apply_rot_embed_cat(q, rope), apply_rot_embed_cat(k, rope)
        out = F.scaled_dot_product_attention(q, k, v)  # flash kernels on GPU
        return self.proj(out.transpose(1, 2).reshape(B, N, C))


class AttentionBlock(nn.Module):
    """Pre-norm attention + MLP residual block; self-attention when no context is given."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float, cross: bool = False) -> None:
        super().__init__()
        self.norm_x = nn.LayerNorm(dim)
        self.norm_ctx = nn.LayerNorm(dim) if cross else None
        self.attn = RopeAttention(dim, heads)
        self.norm_mlp = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: Tensor, rope: Tensor, context: Tensor | None = None) -> Tensor:
        """Update x by attending to context (or itself)."""
        xn = self.norm_x(x)
        if (context is None) != (self.norm_ctx is None):
            raise ValueError("a cross-attention block needs a context and a self-attention block takes none")
        ctx = xn if self.norm_ctx is None else self.norm_ctx(context)
        x = x + self.attn(xn, ctx, rope)
        return x + self.mlp(self.norm_mlp(x))


class FeatureTransformer(nn.Module):
    """`depth` x (self, cross) attention over the current and desired token grids, with shared weights.

    As GMFlow does, both images go through the same layers by stacking (current, desired) and (desired, current)
    in the batch, so the two streams stay symmetric.
    """

    def __init__(self, dim: int, depth: int, heads: int, mlp_ratio: float, rope_temperature: float) -> None:
        super().__init__()
        self.rope = GridRope(dim // heads, rope_temperature)
        self.self_blocks = nn.ModuleList(AttentionBlock(dim, heads, mlp_ratio) for _ in range(depth))
        self.cross_blocks = nn.ModuleList(AttentionBlock(dim, heads, mlp_ratio, cross=True) for _ in range(depth))

    def forward(self, fc: Tensor, fd: Tensor, h: int, w: int) -> tuple[Tensor, Tensor]:
        """fc, fd: (B, h*w, C) tokens of the current and desired images; returns both updated."""
        B = fc.shape[0]
        x = torch.cat([fc, fd], dim=0)
        rope = self.rope(h, w, x)
        for sa, ca in zip(self.self_blocks, self.cross_blocks, strict=True):
            x = sa(x, rope)
            other = torch.cat([x[B:], x[:B]], dim=0)
            x = ca(x, rope, other)
        return x[:B], x[B:]
