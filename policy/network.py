"""The CNSv2 policy network (paper Sec. III, Fig. 2): backbone -> RoPE feature transformer -> score matrix ->
matching representation (phi_P, phi_S or phi_M) + fine features -> velocity head (the paper's neural controller)
-> normalised velocity.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from configs.schema import PolicyConfig
from policy.attention import FeatureTransformer
from policy.backbones import build_backbone
from policy.fine import FineFeatures
from policy.losses import velocity_from_head
from policy.matching import coarse_flow, dual_softmax_confidence, gravity_centres, score_logits
from policy.representation import p2g, phi_m, phi_s
from policy.velocity_head import VelocityHead

AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class DesiredCache:
    """What the desired image contributes at every step, computed once per episode."""

    # (B, N, D) projected backbone features; with policy.transformer.cache_desired, (B, depth + 1, N, D): the
    # desired stream's transformer layers (FeatureTransformer.encode_desired)
    tokens: Tensor
    fine: Tensor | None  # (B, F, H/s, W/s)
    grid: tuple[int, int]  # (h, w)
    image_size: tuple[int, int]  # (H, W)


@dataclass
class PolicyOutput:
    """Everything one forward pass predicts; spatial quantities are in patch units on the (h, w) grid."""

    vel: Tensor  # (B, 6) normalised velocity (unit world, lambda = 1)
    log_norm: Tensor  # (B,)
    direction: Tensor  # (B, 6), unnormalised
    logits: Tensor  # (B, N, N) fp32 score logits (softmax over the last dim gives S)
    scores: Tensor  # (B, N, N) fp32 S
    confidence: Tensor  # (B, N) dual-softmax confidence
    flow: Tensor  # (B, 2, h, w) coarse flow, Eq. 15
    gravity_cur: Tensor  # (B, 2) Eq. 25, current image
    gravity_des: Tensor  # (B, 2) Eq. 25, desired image
    grid: tuple[int, int]


class CNSv2Policy(nn.Module):
    """The full network; every design choice of the paper's ablations is a config switch."""

    def __init__(self, cfg: PolicyConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.backbone = build_backbone(cfg.backbone)
        self.patch = self.backbone.patch_size
        W, H = cfg.input_size
        if W % self.patch or H % self.patch:
            raise ValueError(f"policy.input_size {W}x{H} is not a multiple of the backbone's patch {self.patch}")
        t, c = cfg.transformer, cfg.controller
        self.proj = nn.Linear(self.backbone.out_dim, t.dim)
        self.transformer = FeatureTransformer(
            t.dim, t.depth, t.heads, t.mlp_ratio, t.rope_temperature, cache_desired=t.cache_desired
        )
        self.fine = FineFeatures(c.fine_dim, self.patch) if c.fine_features else None
        rep_dim = 3 if c.representation == "m" else c.anchors * c.anchors
        self.controller = VelocityHead(
            t.dim,
            rep_dim,
            c.fine_dim if c.fine_features else 0,
            c.dim,
            c.depth,
            c.heads,
            t.mlp_ratio,
            t.rope_temperature,
        )

    # -- precision ---------------------------------------------------------------------------------------------
    def autocast(self, device: torch.device) -> AbstractContextManager[object]:
        """bf16/fp16 autocast on CUDA as configured; fp32 elsewhere (bf16 is 4-7x slower on an AVX2 CPU)."""
        if device.type != "cuda" or self.cfg.precision == "fp32":
            return nullcontext()
        return torch.autocast("cuda", dtype=AUTOCAST_DTYPES[self.cfg.precision])

    # -- forward -----------------------------------------------------------------------------------------------
    def _grid(self, rgb: Tensor) -> tuple[int, int]:
        if rgb.ndim != 4 or rgb.shape[1] != 3:
            raise ValueError(f"expected images (B, 3, H, W), got {tuple(rgb.shape)}")
        H, W = rgb.shape[-2:]
        if H % self.patch or W % self.patch:
            raise ValueError(f"image size {W}x{H} is not a multiple of the backbone's patch {self.patch}")
        return H // self.patch, W // self.patch

    def _tokens(self, rgb: Tensor) -> Tensor:
        return self.proj(self.backbone(rgb).flatten(2).transpose(1, 2))

    def encode_desired(self, des: Tensor) -> DesiredCache:
        """Backbone and fine features of the desired image (B, 3, H, W) in [0, 1], reusable for a whole episode."""
        grid = self._grid(des)
        with self.autocast(des.device):
            tokens = self._tokens(des)
            if self.cfg.transformer.cache_desired:
                tokens = self.transformer.encode_desired(tokens, *grid)
            fine = self.fine.encode(des) if self.fine is not None else None
        return DesiredCache(tokens, fine, grid, tuple(des.shape[-2:]))

    def forward(self, cur: Tensor, des: Tensor | DesiredCache) -> PolicyOutput:
        """Predict the normalised velocity that drives the current view (B, 3, H, W) to the desired one."""
        cache = des if isinstance(des, DesiredCache) else self.encode_desired(des)
        h, w = self._grid(cur)
        if (h, w) != cache.grid or tuple(cur.shape[-2:]) != cache.image_size:
            raise ValueError(f"current image {tuple(cur.shape[-2:])} and desired {cache.image_size} differ in size")
        B = cur.shape[0]
        d_tokens, d_fine = cache.tokens, cache.fine
        if d_tokens.shape[0] != B:  # one desired image for a batch of current images
            d_tokens = d_tokens.expand(B, *d_tokens.shape[1:])
            d_fine = d_fine.expand(B, -1, -1, -1) if d_fine is not None else None
        with self.autocast(cur.device):
            if self.cfg.transformer.cache_desired:
                fc, fd = self.transformer.step(self._tokens(cur), d_tokens, h, w)
            else:
                fc, fd = self.transformer(self._tokens(cur), d_tokens, h, w)
            logits = score_logits(fc, fd)  # fp32 inside
            scores = torch.softmax(logits, dim=-1)
            confidence = dual_softmax_confidence(logits)
            flow = coarse_flow(scores, h, w)
            g_cur, g_des = gravity_centres(confidence, flow, h, w)
            rep = self._representation(scores, h, w)
            fine = None
            if self.fine is not None:
                assert d_fine is not None
                fine = self.fine(self.fine.encode(cur), d_fine, flow)
            log_norm, direction = self.controller(fc, rep, fine, h, w)
        return PolicyOutput(
            velocity_from_head(log_norm, direction),
            log_norm,
            direction,
            logits,
            scores,
            confidence,
            flow,
            g_cur,
            g_des,
            (h, w),
        )

    def _representation(self, scores: Tensor, h: int, w: int) -> Tensor:
        c = self.cfg.controller
        if c.representation == "p":
            return p2g(scores, h, w, c.anchors)
        if c.representation == "s":
            return phi_s(scores, h, w, c.anchors)
        return phi_m(scores, h, w)


def images_to_tensor(rgb: np.ndarray | Tensor, device: torch.device | str = "cpu") -> Tensor:
    """uint8 (H, W, 3) or (B, H, W, 3) images -> float (B, 3, H, W) in [0, 1] on `device`."""
    t = torch.as_tensor(rgb)
    if t.dtype != torch.uint8 or t.shape[-1] != 3 or t.ndim not in (3, 4):
        raise ValueError(f"expected uint8 RGB images (H, W, 3) or (B, H, W, 3), got {t.dtype} {tuple(t.shape)}")
    if t.ndim == 3:
        t = t.unsqueeze(0)
    return t.to(device).permute(0, 3, 1, 2).float().div_(255.0)
