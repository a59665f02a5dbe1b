"""Tests of the shards package; this package also holds what the writer tests and the workers they spawn share. The
synthetic shards themselves come from the factories plugin (tests/fixtures/factories.py)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from tests.fixtures.factories import make_buffer, make_writer


def listing(root: Path) -> dict[str, list[str]]:
    """The names in a root's shards/ and _tmp/, sorted."""
    return {d: sorted(p.name for p in (root / d).iterdir()) for d in ("shards", "_tmp")}


def publish_worker(
    root: str, producer: str, indices: list[int], crash_stage: str | None = None, barrier: Any = None
) -> None:
    """Run in a spawned process: publish one shard per index (seeded by it), or die (os._exit) mid-publish.

    crash_stage "zarr" dies at the first chunk file zarr writes (os.replace of its temp file), "rename" at the rename
    into shards/, "sidecar" at the sidecar's os.replace: what a killed producer leaves behind at each point.
    """
    from shards import ShardKey

    if barrier is not None:  # start together: both create the root's info.json and publish at the same time
        barrier.wait(60)
    writer = make_writer(root)
    if crash_stage is not None:
        real_replace, real_rename = os.replace, os.rename

        def replace(src, dst, *a, **kw):
            dst = str(dst)
            if (crash_stage == "zarr" and "/cur_rgb/" in dst) or (
                crash_stage == "sidecar" and dst.endswith(".json") and "/shards/" in dst
            ):
                os._exit(17)
            return real_replace(src, dst, *a, **kw)

        def rename(src, dst, *a, **kw):
            if crash_stage == "rename" and str(dst).endswith(".zarr") and "/shards/" in str(dst):
                os._exit(17)
            return real_rename(src, dst, *a, **kw)

        os.replace, os.rename = replace, rename
    for i in indices:
        writer.publish(ShardKey(producer, 0, i), make_buffer(seed=i), sidecar={"worker": os.getpid()})
