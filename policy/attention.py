"""Attention with 2-D axial rotary position embeddings (RoPE) over patch grids: self- and cross-attention blocks.

RoPE with integer grid positions makes q.k depend only on the offset between two patches, so cross-attention
between the current and desired images is translation-equivariant (shared/notes/network.md).

The RoPE tables and the MLP are written out here rather than taken from `timm.layers`: importing timm costs about
11 s, and the CNN-backbone policy needs nothing else from it. They reproduce timm 1.0's `RotaryEmbeddingCat(dim,
in_pixels=False)` (inverse-frequency bands, integer 'ij' grid, interleaved sin/cos), `apply_rot_embed_cat` and
`Mlp` (same parameter names, so checkpoints are unchanged); tests/policy/test_attention.py compares them with timm.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def rope_table(h: int, w: int, head_dim: int, temperature: float) -> Tensor:
    """The (h*w, 2*head_dim) float32 table [sin | cos] of axial RoPE on an h x w grid of integer positions.

    Each of the two axes (row, column) gets head_dim // 4 inverse-frequency bands temperature ** (-k / (head_dim//4)),
    each band is repeated for the two members of its rotated pair.
    """
    bands = 1.0 / temperature ** (torch.arange(head_dim // 4, dtype=torch.float32) / (head_dim // 4))
    axes = [torch.arange(n, dtype=torch.float32) for n in (h, w)]
    grid = torch.stack(torch.meshgrid(axes, indexing="ij"), dim=-1)  # (h, w, 2)
    angles = (grid.unsqueeze(-1) * bands).flatten(-2).flatten(0, -2)  # (h*w, head_dim // 2)
    return torch.cat([angles.sin().repeat_interleave(2, -1), angles.cos().repeat_interleave(2, -1)], dim=-1)


def apply_rope(x: Tensor, table: Tensor) -> Tensor:
    """Rotate consecutive channel pairs (x0, x1), (x2, x3), ... of x (..., N, head_dim) by the table's angles."""
    sin, cos = table.chunk(2, -1)
    # Pairs by reshape rather than strided slices x[..., ::2]: the same numbers, and onnxruntime runs the exported
    # Split in half the time of the strided Slices (same speed on torch).
    x0, x1 = x.unflatten(-1, (-1, 2)).unbind(-1)
    rotated = torch.stack([-x1, x0], -1).flatten(-2)
    return (x * cos + rotated * sin).to(x.dtype)


class Mlp(nn.Module):
    """Linear -> GELU -> Linear (timm's `Mlp` without dropout or norm, with its parameter names fc1, fc2)."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        """x: (..., dim) -> (..., dim)."""
        return self.fc2(self.act(self.fc1(x)))


class GridRope(nn.Module):
    """Axial RoPE tables for an h x w grid of integer positions, cached per grid shape."""

    def __init__(self, head_dim: int, temperature: float = 100.0) -> None:
        super().__init__()
        if head_dim % 4:
            raise ValueError(f"RoPE needs a head dimension divisible by 4 (two axes, sin and cos), got {head_dim}")
        self.head_dim, self.temperature = head_dim, float(temperature)
        self._cache: dict[tuple[int, int, str, torch.dtype], Tensor] = {}

    def forward(self, h: int, w: int, like: Tensor) -> Tensor:
        """Return the (h*w, 2*head_dim) sin/cos table on `like`'s device and dtype."""
        key = (h, w, str(like.device), like.dtype)
        if key not in self._cache:
            table = rope_table(h, w, self.head_dim, self.temperature)
            self._cache[key] = table.to(device=like.device, dtype=like.dtype)
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
        q, k = apply_rope(q, rope), apply_rope(k, rope)
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
    in the batch, so the two streams stay symmetric. With `cache_desired`, the desired stream attends only to itself
    (its cross blocks take its own tokens as the context): it no longer depends on the current image, so
    `encode_desired` runs it once per goal and `step` runs the current stream alone, attending to the cached layers.
    """

    def __init__(
        self, dim: int, depth: int, heads: int, mlp_ratio: float, rope_temperature: float, cache_desired: bool = False
    ) -> None:
        super().__init__()
        self.cache_desired = cache_desired
        self.rope = GridRope(dim // heads, rope_temperature)
        self.self_blocks = nn.ModuleList(AttentionBlock(dim, heads, mlp_ratio) for _ in range(depth))
        self.cross_blocks = nn.ModuleList(AttentionBlock(dim, heads, mlp_ratio, cross=True) for _ in range(depth))

    def forward(self, fc: Tensor, fd: Tensor, h: int, w: int) -> tuple[Tensor, Tensor]:
        """fc, fd: (B, h*w, C) tokens of the current and desired images; returns both updated."""
        if self.cache_desired:
            return self.step(fc, self.encode_desired(fd, h, w), h, w)
        B = fc.shape[0]
        x = torch.cat([fc, fd], dim=0)
        rope = self.rope(h, w, x)
        for sa, ca in zip(self.self_blocks, self.cross_blocks, strict=True):
            x = sa(x, rope)
            other = torch.cat([x[B:], x[:B]], dim=0)
            x = ca(x, rope, other)
        return x[:B], x[B:]

    def encode_desired(self, fd: Tensor, h: int, w: int) -> Tensor:
        """`cache_desired` only: desired tokens (B, h*w, C) -> (B, depth + 1, h*w, C), the context each layer's cross
        block of the current stream attends to (the desired stream after that layer's self block), then its output."""
        if not self.cache_desired:
            raise ValueError("the desired stream attends to the current image here: set cache_desired to cache it")
        rope = self.rope(h, w, fd)
        layers = []
        for sa, ca in zip(self.self_blocks, self.cross_blocks, strict=True):
            fd = sa(fd, rope)
            layers.append(fd)
            fd = ca(fd, rope, fd)
        return torch.stack([*layers, fd], dim=1)

    def step(self, fc: Tensor, desired: Tensor, h: int, w: int) -> tuple[Tensor, Tensor]:
        """`cache_desired` only: current tokens (B, h*w, C) and `encode_desired`'s (B, depth + 1, h*w, C) -> the
        updated current tokens and the desired stream's output, (B, h*w, C) each."""
        if not self.cache_desired:
            raise ValueError("the desired stream attends to the current image here: set cache_desired to cache it")
        if desired.ndim != 4 or desired.shape[1] != len(self.self_blocks) + 1:
            raise ValueError(
                f"expected the cached desired layers (B, {len(self.self_blocks) + 1}, N, C), got {tuple(desired.shape)}"
            )
        rope = self.rope(h, w, fc)
        for i, (sa, ca) in enumerate(zip(self.self_blocks, self.cross_blocks, strict=True)):
            fc = ca(sa(fc, rope), rope, desired[:, i])
        return fc, desired[:, -1]
