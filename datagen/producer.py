"""What both producers share: the dataset writer of a run, and thread-safe progress counters."""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from configs import content_differences, save_config
from configs.loader import RESOLVED_NAME
from configs.schema import Config
from shards import DatasetWriter, ShardBuffer, ShardKey
from sim.camera import Camera


def informative(rgb: np.ndarray) -> bool:
    """False for a constant image (a camera staring at flat, evenly lit ground): shards reject those as broken."""
    return bool(rgb.min() != rgb.max())


def open_writer(cfg: Config) -> DatasetWriter:
    """The run's dataset writer; info.json records the image size, canonical K, backend and config.

    An existing root must have been made with the same config as far as what shards contain goes
    (`configs.content_differences`), else ShardError naming the keys, unless `datagen.append`. The root's
    `config.yaml` is written once, when it is missing, so it never comes to disagree with the data.
    """
    c = cfg.sim.camera
    K = Camera.canonical(c.width, c.height, c.focal_scale).K
    writer = DatasetWriter(
        cfg.datagen.root,
        height=c.height,
        width=c.width,
        K=K,
        backend=cfg.sim.renderer.backend,
        config=cfg.model_dump(mode="json"),
        config_check=content_differences,
        append=cfg.datagen.append,
    )
    if not (writer.root / RESOLVED_NAME).exists():
        save_config(cfg, writer.root)
    return writer


@dataclass
class ProducerProgress:
    """Counts a producer updates as it works; read from another thread (Ray's progress calls)."""

    samples: int = 0
    shards: int = 0
    skipped: int = 0  # shards already published by an earlier run
    bytes: int = 0
    started: float = field(default_factory=time.time)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, samples: int = 0, shards: int = 0, skipped: int = 0, nbytes: int = 0) -> None:
        """Add to the counters."""
        with self._lock:
            self.samples += samples
            self.shards += shards
            self.skipped += skipped
            self.bytes += nbytes

    def snapshot(self) -> dict[str, float]:
        """The counters and the rate so far, as plain data."""
        with self._lock:
            dt = max(time.time() - self.started, 1e-9)
            return {
                "samples": self.samples,
                "shards": self.shards,
                "skipped": self.skipped,
                "bytes": self.bytes,
                "seconds": dt,
                "samples_per_s": self.samples / dt,
            }


class BackgroundPublisher:
    """Publishes one shard in a background thread while the producer renders the next.

    Compression and writing release the GIL, so on two cores they overlap with rendering. At most one shard waits, so
    memory stays at two shards; `wait` re-raises a failed publish.
    """

    def __init__(self, writer: DatasetWriter, progress: ProducerProgress) -> None:
        self.writer, self.progress = writer, progress
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="publish")
        self._pending: Future[Any] | None = None

    def submit(self, key: ShardKey, buf: ShardBuffer, sidecar: dict[str, Any]) -> None:
        """Queue `buf` for publishing as `key` after the previous shard is out."""
        self.wait()
        self._pending = self._pool.submit(self._publish, key, buf, sidecar)

    def _publish(self, key: ShardKey, buf: ShardBuffer, sidecar: dict[str, Any]) -> None:
        self.writer.publish(key, buf, sidecar=sidecar)
        self.progress.add(samples=len(buf), shards=1, nbytes=buf.nbytes)

    def wait(self) -> None:
        """Block until the queued shard is published (raising its error, if any)."""
        if self._pending is not None:
            pending, self._pending = self._pending, None
            pending.result()

    def close(self) -> None:
        """Finish the queued shard and stop the thread."""
        try:
            self.wait()
        finally:
            self._pool.shutdown(wait=True)
