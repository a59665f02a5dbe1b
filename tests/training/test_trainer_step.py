"""The trainer's step and its bookkeeping against independent computations: the optimiser step's losses, gradient
norm and last prediction recomputed on a copy of the policy; the batch's data statistics by hand; when a periodic
action is due; the input-size check."""

from __future__ import annotations

import contextlib
import copy
import math

import pytest
import torch

from policy.losses import policy_loss
from tests.training.test_trainer import TRAIN, _asymmetric_batch
from training import trainer
from training.schedule import lr_factor
from training.trainer import TrainState

pytestmark = pytest.mark.unit


def test_the_step_averages_the_micro_batches_and_reports_the_unclipped_gradient_norm(small_cfg) -> None:
    cfg = small_cfg(*TRAIN, "train.accumulate=2", "train.grad_clip=1e-6")
    state = TrainState(cfg, torch.device("cpu"))
    twin = copy.deepcopy(state.policy)
    batches = [_asymmetric_batch(0.2, 0.7, seed=0), _asymmetric_batch(0.3, 0.8, seed=1, n=3)]
    # The same two micro-batches through a copy: mean loss, its gradient, the last prediction.
    outs = [twin(b["cur"], b["des"]) for b in batches]
    per = [
        policy_loss(o, b["vel"], cfg.policy.loss, b["coarse_match"], b["coarse_valid"])
        for o, b in zip(outs, batches, strict=True)
    ]
    ((per[0]["total"] + per[1]["total"]) / 2).backward()
    norm = math.sqrt(sum(float((p.grad**2).sum()) for p in twin.parameters() if p.grad is not None))
    before = [p.detach().clone() for p in state.params]

    result = trainer._optimiser_step(state, state.policy, iter(batches), world=1)

    for k in per[0]:
        assert result.losses[k] == pytest.approx(
            (float(per[0][k].detach()) + float(per[1][k].detach())) / 2, rel=1e-5
        ), k
    assert result.grad_norm == pytest.approx(norm, rel=1e-4)  # before clipping: the clip is 1e-6
    torch.testing.assert_close(result.vel, outs[1].vel.detach())
    assert result.samples == 5 and state.step == 1 and state.sched.last_epoch == 1
    moved = [float((p.detach() - b).abs().max()) for p, b in zip(state.params, before, strict=True)]
    assert max(moved) > 0  # one optimiser step was taken
    assert all(p.grad is None for p in state.params)  # and the gradients cleared for the next


def test_batch_metrics_by_hand() -> None:
    batch = {
        "producer": torch.tensor([0, 1, 1, 1]),  # 1: DAgger
        "policy_version": torch.tensor([-1, -1, 10, 20]),  # -1: the expert's round
        "beta": torch.tensor([0.0, 0.5, 0.3, 0.1]),
        "vel": torch.tensor([[1.0, 0, 0, 0, 0, 0], [0, 1.0, 0, 0, 0, 0], [0, 0, 1.0, 0, 0, 0], [0, 0, 0, 1.0, 0, 0]]),
    }
    batch["vel"] = batch["vel"] * 0.1  # labels are small normalised velocities
    vel = batch["vel"].clone()
    vel[2:] *= -1  # two predictions right, two opposite: mean cosine 0
    vel[0] *= 3.0  # the length does not matter to a cosine
    m = trainer._batch_metrics(batch, vel, step=25)
    assert m["data/dagger_share"] == pytest.approx(0.75)
    assert m["data/beta"] == pytest.approx(0.3)  # over DAgger samples only
    assert m["data/policy_version"] == pytest.approx(15.0)  # over samples of a policy, not the expert
    assert m["data/policy_lag"] == pytest.approx(10.0)
    assert m["train/cos"] == pytest.approx(0.0, abs=1e-6)
    hemi = {**batch, "producer": torch.zeros(4, dtype=torch.long)}
    m = trainer._batch_metrics(hemi, batch["vel"], step=25)
    assert m["data/dagger_share"] == 0.0 and math.isnan(m["data/beta"]) and math.isnan(m["data/policy_lag"])
    assert m["data/policy_version"] == -1.0 and m["train/cos"] == pytest.approx(1.0)


def test_a_periodic_action_is_due_every_n_steps_and_at_the_last() -> None:
    due = [s for s in range(1, 13) if trainer._due(s, 5, 12)]
    assert due == [5, 10, 12]


def test_the_input_size_must_be_the_camera_s(small_cfg) -> None:
    cfg = small_cfg()
    trainer.check_input_size(cfg)  # the smoke config agrees with itself
    w, h = cfg.sim.camera.width, cfg.sim.camera.height
    with pytest.raises(ValueError, match=r"policy\.input_size"):
        trainer.check_input_size(small_cfg(f"policy.input_size=[{w},{h + 32}]"))
    with pytest.raises(ValueError, match=r"policy\.input_size"):
        trainer.check_input_size(small_cfg(f"policy.input_size=[{w + 32},{h}]"))


class _DDPLike(torch.nn.Module):
    """The policy behind a DDP-like wrapper that records which micro-batches ran without gradient sync."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner, self.unsynced, self.calls = inner, [], 0

    def forward(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        self.calls += 1
        return self.inner(*args, **kwargs)

    @contextlib.contextmanager
    def no_sync(self):  # type: ignore[no-untyped-def]
        self.unsynced.append(self.calls)
        yield


@pytest.mark.parametrize(("world", "unsynced"), [(1, []), (2, [0, 1])])
def test_with_several_workers_only_the_last_micro_batch_syncs_gradients(small_cfg, world: int, unsynced: list) -> None:
    state = TrainState(small_cfg(*TRAIN, "train.accumulate=3"), torch.device("cpu"))
    model = _DDPLike(state.policy)
    batches = [_asymmetric_batch(0.2, 0.7, seed=k) for k in range(3)]
    result = trainer._optimiser_step(state, model, iter(batches), world=world)
    assert model.unsynced == unsynced  # micro-batches 0 and 1 of 3 skip the all-reduce; the last one syncs
    assert result.samples == 3 * 2 * world  # samples over all workers


def test_batches_are_moved_to_the_training_device() -> None:
    moved = trainer._to_device({"cur": torch.zeros(2, 3), "vel": torch.ones(2, 6)}, torch.device("meta"))
    assert {k: v.device.type for k, v in moved.items()} == {"cur": "meta", "vel": "meta"}


def test_the_step_is_adamw_at_the_scheduled_rate_with_the_configured_weight_decay(small_cfg) -> None:
    cfg = small_cfg(*TRAIN, "train.lr=3e-3", "train.weight_decay=0.5", "train.grad_clip=1e6")
    t = cfg.train
    state = TrainState(cfg, torch.device("cpu"))
    twin = copy.deepcopy(state.policy)
    batch = _asymmetric_batch(0.2, 0.7, seed=0)
    out = twin(batch["cur"], batch["des"])
    policy_loss(out, batch["vel"], cfg.policy.loss, batch["coarse_match"], batch["coarse_valid"])["total"].backward()
    before = {n: p.detach().clone() for n, p in state.policy.named_parameters() if p.requires_grad}
    grads = {n: p.grad for n, p in twin.named_parameters() if p.requires_grad}

    trainer._optimiser_step(state, state.policy, iter([batch]), world=1)

    # AdamW's first step: decoupled decay p (1 - lr wd), then lr g / (|g| + eps), since m^ = g and v^ = g^2.
    lr = t.lr * lr_factor(0, t.warmup_steps, t.steps, t.min_lr_ratio)
    moved = 0
    for n, p in state.policy.named_parameters():
        if n not in before or grads[n] is None:
            continue
        g = grads[n]
        expected = before[n] * (1 - lr * t.weight_decay) - lr * g / (g.abs() + 1e-8)
        torch.testing.assert_close(p.detach(), expected, rtol=1e-4, atol=1e-7, msg=n)
        moved += int((g != 0).sum())
    assert moved > 0
    trainer._optimiser_step(state, state.policy, iter([batch]), world=1)
    assert state.step == 2 and state.sched.last_epoch == 2
