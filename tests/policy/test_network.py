"""The CNSv2 network: every variant runs at every size, gradients reach every parameter, checkpoints round-trip."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import torch

from configs.schema import PolicyConfig
from policy import build_policy, load_checkpoint, save_checkpoint
from policy.checkpoint import read_meta
from policy.losses import velocity_losses
from policy.matching import aux_match_loss
from tests.fixtures.factories import small_config

pytestmark = pytest.mark.unit

SIZES = [(224, 224), (320, 240), (512, 512)]  # square, non-square, the paper's


def _policy_cfg(*overrides: str) -> PolicyConfig:
    """The smoke policy at its own input size: these tests choose the image sizes."""
    return small_config(*overrides, size=None).policy


def _images(b: int, w: int, h: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 3, h, w, generator=g), torch.rand(b, 3, h, w, generator=g)


@pytest.mark.parametrize("rep", ["p", "s", "m"])
@pytest.mark.parametrize("fine", [True, False])
def test_every_variant_runs_at_every_size(rep: str, fine: bool) -> None:
    torch.manual_seed(0)
    policy = build_policy(
        _policy_cfg(f"policy.controller.representation={rep}", f"policy.controller.fine_features={fine}")
    )
    policy.eval()
    for w, h in SIZES:
        cur, des = _images(2, w, h)
        with torch.no_grad():
            out = policy(cur, des)
        gh, gw = h // 16, w // 16
        assert out.grid == (gh, gw)
        assert out.vel.shape == (2, 6) and torch.isfinite(out.vel).all()
        assert out.scores.shape == (2, gh * gw, gh * gw) and out.scores.dtype == torch.float32
        torch.testing.assert_close(out.scores.sum(-1), torch.ones(2, gh * gw))
        assert out.flow.shape == (2, 2, gh, gw) and out.confidence.shape == (2, gh * gw)
        assert out.gravity_cur.shape == (2, 2) and out.gravity_des.shape == (2, 2)


@pytest.mark.parametrize(
    "overrides",
    [
        ["policy.controller.representation=p", "policy.loss.aux_match=1.0"],
        ["policy.controller.representation=s", "policy.controller.fine_features=false"],
        ["policy.controller.representation=m"],
        ["policy.transformer.cache_desired=true"],
    ],
)
def test_gradients_reach_every_trainable_parameter(overrides: list[str]) -> None:
    torch.manual_seed(0)
    cfg = _policy_cfg(*overrides)
    policy = build_policy(cfg).train()
    cur, des = _images(2, 128, 96)
    out = policy(cur, des)
    target = torch.randn(2, 6) * 0.3
    norm, direction = velocity_losses(out.log_norm, out.direction, target)
    loss = norm + direction
    if cfg.loss.aux_match > 0:
        h, w = out.grid
        match = torch.rand(2, h, w, 2) * torch.tensor([w - 1.0, h - 1.0])
        valid = torch.ones(2, h, w, dtype=torch.bool)
        loss = loss + cfg.loss.aux_match * aux_match_loss(out.logits, match, valid, h, w)
    loss.backward()
    missing = [
        n
        for n, p in policy.named_parameters()
        if p.requires_grad and (p.grad is None or not torch.isfinite(p.grad).all())
    ]
    assert not missing, f"no gradient for {missing[:10]}"
    zero = [n for n, p in policy.named_parameters() if p.requires_grad and float(p.grad.abs().sum()) == 0.0]
    assert len(zero) <= 0.02 * sum(1 for _ in policy.parameters()), f"zero gradients: {zero}"


def test_a_frozen_backbone_gets_no_gradient(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from safetensors.torch import save_file

    weights = tmp_path / "cnn.safetensors"  # freezing needs weights: a frozen random encoder is a config error
    save_file(build_policy(_policy_cfg()).backbone.net.state_dict(), str(weights))
    policy = build_policy(_policy_cfg("policy.backbone.freeze=true", f"policy.backbone.weights={weights}")).train()
    assert all(not p.requires_grad for p in policy.backbone.parameters())
    assert any(p.requires_grad for p in policy.controller.parameters())


@pytest.mark.parametrize("cache_desired", [False, True])
def test_desired_cache_equals_passing_the_image(cache_desired: bool) -> None:
    torch.manual_seed(0)
    policy = build_policy(_policy_cfg(f"policy.transformer.cache_desired={cache_desired}")).eval()
    cur, des = _images(3, 128, 128)
    with torch.no_grad():
        a = policy(cur, des)
        b = policy(cur, policy.encode_desired(des))
        c = policy(cur[1:2], policy.encode_desired(des[1:2]))
        single = policy(cur, policy.encode_desired(des[:1]))  # one goal for a batch of views
        d = policy(cur[:1], des[:1])
    torch.testing.assert_close(a.vel, b.vel)
    torch.testing.assert_close(a.vel[1:2], c.vel, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(single.vel[:1], d.vel, atol=1e-5, rtol=1e-5)


def test_a_cached_desired_stream_ignores_the_current_image_and_the_symmetric_one_does_not() -> None:
    torch.manual_seed(0)
    symmetric = build_policy(_policy_cfg()).eval()
    cached = build_policy(_policy_cfg("policy.transformer.cache_desired=true")).eval()
    cached.load_state_dict(symmetric.state_dict())  # the switch changes no parameter
    cur, des = _images(2, 64, 64)
    tokens = cached._tokens(des)
    with torch.no_grad():
        layers = cached.transformer.encode_desired(tokens, 4, 4)
        assert layers.shape == (2, 3, 16, 128)  # the smoke transformer's 2 layers' contexts, then its output
        outs = {name: [net.transformer(net._tokens(c), tokens, 4, 4) for c in (cur, cur.flip(0))]
                for name, net in (("cached", cached), ("symmetric", symmetric))}  # fmt: skip
        step_fc, step_fd = cached.transformer.step(cached._tokens(cur), layers, 4, 4)
    (fc, fd), (_, fd_other) = outs["cached"]
    for a, b in ((fd, fd_other), (fd, layers[:, -1]), (fc, step_fc), (fd, step_fd)):
        torch.testing.assert_close(a, b)
    (_, fd), (_, fd_other) = outs["symmetric"]
    assert (fd - fd_other).abs().max() > 1e-3  # here the desired stream attends to the current image
    with pytest.raises(ValueError, match="set cache_desired"):
        symmetric.transformer.encode_desired(tokens, 4, 4)
    with pytest.raises(ValueError, match=r"cached desired layers \(B, 3, N, C\)"):
        cached.transformer.step(cached._tokens(cur), tokens, 4, 4)


def test_bad_inputs_are_named() -> None:
    policy = build_policy(_policy_cfg()).eval()
    with pytest.raises(ValueError, match="multiple of the backbone's patch 16"):
        policy(torch.rand(1, 3, 100, 128), torch.rand(1, 3, 100, 128))
    with pytest.raises(ValueError, match="differ in size"):
        policy(torch.rand(1, 3, 128, 128), torch.rand(1, 3, 64, 128))
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        policy(torch.rand(3, 128, 128), torch.rand(3, 128, 128))
    with pytest.raises(ValueError, match="input_size"):
        build_policy(_policy_cfg("policy.input_size=[250,256]"))


def test_checkpoint_round_trip_gives_identical_outputs(tmp_path: Path) -> None:
    torch.manual_seed(0)
    policy = build_policy(_policy_cfg()).eval()
    cur, des = _images(2, 128, 128)
    path = save_checkpoint(policy, tmp_path / "ckpt", version=7, step=123)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]  # nothing temporary left behind
    loaded, meta = load_checkpoint(path)
    assert meta["policy_version"] == 7 and meta["extra"] == {"step": 123}
    with torch.no_grad():
        torch.testing.assert_close(loaded.eval()(cur, des).vel, policy(cur, des).vel, atol=0, rtol=0)
    # Saving again over the same path replaces it atomically.
    save_checkpoint(policy, path, version=8)
    assert read_meta(path)["policy_version"] == 8
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]  # the replaced one is gone too


def test_a_checkpoint_gets_the_ordinary_modes_not_private_ones(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        path = save_checkpoint(build_policy(_policy_cfg()), tmp_path / "ckpt", version=1)
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o755  # mkdtemp would give 0o700: unreadable to a shared group
    for f in path.iterdir():
        assert stat.S_IMODE(f.stat().st_mode) == 0o644, f.name


def test_loading_into_a_mismatched_config_fails_clearly(tmp_path: Path) -> None:
    path = save_checkpoint(build_policy(_policy_cfg()), tmp_path / "ckpt", version=1)
    with pytest.raises(ValueError, match=r"policy\.controller\.anchors: checkpoint 8 != config 4"):
        load_checkpoint(path, cfg=_policy_cfg("policy.controller.anchors=4"))
    # Runtime options may differ.
    policy, _ = load_checkpoint(path, cfg=_policy_cfg("policy.servo.aware=false", "policy.precision=fp32"))
    assert policy.cfg.servo.aware is False
    with pytest.raises(FileNotFoundError, match="not a policy checkpoint"):
        load_checkpoint(tmp_path / "nothing")


def test_compile_is_optional_and_keeps_parameter_names() -> None:
    eager = build_policy(_policy_cfg())
    compiled = build_policy(_policy_cfg("policy.compile=true"))
    assert [n for n, _ in compiled.named_parameters()] == [n for n, _ in eager.named_parameters()]
    assert compiled.transformer._compiled_call_impl is not None and eager.transformer._compiled_call_impl is None
    cached = build_policy(_policy_cfg("policy.transformer.cache_desired=true", "policy.compile=true"))
    # The network calls the cached stream's two methods, not the transformer's forward: they are compiled too.
    assert hasattr(cached.transformer.step, "_torchdynamo_orig_callable")
    assert hasattr(cached.transformer.encode_desired, "_torchdynamo_orig_callable")
