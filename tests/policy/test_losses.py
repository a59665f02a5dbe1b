"""The velocity parameterisation (Eq. 22) and the losses (Eq. 23)."""

from __future__ import annotations

import pytest
import torch

from policy.losses import label_log_norm, sigma, sigma_inv, velocity_from_head, velocity_losses

pytestmark = pytest.mark.unit


def test_sigma_is_continuous_monotonic_and_inverted() -> None:
    x = torch.linspace(-8.0, 5.0, 2001)
    y = sigma(x)
    assert torch.all(torch.diff(y) > 0)
    assert torch.isclose(sigma(torch.tensor(1.0)), torch.tensor(1.0))
    torch.testing.assert_close(sigma_inv(y), x, atol=1e-5, rtol=1e-5)
    assert torch.isclose(sigma(torch.tensor(0.0)), torch.exp(torch.tensor(-1.0)))


def test_velocity_from_head_has_the_predicted_norm_and_direction() -> None:
    d = torch.tensor([[3.0, 0.0, 4.0, 0.0, 0.0, 0.0]])
    v = velocity_from_head(torch.tensor([2.5]), d)
    torch.testing.assert_close(v, torch.tensor([[1.5, 0.0, 2.0, 0.0, 0.0, 0.0]]))


def test_losses_vanish_for_a_perfect_prediction_and_grow_otherwise() -> None:
    target = torch.tensor([[0.1, -0.2, 0.05, 0.3, 0.0, -0.1], [1.5, 0.2, 0.0, 0.0, 0.4, 0.0]])
    norm, direction = velocity_losses(label_log_norm(target), 7.0 * target, target)
    assert float(norm) < 1e-6 and float(direction) < 1e-6
    norm2, dir2 = velocity_losses(label_log_norm(target) + 0.5, -target, target)
    assert abs(float(norm2) - 0.5) < 1e-5 and abs(float(dir2) - 2.0) < 1e-5


def test_a_zero_label_only_trains_the_norm() -> None:
    target = torch.zeros(1, 6)
    l = torch.tensor([0.0], requires_grad=True)
    d = torch.randn(1, 6, requires_grad=True)
    norm, direction = velocity_losses(l, d, target)
    (norm + direction).backward()
    assert float(direction.detach()) == 0.0 and torch.all(d.grad == 0)
    assert l.grad is not None and float(l.grad) != 0.0


def test_policy_loss_weights_the_terms_and_needs_matches_for_the_aux_term() -> None:
    from configs import load_config
    from policy import build_policy

    cfg = load_config("smoke", ["policy.loss.aux_match=0"]).policy
    policy = build_policy(cfg).eval()
    out = policy(torch.rand(2, 3, 64, 64), torch.rand(2, 3, 64, 64))
    target = torch.randn(2, 6)
    from policy.losses import policy_loss as plain

    base = plain(out, target, cfg.loss)
    assert base["aux_match"].item() == 0.0
    torch.testing.assert_close(base["total"], base["norm"] + base["direction"])
    aux_cfg = cfg.loss.model_copy(update={"aux_match": 0.5, "norm": 2.0})
    with pytest.raises(ValueError, match="coarse_match"):
        plain(out, target, aux_cfg)
    match = torch.zeros(2, 4, 4, 2)
    valid = torch.ones(2, 4, 4, dtype=torch.bool)
    with_aux = plain(out, target, aux_cfg, match, valid)
    assert with_aux["aux_match"].item() > 0.0
    torch.testing.assert_close(
        with_aux["total"], 2.0 * with_aux["norm"] + with_aux["direction"] + 0.5 * with_aux["aux_match"]
    )
