"""Tests of the shards package; this package also holds the synthetic-shard helpers that the test modules here and in
tests/datagen, and spawned workers, share."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

# Small, non-square images so that a swapped H/W shows up.
H, W = 24, 32
K_CANON = np.array([[W, 0.0, W / 2], [0.0, W, H / 2], [0.0, 0.0, 1.0]])


def random_pose(rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    T = np.eye(4)
    T[:3, :3] = q
    T[:3, 3] = rng.normal(size=3)
    return T


def make_buffer(
    seed: int = 0,
    n: int = 12,
    per_desired: int = 3,
    *,
    coarse: tuple[int, int] | None = None,
    policy_version: int = -1,
    vel_scale: float = 1.0,
):
    """A ShardBuffer of n random (non-constant) samples, one desired image per `per_desired` samples."""
    from shards import ShardBuffer

    rng = np.random.default_rng(seed)
    buf = ShardBuffer(H, W, coarse_grid=coarse)
    d = 0
    for i in range(n):
        if i % per_desired == 0:
            d = buf.add_desired(rng.integers(0, 256, (H, W, 3), dtype=np.uint8))
        K = K_CANON * rng.uniform(0.8, 1.2)
        K[2, 2] = 1.0
        extra = {}
        if coarse is not None:
            extra = {
                "coarse_match": rng.uniform(0, max(coarse), (*coarse, 2)),
                "coarse_valid": rng.uniform(size=coarse) > 0.3,
            }
        buf.add_sample(
            cur_rgb=rng.integers(0, 256, (H, W, 3), dtype=np.uint8),
            des_index=d,
            vel=rng.uniform(-1, 1, 6) * vel_scale,
            wTc=random_pose(rng),
            wTd=random_pose(rng),
            K=K,
            scene_scale=rng.uniform(0.5, 2.0),
            episode=seed * 1000 + i // per_desired,
            step=i % per_desired,
            scene_seed=seed * 100 + i // (2 * per_desired),
            policy_version=policy_version if i % 2 else -1,
            beta=0.5 if policy_version >= 0 else 1.0,
            **extra,
        )
    return buf


def make_writer(root: Path | str, **kw):
    from shards import DatasetWriter

    args = {"height": H, "width": W, "K": K_CANON, "backend": "mujoco", "config": {"run": {"name": "test"}}}
    return DatasetWriter(root, **{**args, **kw})


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
