"""The velocity head, the paper's "controller" network (Sec. III.F): a transformer over current-image tokens
conditioned on the matching representation (and fine features), predicting the log-norm and direction of the
normalised velocity (Eq. 22). A network module, not a closed-loop controller (those are `policy.interface`'s).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from policy.attention import AttentionBlock, GridRope


class AttentionPool(nn.Module):
    """A learned query attends to all tokens: a summary that keeps where things are, unlike a mean."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.query = nn.Parameter(torch.zeros(1, 1, dim))
        self.kv = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)
        nn.init.trunc_normal_(self.query, std=0.02)

    def forward(self, x: Tensor) -> Tensor:
        """(B, N, C) -> (B, C)."""
        B, N, C = x.shape
        hd = C // self.heads
        q = self.query.expand(B, -1, -1).view(B, 1, self.heads, hd).transpose(1, 2)
        k, v = self.kv(x).view(B, N, 2, self.heads, hd).permute(2, 0, 3, 1, 4)
        return self.proj(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(B, C))


class VelocityHead(nn.Module):
    """Tokens = [current features, normalised representation, fine features] -> RoPE transformer -> (l, d)."""

    def __init__(
        self,
        token_dim: int,
        rep_dim: int,
        fine_dim: int,
        dim: int,
        depth: int,
        heads: int,
        mlp_ratio: float = 2.0,
        rope_temperature: float = 100.0,
    ) -> None:
        super().__init__()
        # P's scale is about 1/N and changes with resolution; a public reimplementation's network ignored P until it
        # was normalised (shared/notes/network.md).
        self.rep_norm = nn.LayerNorm(rep_dim)
        self.embed = nn.Linear(token_dim + rep_dim + fine_dim, dim)
        self.rope = GridRope(dim // heads, rope_temperature)
        self.blocks = nn.ModuleList(AttentionBlock(dim, heads, mlp_ratio) for _ in range(depth))
        self.pool = AttentionPool(dim, heads)
        self.head = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, 7))
        self.fine_dim = fine_dim

    def forward(self, tokens: Tensor, rep: Tensor, fine: Tensor | None, h: int, w: int) -> tuple[Tensor, Tensor]:
        """tokens (B, N, Ct), rep (B, R, h, w), fine (B, F, h, w) or None -> log-norm (B,), direction (B, 6)."""
        parts = [tokens, self.rep_norm(rep.flatten(2).transpose(1, 2).to(tokens.dtype))]
        if self.fine_dim:
            if fine is None:
                raise ValueError("this velocity head was built with fine features; pass them")
            parts.append(fine.flatten(2).transpose(1, 2).to(tokens.dtype))
        x = self.embed(torch.cat(parts, dim=-1))
        rope = self.rope(h, w, x)
        for block in self.blocks:
            x = block(x, rope)
        out = self.head(self.pool(x)).float()
        return out[:, 0], out[:, 1:]
