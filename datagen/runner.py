"""Run both producers on Ray (a local Ray, or the cluster at RAY_ADDRESS) to the configured targets."""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from configs import with_absolute_paths
from configs.schema import Config
from datagen.actors import NAMESPACE, dagger_name, remote_classes
from datagen.dagger import weights_by_push
from datagen.hemisphere import shard_count
from datagen.producer import open_writer
from shards import DatasetReader
from sim.mujoco_gl import choose_platform
from sim.render import check_backend


@dataclass
class Summary:
    """What a datagen run left on disk."""

    root: str
    samples: dict[str, int]
    shards: dict[str, int]
    megabytes: float
    seconds: float
    new_samples: int

    def line(self) -> str:
        """The one-line summary printed at the end."""
        total = sum(self.samples.values())
        parts = ", ".join(f"{k} {v}" for k, v in self.samples.items())
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


def check_local_backend(cfg: Config) -> None:
    """Fail before Ray starts when the producers would run here on a backend this machine cannot run.

    Joining a cluster skips the check: the producers run on other nodes (RTX workers for Isaac), which check for
    themselves when they start.
    """
    if cfg.datagen.ray_address is None and os.environ.get("RAY_ADDRESS") is None:
        check_backend(cfg.sim.renderer.backend)


def ray_address(cfg: Config) -> tuple[str | None, str]:
    """The Ray cluster to join and where that came from: (address or None for a local Ray, source)."""
    if cfg.datagen.ray_address is not None:
        return cfg.datagen.ray_address, "datagen.ray_address"
    if os.environ.get("RAY_ADDRESS"):
        return os.environ["RAY_ADDRESS"], "$RAY_ADDRESS"
    return None, "neither datagen.ray_address nor $RAY_ADDRESS is set"


def check_ray_address(cfg: Config, timeout: float = 5.0) -> None:
    """Fail within seconds, naming the address and where it came from, when the Ray cluster to join is not there.

    Ray itself retries an unreachable address for minutes. Covered: host:port (the GCS), ray://host:port (Ray
    Client) and 'auto' (the cluster `ray start` recorded on this machine); 'local' and no address start a local Ray.
    ConnectionError otherwise, saying how to start a cluster or use a local one.
    """
    import socket

    address, source = ray_address(cfg)
    if address is None or address in ("local", ""):
        return
    hint = (
        "Start the cluster (`ray start --head` on its head node), or unset $RAY_ADDRESS and set "
        "datagen.ray_address=null to start a local Ray instead."
    )
    target = address
    if address == "auto":
        try:
            from ray._private.utils import read_ray_address  # the file `ray start` writes; no public accessor

            target = read_ray_address() or ""
        except Exception:  # a Ray without it: let ray.init judge
            return
        if not target:
            raise ConnectionError(
                f"Ray address 'auto' (from {source}): no Ray cluster was started on this machine. {hint}"
            )
    host, _, port = target.removeprefix("ray://").rpartition(":")
    host = host.strip("[]")
    if not host or not port.isdigit():
        raise ConnectionError(f"Ray address {address!r} (from {source}) is not host:port or ray://host:port. {hint}")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            pass
    except OSError as err:
        via = f" (recorded for 'auto': {target})" if address == "auto" else ""
        raise ConnectionError(
            f"cannot reach the Ray cluster at {address}{via} (from {source}): {err.strerror or err}. {hint}"
        ) from None


def init_ray(cfg: Config, env_vars: dict[str, str] | None = None, min_cpus: float = 0.0) -> bool:
    """Join RAY_ADDRESS / datagen.ray_address, or start a local Ray; returns True when this call started it.

    A local Ray advertises at least `min_cpus` logical CPUs, so that producers and trainer that each reserve a CPU
    can all run on a small machine (they share the cores; nothing deadlocks waiting for a slot).
    """
    import ray

    if ray.is_initialized():
        return False
    check_ray_address(cfg)
    platform = choose_platform()  # probe GL once here; the workers inherit the answer
    env = {"MUJOCO_GL": platform, "PYOPENGL_PLATFORM": platform, **(env_vars or {})}
    address = cfg.datagen.ray_address or os.environ.get("RAY_ADDRESS")
    kwargs: dict[str, Any] = {"namespace": NAMESPACE, "runtime_env": {"env_vars": env}, "log_to_driver": True}
    if address is None:
        cpus = cfg.datagen.num_cpus or os.cpu_count() or 1
        kwargs.update(num_cpus=max(cpus, math.ceil(min_cpus)), include_dashboard=False)
    ray.init(address=address, **kwargs)
    return True


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


def run_datagen(cfg: Config, show_progress: bool = True) -> Summary:
    """Produce the configured dataset (filling only what is missing) and return what is on disk."""
    import ray
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    check_local_backend(cfg)
    check_ray_address(cfg)  # before anything is written
    cfg = with_absolute_paths(cfg)
    open_writer(cfg)  # creates the layout and info.json before the workers race to
    reader = DatasetReader(cfg.datagen.root)
    before, _ = _counts(reader)
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
        columns = [TextColumn("{task.description:10s}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                   TextColumn("{task.fields[rate]:.1f} samples/s"), TimeElapsedColumn()]  # fmt: skip
        with Progress(*columns, disable=not show_progress) as bar:
            tasks = {k: bar.add_task(k, total=max(v, 1), rate=0.0) for k, v in targets.items()}
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
