"""The velocity parameterisation (paper Eq. 22) and the training losses (Eq. 23)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

from configs.schema import LossConfig
from policy.matching import aux_match_loss

if TYPE_CHECKING:
    from policy.network import PolicyOutput

MIN_NORM = 1e-6  # labels at the goal have |v| = 0, whose log-norm is -inf; clamp it


def sigma(x: Tensor) -> Tensor:
    """Eq. 22: exp(x - 1) for x <= 1, x above: a norm from the predicted log-norm, smooth at 1."""
    return torch.where(x <= 1.0, torch.exp(torch.clamp(x, max=1.0) - 1.0), x)


def sigma_inv(n: Tensor) -> Tensor:
    """The inverse of `sigma`: 1 + ln(n) for n <= 1, n above."""
    n = torch.clamp(n, min=MIN_NORM)
    return torch.where(n <= 1.0, 1.0 + torch.log(torch.clamp(n, max=1.0)), n)


def velocity_from_head(log_norm: Tensor, direction: Tensor) -> Tensor:
    """Eq. 22: v = sigma(l) * d / |d|, from (B,) log-norms and (B, 6) unnormalised directions."""
    unit = direction / torch.clamp(direction.norm(dim=-1, keepdim=True), min=1e-12)
    return sigma(log_norm).unsqueeze(-1) * unit


def velocity_losses(log_norm: Tensor, direction: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    """Eq. 23: mean |sigma^-1(|v*|) - l| and mean 1 - cos(v*, d); direction is ignored where |v*| ~ 0."""
    tn = target.norm(dim=-1)
    norm_loss = (sigma_inv(tn) - log_norm.float()).abs().mean()
    cos = torch.nn.functional.cosine_similarity(direction.float(), target.float(), dim=-1, eps=1e-12)
    moving = (tn > MIN_NORM).float()
    dir_loss = ((1.0 - cos) * moving).sum() / torch.clamp(moving.sum(), min=1.0)
    return norm_loss, dir_loss


def label_log_norm(target: Tensor) -> Tensor:
    """The log-norm a perfect head outputs for labels `target` (B, 6)."""
    return sigma_inv(target.norm(dim=-1))


def policy_loss(
    out: PolicyOutput,
    target: Tensor,
    weights: LossConfig,
    match: Tensor | None = None,
    valid: Tensor | None = None,
) -> dict[str, Tensor]:
    """The training loss of one batch: weighted Eq. 23 terms plus the optional auxiliary coarse-matching loss.

    Returns a dict with `total`, `norm`, `direction` and `aux_match` (zero when its weight is 0).
    """
    norm, direction = velocity_losses(out.log_norm, out.direction, target)
    aux = torch.zeros((), device=norm.device)
    if weights.aux_match > 0:
        if match is None or valid is None:
            raise ValueError("policy.loss.aux_match > 0 needs ground-truth coarse matches (coarse_match, coarse_valid)")
        h, w = out.grid
        aux = aux_match_loss(out.logits, match, valid, h, w)
    total = weights.norm * norm + weights.direction * direction + weights.aux_match * aux
    return {"total": total, "norm": norm, "direction": direction, "aux_match": aux}
