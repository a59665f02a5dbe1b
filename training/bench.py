"""`python -m training.bench`: data-loader samples/s against trainer samples/s on this machine, and how the trainer's
step scales with DDP workers.

The loader must not be the bottleneck: it has to deliver more samples per second than one training step consumes.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from typing import Any

import torch

from configs import load_config


def loader_rate(cfg: object, workers: int, batches: int) -> float:
    """Samples/s the train loader delivers with `workers` processes (after its first batch)."""

    data = cfg.data.model_copy(update={"workers": workers})  # type: ignore[attr-defined]
    it = iter(_loader(cfg, data))
    next(it)
    t0 = time.perf_counter()
    n = sum(len(next(it)["vel"]) for _ in range(batches))
    return n / (time.perf_counter() - t0)


def _loader(cfg: Any, data: Any) -> Any:
    # What the trainer reads: correspondences when the aux loss is on, quarter turns when the policy uses them.
    from training.dataset import make_loader

    p = cfg.policy
    return make_loader(data, "train", 0, cfg.train.batch_size, with_coarse=p.loss.aux_match > 0, rot90=p.rot90)


def _step_rate(state: Any, model: Any, batch: dict[str, Any], steps: int, world: int, sync: Any = None) -> float:
    """Samples/s of `steps` calls of the trainer's own step (training.trainer._optimiser_step: forward, backward,
    clipping, AdamW, schedule) on one fixed batch, after one untimed step; `sync` (a barrier) runs before and after."""
    import itertools

    from training.trainer import _optimiser_step

    batches = itertools.repeat(batch)
    _optimiser_step(state, model, batches, world)
    if sync is not None:
        sync()
    t0 = time.perf_counter()
    samples = sum(_optimiser_step(state, model, batches, world).samples for _ in range(steps))
    if sync is not None:
        sync()
    return samples / (time.perf_counter() - t0)


def trainer_rate(cfg: Any, steps: int) -> float:
    """Samples/s of the training step on fixed batches in this process (the model alone, no data loading)."""
    from training.trainer import TrainState

    state = TrainState(cfg, torch.device("cpu"))
    return _step_rate(state, state.policy, next(iter(_loader(cfg, cfg.data))), steps, world=1)


def _ddp_worker(rank: int, world: int, cfg: Any, steps: int, port: int, out: Any) -> None:
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from training.trainer import TrainState

    # One core per worker, as Ray Train gives each of train.workers one CPU on this machine.
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        state = TrainState(cfg, torch.device("cpu"))
        batch = next(iter(_loader(cfg, cfg.data)))
        # The step counts every rank's samples (len(batch) x world), so rank 0's rate is the whole group's.
        rate = _step_rate(state, DistributedDataParallel(state.policy), batch, steps, world, sync=dist.barrier)
        if rank == 0:
            out.put(rate)
    finally:
        dist.destroy_process_group()


def ddp_rate(cfg: Any, world: int, steps: int) -> float:
    """Samples/s of the training step over `world` DDP processes (gloo, one thread each), all ranks together.

    Every rank runs forward + backward + AdamW on its own batch and DDP averages the gradients, as in
    `python -m training` with train.workers = world; no Ray, so this is the step's own scaling.
    """
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as sock:  # a free port for the rendezvous
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    ctx = mp.get_context("spawn")
    out = ctx.SimpleQueue()
    mp.start_processes(_ddp_worker, args=(world, cfg, steps, port, out), nprocs=world, start_method="spawn")
    return float(out.get())


def main(argv: list[str] | None = None) -> int:
    """Print the table and the command that reproduces it."""
    ap = argparse.ArgumentParser(prog="python -m training.bench", description=__doc__)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--batches", type=int, default=40)
    ap.add_argument("--ddp", type=int, nargs="*", default=[1, 2], help="DDP worker counts (default %(default)s)")
    args = ap.parse_args(argv)
    tmp = tempfile.mkdtemp(prefix="cnsv2-train-bench-")
    try:
        from datagen.runner import run_datagen

        cfg = load_config("smoke", [f"run.root={tmp}", "datagen.hemisphere.samples=200", "datagen.dagger.samples=100"])
        run_datagen(cfg, show_progress=False)
        # The CPU recipe's model and loader (XFeat, quarter turns, batch 16) on the same data.
        cpu = load_config("cpu", [f"run.root={tmp}", f"datagen.root={cfg.datagen.root}"])
        rows = [(f"data loader, {w} worker process(es)", loader_rate(cfg, w, args.batches)) for w in (0, 1)]
        rows.append(("data loader, 0 workers, cpu config (quarter turns)", loader_rate(cpu, 0, args.batches)))
        rows.append(("trainer step (training.trainer._optimiser_step), smoke model", trainer_rate(cfg, args.steps)))
        rows.append(("trainer step, cpu model (frozen XFeat, batch 16)", trainer_rate(cpu, args.steps)))
        for world in args.ddp:
            name = f"trainer step, smoke model, DDP x {world} (gloo, 1 thread each)"
            rows.append((name, ddp_rate(cfg, world, args.steps)))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"Training input vs compute, smoke config, 256 px, batch {cfg.train.batch_size}, torch threads "
          f"{torch.get_num_threads()}")  # fmt: skip
    print("| measurement | samples/s |")
    print("|---|---|")
    for name, rate in rows:
        print(f"| {name} | {rate:.1f} |")
    print(f"reproduce: python -m training.bench {' '.join(sys.argv[1:] if argv is None else argv)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
