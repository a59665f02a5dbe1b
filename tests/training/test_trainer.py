"""The trainer: checkpoint state round trip, weight push, a Ray Train run with W&B offline, resume, the pipeline."""

from __future__ import annotations

import inspect
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from configs import load_config
from policy.checkpoint import latest_checkpoint, load_checkpoint
from tests.fixtures.factories import small_overrides
from training.trainer import TrainState

# A few steps on little data (on top of small_cfg's 64 px), every periodic action often enough to happen at least once.
TRAIN = [
    "datagen.hemisphere.samples=40", "datagen.hemisphere.shard_samples=10", "datagen.dagger.samples=20",
    "datagen.dagger.shard_samples=10", "datagen.dagger.episode_steps=10", "train.batch_size=4", "train.log_every=1",
    "train.image_every=3", "train.val_every=3", "train.val_batches=1", "train.checkpoint_every=2", "train.push_every=2",
    "train.warmup_steps=2", "train.wait_for_data=120", "data.workers=0", "data.shuffle_buffer=16", "data.block=4",
]  # fmt: skip


@pytest.mark.unit
def test_train_state_round_trips_through_a_checkpoint(small_cfg) -> None:
    cfg = small_cfg(*TRAIN)
    a = TrainState(cfg, torch.device("cpu"))
    for _ in range(3):
        out = a.policy(torch.rand(2, 3, 64, 64), torch.rand(2, 3, 64, 64))
        out.vel.square().sum().backward()
        a.opt.step()
        a.sched.step()
        a.opt.zero_grad()
        a.step += 1
    path = a.save()
    assert path.name == "step_000003"
    b = TrainState(cfg, torch.device("cpu"))
    assert b.resume() == path and b.step == 3
    assert b.sched.last_epoch == a.sched.last_epoch and b.sched.get_last_lr() == a.sched.get_last_lr()
    for (na, pa), (nb, pb) in zip(a.policy.state_dict().items(), b.policy.state_dict().items(), strict=True):
        assert na == nb and torch.equal(pa, pb)
    sa, sb = a.opt.state_dict()["state"], b.opt.state_dict()["state"]
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k]["exp_avg"], sb[k]["exp_avg"]) for k in sa)
    _, meta = load_checkpoint(path)  # an ordinary policy checkpoint as well
    assert meta["policy_version"] == 3
    # The run seed, as shard sidecars record it; the data record is filled by train_loop (test_cli_checks.py).
    assert meta["extra"] == {"step": 3, "run_seed": cfg.run.seed, "data": {}}


@pytest.mark.unit
def test_old_checkpoints_are_pruned(small_cfg) -> None:
    cfg = small_cfg(*TRAIN, "train.keep_checkpoints=2")
    s = TrainState(cfg, torch.device("cpu"))
    stray = Path(cfg.train.checkpoints) / "step_999999"  # a file of that name is not a checkpoint: kept, not counted
    stray.parent.mkdir(parents=True)
    stray.write_text("notes")
    (Path(cfg.train.checkpoints) / ".step_000001.0123456789abcdef").mkdir()  # another worker's save in progress
    for step in (2, 4, 6):
        s.step = step
        s.save()
    kept = sorted(p.name for p in Path(cfg.train.checkpoints).iterdir())
    assert kept == [".step_000001.0123456789abcdef", "step_000004", "step_000006", stray.name]


def _steps(state: TrainState, n: int) -> None:
    """n optimiser steps on a fixed input, as training does them."""
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    for _ in range(n):
        state.policy(x, x).vel.square().sum().backward()
        state.opt.step()
        state.sched.step()
        state.opt.zero_grad()
        state.step += 1


@pytest.mark.unit
@pytest.mark.parametrize(
    "damage",
    ["truncated weights", "altered weights", "altered trainer state", "no trainer state", "garbled metadata"],
)
def test_a_damaged_newest_checkpoint_is_never_loaded(damage: str, small_cfg) -> None:
    cfg = small_cfg(*TRAIN)
    a = TrainState(cfg, torch.device("cpu"))
    _steps(a, 2)
    good = a.save()
    _steps(a, 2)
    newest = a.save()
    if damage == "truncated weights":
        f = newest / "model.safetensors"
        f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    elif damage == "altered weights":
        f = newest / "model.safetensors"
        data = bytearray(f.read_bytes())
        data[-100] ^= 0xFF  # inside a tensor: safetensors alone would load it
        f.write_bytes(bytes(data))
    elif damage == "altered trainer state":
        f = newest / "trainer.pt"
        data = bytearray(f.read_bytes())
        data[len(data) // 2] ^= 0xFF
        f.write_bytes(bytes(data))
    elif damage == "no trainer state":
        (newest / "trainer.pt").unlink()
    else:
        (newest / "policy.json").write_text('{"format": "cnsv2-po')
    b = TrainState(cfg, torch.device("cpu"))
    with pytest.warns(RuntimeWarning, match=r"damaged checkpoint: .*step_000004"):
        assert b.resume() == good
    assert b.step == 2 and b.sched.last_epoch == 2


@pytest.mark.unit
def test_a_checkpoint_of_another_network_is_a_one_line_error_naming_folder_and_keys(small_cfg) -> None:
    from policy.checkpoint import resume_point
    from training.trainer import run_training

    cfg = small_cfg(*TRAIN)
    a = TrainState(cfg, torch.device("cpu"))
    a.save()
    other = small_cfg(*TRAIN, "policy.transformer.depth=3", "policy.controller.dim=48")
    with pytest.raises(ValueError, match="checkpoint does not fit") as err:
        run_training(other)  # refused in the driver, before Ray starts
    message = str(err.value)
    assert "\n" not in message and str(Path(cfg.train.checkpoints) / "step_000000") in message
    assert "policy.transformer.depth: checkpoint 2 != config 3" in message and "policy.controller.dim" in message
    with pytest.raises(ValueError, match="no usable checkpoint"):
        (Path(cfg.train.checkpoints) / "step_000000" / "trainer.pt").unlink()
        with pytest.warns(RuntimeWarning):
            resume_point(cfg.train.checkpoints, cfg.policy)


@pytest.mark.unit
def test_a_new_run_starts_from_init_from_weights_at_another_input_size(small_cfg, tmp_path: Path) -> None:
    a = TrainState(small_cfg(*TRAIN), torch.device("cpu"))
    _steps(a, 2)
    source = a.save()
    at_48 = ["policy.input_size=[48,48]", "sim.camera.width=48", "sim.camera.height=48"]
    cfg = small_cfg(*TRAIN, *at_48, f"train.init_from={source}", f"train.checkpoints={tmp_path / 'tuned'}")
    b = TrainState(cfg, torch.device("cpu"))
    assert b.resume() is None and b.warm_start() == source
    assert b.step == 0 and b.opt.state_dict()["state"] == {} and b.sched.last_epoch == 0
    for (na, pa), (nb, pb) in zip(a.policy.state_dict().items(), b.policy.state_dict().items(), strict=True):
        assert na == nb and torch.equal(pa, pb)
    x = torch.rand(1, 3, 48, 48)
    assert torch.isfinite(b.policy(x, x).vel).all()
    _, meta = load_checkpoint(b.save())
    assert meta["policy"]["input_size"] == [48, 48] and meta["extra"]["init_from"] == str(source)
    assert TrainState(small_cfg(*TRAIN), torch.device("cpu")).warm_start() is None  # not set: nothing loaded


@pytest.mark.unit
def test_a_shallower_network_with_a_cached_desired_stream_starts_from_the_first_blocks(small_cfg, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from policy.checkpoint import load_warm_start

    a = TrainState(small_cfg(*TRAIN), torch.device("cpu"))
    source = a.save()
    shallow = ["policy.transformer.depth=1", "policy.controller.depth=1", "policy.transformer.cache_desired=true"]
    cfg = small_cfg(*TRAIN, *shallow, f"train.init_from={source}", f"train.checkpoints={tmp_path / 'rt'}")
    b = TrainState(cfg, torch.device("cpu"))
    assert b.warm_start() == source
    theirs = a.policy.state_dict()
    for name, tensor in b.policy.state_dict().items():
        assert torch.equal(tensor, theirs[name]), name
    dropped = load_warm_start(b.policy, source)
    assert {k.split(".")[:3][-1] for k in dropped} == {"1"} and len(dropped) == len(theirs) - len(b.policy.state_dict())
    assert any(k.startswith("controller.blocks.1.") for k in dropped)
    assert any(k.startswith("transformer.cross_blocks.1.") for k in dropped)
    with pytest.raises(ValueError, match=r"missing \[.controller\.blocks\.1\."):  # a deeper network is not taken
        load_warm_start(a.policy, b.save())


@pytest.mark.unit
def test_init_from_reaches_ray_workers_as_an_absolute_path(small_cfg, tmp_path: Path, monkeypatch) -> None:
    from configs import with_absolute_paths

    monkeypatch.chdir(tmp_path)  # Ray Train runs its workers in another directory
    relative = with_absolute_paths(small_cfg("train.init_from=runs/x/checkpoints/step_000010"))
    assert relative.train.init_from == str(tmp_path / "runs/x/checkpoints/step_000010")
    shipped = with_absolute_paths(small_cfg("train.init_from=pretrained:cnsv2-cpu"))
    assert shipped.train.init_from == "pretrained:cnsv2-cpu"
    assert with_absolute_paths(small_cfg()).train.init_from is None


@pytest.mark.unit
def test_init_from_another_network_or_nothing_is_a_clear_error(small_cfg, tmp_path: Path) -> None:
    from training.trainer import run_training

    a = TrainState(small_cfg(*TRAIN), torch.device("cpu"))
    source = a.save()
    own = f"train.checkpoints={tmp_path / 'other'}"
    deeper = small_cfg(*TRAIN, own, "policy.transformer.depth=3", f"train.init_from={source}")
    with pytest.raises(ValueError, match="checkpoint does not fit") as err:
        TrainState(deeper, torch.device("cpu")).warm_start()
    assert "policy.transformer.depth: checkpoint 2 != config 3" in str(err.value) and "input_size" not in str(err.value)
    with pytest.raises(ValueError, match=r"policy\.transformer\.depth"):
        run_training(deeper)  # refused in the driver, before Ray starts
    for missing in (str(tmp_path / "nowhere"), "pretrained:nothing-shipped-so"):
        with pytest.raises(FileNotFoundError, match=r"nowhere|nothing-shipped-so"):
            run_training(small_cfg(*TRAIN, own, f"train.init_from={missing}"))


_KILL_LOOP = """
import sys, torch
from configs import load_config
from training.trainer import TrainState
cfg = load_config("smoke", sys.argv[1:])
s = TrainState(cfg, torch.device("cpu"))
s.resume()
x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
print("resumed", s.step, flush=True)
while True:
    s.policy(x, x).vel.square().sum().backward()
    s.opt.step(); s.sched.step(); s.opt.zero_grad(); s.step += 1
    s.save()
    print("saved", s.step, flush=True)
"""


@pytest.mark.integration
@pytest.mark.slow
def test_a_trainer_killed_at_any_moment_resumes_at_its_last_whole_step(tmp_path: Path) -> None:
    import subprocess
    import sys
    import time

    from policy.checkpoint import latest_checkpoint, resume_point
    from training.schedule import lr_factor

    overrides = small_overrides(*TRAIN, "train.keep_checkpoints=3", "train.steps=10000", root=tmp_path)
    cfg = load_config("smoke", overrides)
    rng = np.random.default_rng(0)
    root = Path(__file__).resolve().parents[2]
    last, steps = 0, []
    for _ in range(4):
        proc = subprocess.Popen(
            [sys.executable, "-c", _KILL_LOOP, *overrides], cwd=root, stdout=subprocess.PIPE, text=True
        )
        line = proc.stdout.readline()  # type: ignore[union-attr]
        assert line.startswith("resumed"), line
        resumed = int(line.split()[1])
        assert resumed >= last  # never behind what an earlier run had completed
        # Let it save one to three times, then kill it at a random point of its next step-and-save cycle.
        t0 = time.monotonic()
        for _ in range(int(rng.integers(1, 4))):
            assert proc.stdout.readline().startswith("saved")  # type: ignore[union-attr]
        cycle = (time.monotonic() - t0) / 3
        time.sleep(float(rng.uniform(0.0, 1.0)) * cycle)  # mid-step, mid-save or mid-rename
        proc.kill()
        proc.wait()
        proc.stdout.close()  # type: ignore[union-attr]
        path = resume_point(cfg.train.checkpoints, cfg.policy)
        if path is None:  # killed before its first save completed
            assert last == 0 and latest_checkpoint(cfg.train.checkpoints) is None
            continue
        assert path == latest_checkpoint(cfg.train.checkpoints)
        s = TrainState(cfg, torch.device("cpu"))
        assert s.resume() == path and path.name == f"step_{s.step:06d}"
        # Same schedule: the scheduler and the optimiser's own step counts agree with the step.
        assert s.sched.last_epoch == s.step
        assert s.sched.get_last_lr()[0] == pytest.approx(
            cfg.train.lr * lr_factor(s.step, 2, 10000, cfg.train.min_lr_ratio)
        )
        assert all(int(st["step"]) == s.step for st in s.opt.state_dict()["state"].values())
        last = s.step
        steps.append(last)
    assert last > 0 and len(set(steps)) > 2, steps


@pytest.mark.integration
def test_weights_reach_a_named_dagger_actor_and_absence_is_fine(ray_session) -> None:  # type: ignore[no-untyped-def]
    ray = ray_session
    from runtime.ray_cluster import NAMESPACE
    from training.push import WeightPusher

    @ray.remote(num_cpus=0)
    class Recorder:
        def __init__(self) -> None:
            self.calls: list[tuple[int, dict]] = []

        def set_weights(self, state: dict, version: int) -> None:
            self.calls.append((version, {k: v.shape for k, v in state.items()}))

        def got(self) -> list:
            return self.calls

    model = torch.nn.Linear(3, 2)
    pusher = WeightPusher(n_actors=1)
    assert pusher.push(model, 1) == 0  # no actor yet: nothing happens, nothing fails
    rec = Recorder.options(name="dagger", namespace=NAMESPACE).remote()
    assert pusher.push(model, 7) == 1
    ray.get(rec.got.remote())  # the call is queued before this one
    calls = ray.get(rec.got.remote())
    assert calls == [(7, {"weight": (2, 3), "bias": (2,)})]
    ray.kill(rec)


@pytest.mark.integration
@pytest.mark.slow
def test_training_logs_checkpoints_and_resumes_at_the_saved_step(tmp_path: Path, ray_session, small_cfg) -> None:  # type: ignore[no-untyped-def]
    from datagen.runner import run_datagen
    from training.trainer import run_training

    cfg = small_cfg(*TRAIN, "run.name=tr", "train.steps=4", "datagen.dagger.samples=0")
    run_datagen(cfg, show_progress=False)
    run_training(cfg)
    run = tmp_path / "tr"
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "train/loss" in r] == [1, 2, 3, 4]
    assert all(np.isfinite(r["train/loss"]) and r["train/samples_per_s"] > 0 for r in rows if "train/loss" in r)
    assert any("val/loss" in r for r in rows)
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step_000002", "step_000004"]
    assert (run / "loss_curve.png").stat().st_size > 1000 and (run / "samples" / "step_000003.png").is_file()
    wandb_runs = list((run / "wandb").glob("offline-run-*"))
    assert len(wandb_runs) == 1 and list(wandb_runs[0].glob("run-*.wandb"))
    assert list((wandb_runs[0] / "files" / "media" / "images").glob("*.png"))  # sample grids and the loss curve

    # A crash after the step-2 checkpoint: the newest one on disk is step 2. Rerunning continues from there.
    shutil.rmtree(run / "checkpoints" / "step_000004")
    run_training(cfg.model_copy(update={"train": cfg.train.model_copy(update={"steps": 6})}))
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["step"] == 6 and any(r.get("resumed_from") == 2 for r in rows)
    assert [r["step"] for r in rows if "train/loss" in r][-4:] == [3, 4, 5, 6]
    assert latest_checkpoint(run / "checkpoints").name == "step_000006"


@pytest.mark.integration
@pytest.mark.slow
def test_pipeline_closes_the_loop(tmp_path: Path, ray_session, small_cfg) -> None:  # type: ignore[no-untyped-def]
    from shards import DatasetReader
    from training.pipeline import run_pipeline

    cfg = small_cfg(*TRAIN, "run.name=pipe", "train.steps=6")
    counts = run_pipeline(cfg, settle_timeout=120)
    assert counts["hemisphere"] == 40 and counts["dagger_from_policy"] > 0
    versions = {
        max(s.sidecar["policy_versions"])
        for s in DatasetReader(cfg.datagen.root).refresh()
        if s.key.producer == "dagger"
    }
    assert -1 in versions and max(versions) >= 2  # round 0 by the expert, later rounds by pushed checkpoints
    assert (tmp_path / "pipe" / "loss_curve.png").is_file()


class _Spy(torch.nn.Module):
    """Wraps a policy and records each call's arguments by the names of the policy's `forward`, so the test does not
    depend on how the caller passes them."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.calls: list[dict[str, torch.Tensor]] = []

    def forward(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        bound = inspect.signature(self.inner.forward).bind(*args, **kwargs)
        self.calls.append({k: v.detach().clone() for k, v in bound.arguments.items()})
        return self.inner(*args, **kwargs)


def _asymmetric_batch(cur_level: float, des_level: float, seed: int, n: int = 2, size: int = 64) -> dict:
    """A batch whose current and desired images are flat grey at two different levels, so either is recognisable."""
    g = torch.Generator().manual_seed(seed)
    return {
        "cur": torch.full((n, 3, size, size), cur_level),
        "des": torch.full((n, 3, size, size), des_level),
        "vel": torch.randn(n, 6, generator=g) * 0.1,
        "coarse_match": torch.rand(n, 4, 4, 2, generator=g) * 4,
        "coarse_valid": torch.rand(n, 4, 4, generator=g) > 0.5,
        "rot_deg": torch.zeros(n),
    }


@pytest.mark.unit
def test_the_step_feeds_the_current_image_as_current_and_each_micro_batch_once(
    small_cfg, monkeypatch: pytest.MonkeyPatch
) -> None:
    from training import trainer

    cfg = small_cfg(*TRAIN, "train.accumulate=2")
    state = TrainState(cfg, torch.device("cpu"))
    spy = _Spy(state.policy)
    losses: list[tuple] = []
    real_loss = trainer.policy_loss

    def loss_spy(out, target, weights, match=None, valid=None):  # type: ignore[no-untyped-def]
        losses.append((out, target, match, valid))
        return real_loss(out, target, weights, match, valid)

    monkeypatch.setattr(trainer, "policy_loss", loss_spy)
    batches = [_asymmetric_batch(0.2, 0.7, seed=0), _asymmetric_batch(0.3, 0.8, seed=1)]
    result = trainer._optimiser_step(state, spy, iter(batches), world=1)
    assert len(spy.calls) == 2
    for call, batch, (_, target, match, valid) in zip(spy.calls, batches, losses, strict=True):
        assert torch.equal(call["cur"], batch["cur"]) and torch.equal(call["des"], batch["des"])
        assert torch.equal(target, batch["vel"])
        assert torch.equal(match, batch["coarse_match"]) and torch.equal(valid, batch["coarse_valid"])
    assert torch.equal(result.batch["cur"], batches[1]["cur"])


@pytest.mark.unit
def test_validation_feeds_the_current_image_as_current(small_cfg) -> None:
    from training.validation import validate

    cfg = small_cfg(*TRAIN)
    spy = _Spy(TrainState(cfg, torch.device("cpu")).policy)
    batch = _asymmetric_batch(0.2, 0.7, seed=0)
    metrics = validate(spy, cfg, [batch], torch.device("cpu"))
    assert len(spy.calls) == 1 and "val/loss" in metrics
    assert torch.equal(spy.calls[0]["cur"], batch["cur"]) and torch.equal(spy.calls[0]["des"], batch["des"])
