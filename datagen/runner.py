"""Run both producers on Ray (a local Ray, or the cluster at RAY_ADDRESS) to the configured targets."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from configs import with_absolute_paths
from configs.schema import Config
from datagen.actors import dagger_name, remote_classes
from datagen.dagger import weights_by_push
from datagen.hemisphere import shard_count
from datagen.producer import open_writer
from runtime.ray_cluster import NAMESPACE, check_local_backend, check_ray_address, init_ray
from shards import DatasetReader
from sim.asset_catalogue import check_assets, report_lines


@dataclass
class Summary:
    """What a datagen run left on disk."""

    root: str
    samples: dict[str, int]
    shards: dict[str, int]
    megabytes: float
    seconds: float
    new_samples: int
    nothing_to_do: bool = False

    def line(self) -> str:
        """The one-line summary printed at the end."""
        total = sum(self.samples.values())
        parts = ", ".join(f"{k} {v}" for k, v in self.samples.items())
        if self.nothing_to_do:
            return (
                f"datagen: already at the target, {total} samples ({parts}) in {sum(self.shards.values())} shards in "
                f"{self.root}; nothing to do — raise datagen.hemisphere.samples or datagen.dagger.samples to make more"
            )
        rate = self.new_samples / max(self.seconds, 1e-9)
        return (
            f"datagen: {total} samples ({parts}) in {sum(self.shards.values())} shards, {self.megabytes:.1f} MB, "
            f"{self.new_samples} new at {rate:.1f} samples/s in {self.seconds:.0f} s -> {self.root}"
        )


def _counts(reader: DatasetReader) -> tuple[dict[str, int], dict[str, int]]:
    samples: dict[str, int] = {"hemisphere": 0, "dagger": 0}
    shards: dict[str, int] = {"hemisphere": 0, "dagger": 0}
    for s in reader.refresh():
        samples[s.key.producer] += s.n
        shards[s.key.producer] += 1
    return samples, shards


def _disk_mb(root: str) -> float:
    return sum(f.stat().st_size for f in Path(root, "shards").rglob("*") if f.is_file()) / 1e6


def requested_cpus(cfg: Config, trainer: bool = False) -> float:
    """CPUs the producer actors (and the trainer's workers) ask Ray for."""
    h, d = cfg.datagen.hemisphere, cfg.datagen.dagger
    total = h.actors * h.num_cpus + d.actors * d.num_cpus
    return total + (cfg.train.workers * cfg.train.cpus_per_worker if trainer else 0.0)


def start_producers(cfg: Config) -> dict[str, list[Any]]:
    """Create the producer actors declared in the config (resources from config) and start their run() calls."""
    Hemi, Dagger = remote_classes()
    h, d = cfg.datagen.hemisphere, cfg.datagen.dagger
    actors: dict[str, list[Any]] = {"hemisphere": [], "dagger": []}
    n_hemi = min(h.actors, shard_count(cfg)) if h.samples else 0
    for i in range(n_hemi):
        opts = {
            "num_cpus": h.num_cpus,
            "num_gpus": h.num_gpus,
            "resources": h.resources,
            "max_restarts": h.max_restarts,
        }
        actors["hemisphere"].append(Hemi.options(**opts, max_task_retries=h.max_restarts).remote(cfg, i, n_hemi))
    for i in range(d.actors if d.samples else 0):
        opts = {
            "num_cpus": d.num_cpus,
            "num_gpus": d.num_gpus,
            "resources": d.resources,
            "max_restarts": d.max_restarts,
        }
        # Named so the trainer can find it; two threads so that set_weights lands while run() loops (one for Isaac,
        # which polls the checkpoints instead: see weights_by_push).
        threads = 2 if weights_by_push(cfg) else 1
        actor = Dagger.options(
            **opts, max_task_retries=d.max_restarts, name=dagger_name(i), namespace=NAMESPACE, max_concurrency=threads
        ).remote(cfg, i)
        actors["dagger"].append(actor)
    return actors


def remaining_samples(cfg: Config, reader: DatasetReader) -> dict[str, int]:
    """Samples each producer still has to make, decided as the producers decide it: hemisphere shards whose key is
    not published, and DAgger samples below `datagen.dagger.samples` per actor (each actor owns a residue class of
    shard indices). Reads sidecars only; starts nothing."""
    h, d = cfg.datagen.hemisphere, cfg.datagen.dagger
    published = {(s.key.producer, s.key.round, s.key.index) for s in reader.refresh()}
    hemi = sum(
        min(h.shard_samples, h.samples - i * h.shard_samples)
        for i in range(shard_count(cfg))
        if ("hemisphere", 0, i) not in published
    )
    dagger = 0
    if d.samples and d.actors:
        mine = [0] * d.actors
        for s in reader.shards:
            if s.key.producer == "dagger":
                mine[s.key.index % d.actors] += s.n
        dagger = sum(max(0, d.samples - n) for n in mine)
    return {"hemisphere": hemi, "dagger": dagger}


def preflight(cfg: Config, echo: Callable[[str], None] = print) -> None:
    """Every check a job that renders makes before Ray starts: the render backend, the Ray address and the asset
    folders (AssetFolderError naming key and path); then `echo` the asset split counts and small-split warnings."""
    check_local_backend(cfg)
    check_ray_address(cfg)  # before anything is written
    for line in report_lines(check_assets(cfg.sim.assets)):
        echo(line)


def run_datagen(cfg: Config, show_progress: bool = True, echo: Callable[[str], None] = print) -> Summary:
    """Produce the configured dataset (filling only what is missing) and return what is on disk.

    Every check runs before Ray starts (`preflight`); a root already at its targets returns at once, with
    `Summary.nothing_to_do`, without importing Ray."""
    preflight(cfg, echo)
    cfg = with_absolute_paths(cfg)
    open_writer(cfg)  # creates the layout and info.json before the workers race to
    reader = DatasetReader(cfg.datagen.root)
    before, shards_before = _counts(reader)
    if not any(remaining_samples(cfg, reader).values()):
        return Summary(cfg.datagen.root, before, shards_before, _disk_mb(cfg.datagen.root), 0.0, 0, True)
    import ray
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    started = init_ray(cfg, min_cpus=requested_cpus(cfg))
    t0 = time.time()
    try:
        actors = start_producers(cfg)
        owner = {}
        for group in actors.values():
            for a in group:
                owner[a.run.remote()] = a
        pending = list(owner)
        targets = {"hemisphere": cfg.datagen.hemisphere.samples, "dagger": cfg.datagen.dagger.samples}
        targets = {k: v for k, v in targets.items() if v > 0}  # a producer that makes nothing gets no bar
        columns = [TextColumn("{task.description:10s}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                   TextColumn("{task.fields[rate]:.1f} samples/s"), TimeElapsedColumn()]  # fmt: skip
        with Progress(*columns, disable=not show_progress) as bar:
            tasks = {k: bar.add_task(k, total=v, rate=0.0) for k, v in targets.items()}
            while pending:
                done, pending = ray.wait(pending, timeout=1.0)
                ray.get(done)  # raises if a producer failed for good
                for ref in done:
                    ray.kill(owner[ref])  # an idle actor still holds its CPUs
                now, _ = _counts(reader)
                for k, task in tasks.items():
                    rate = (now[k] - before[k]) / max(time.time() - t0, 1e-9)
                    bar.update(task, completed=min(now[k], targets[k]), rate=rate)
    finally:
        if started:
            ray.shutdown()
    samples, shards = _counts(reader)
    new = sum(samples.values()) - sum(before.values())
    return Summary(cfg.datagen.root, samples, shards, _disk_mb(cfg.datagen.root), time.time() - t0, new)
