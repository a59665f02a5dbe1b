"""Ray actor wrappers of the two producers; Ray is imported only here and in the runner."""

from __future__ import annotations

import os
import threading
from typing import Any

from configs.schema import Config, ProducerResources
from runtime.threads import resolve_threads, set_torch_threads

DAGGER_NAME = "dagger"


def dagger_name(index: int) -> str:
    """The named actor of DAgger worker `index`: `dagger` for the first (the trainer pushes to it), `dagger-<i>`."""
    return DAGGER_NAME if index == 0 else f"{DAGGER_NAME}-{index}"


def apply_threads(resources: ProducerResources) -> int:
    """Set this actor's torch threads from its config section (`threads`; automatic: its Ray `num_cpus`)."""
    return set_torch_threads(resolve_threads(resources.threads, cpus=max(1.0, resources.num_cpus)))


class HemisphereWorker:
    """Runs a HemisphereProducer inside a Ray actor."""

    def __init__(self, cfg: Config, offset: int, stride: int) -> None:
        from datagen.hemisphere import HemisphereProducer

        apply_threads(cfg.datagen.hemisphere)
        self.producer = HemisphereProducer(cfg, offset, stride)

    def run(self) -> dict[str, float]:
        """Produce every missing owned shard (idempotent: safe to retry after a restart)."""
        return self.producer.run()

    def progress(self) -> dict[str, float]:
        """Counters of this actor's life so far."""
        return self.producer.progress.snapshot()

    def pid(self) -> int:
        """The worker process id (tests kill it)."""
        return os.getpid()


class DAggerWorker:
    """Runs a DaggerProducer inside a Ray actor; `set_weights` may arrive while `run` loops (max_concurrency=2).

    With Isaac Sim the actor is synchronous (the app needs the main thread) and the producer polls the checkpoints
    instead (datagen.dagger.weights_by_push). An OpenGL context is current in one thread only, and a threaded actor
    runs its constructor and its methods on different threads, so the producer (and its renderer) is created inside
    `run`, on the thread that uses it.
    """

    def __init__(self, cfg: Config, index: int) -> None:
        apply_threads(cfg.datagen.dagger)
        self.cfg, self.index = cfg, index
        self.producer: Any = None
        self._early: tuple[dict[str, Any], int] | None = None
        self._stop_early = False
        self._lock = threading.Lock()

    def run(self, per_round: bool = False) -> dict[str, float]:
        """Collect until the target is met (idempotent: resumes from what is published); see DaggerProducer.run."""
        from datagen.dagger import DaggerProducer

        with self._lock:
            if self.producer is None:
                self.producer = DaggerProducer(self.cfg, self.index)
                self.producer.load_newest_checkpoint()
                if self._early is not None:
                    self.producer.set_weights(*self._early)
                if self._stop_early:
                    self.producer.stop()
        return self.producer.run(per_round)

    def set_weights(self, state: dict[str, Any], version: int) -> None:
        """Queue new weights (numpy arrays) and their policy version; swapped in between episodes."""
        with self._lock:
            if self.producer is None:
                self._early = (state, version)
            else:
                self.producer.set_weights(state, version)

    def stop(self) -> None:
        """Ask a running `run` to return after its current shard."""
        with self._lock:
            self._stop_early = True
            if self.producer is not None:
                self.producer.stop()

    def status(self) -> dict[str, Any]:
        """Round, policy version and counters (None before the first run)."""
        p = self.producer
        if p is None:
            return {"round": 0, "policy_version": -1, "samples": 0}
        return {"round": p.round, "policy_version": p.version, **p.progress.snapshot()}

    def pid(self) -> int:
        """The worker process id (tests kill it)."""
        return os.getpid()


def remote_classes() -> tuple[Any, Any]:
    """The Ray actor classes (imports ray)."""
    import ray

    return ray.remote(HemisphereWorker), ray.remote(DAggerWorker)
