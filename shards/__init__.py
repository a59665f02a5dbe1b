"""The dataset contract between data generation and training: shards of samples, written whole, read in slices.

`datagen` writes through this package and `training` reads through it; neither knows the other. It is a leaf beside
`configs`: it needs numpy, Zarr (imported only when a shard is written or opened) and `file_io`, nothing of sim,
policy, datagen or training. A dataset root on disk::

    <root>/info.json          schema version, image size, canonical K, backend, config, created
    <root>/shards/<id>.zarr/  one finished shard, a Zarr v3 group, published by an atomic rename
    <root>/shards/<id>.json   its sidecar (producer, round, n, m, seeds, policy versions, checksums, git sha, config),
                              written last: the shard counts once this file exists
    <root>/_tmp/              shards and sidecars being written; never read
    <root>/manifest.jsonl     one line per published shard, appended after publishing
    <root>/quarantine/        damaged shards moved aside by readers, each with its reason

The modules, in the order data flows through them:

- `format`: the layout above, the arrays of a shard with their dtypes and shapes (documented there, once), shard
  ids (`ShardKey`), `ShardError` and the checksum of an array.
- `buffer`: `ShardBuffer`, one shard collected in memory, each field checked as it is added.
- `validation`: `validate_arrays`, the whole shard checked (dtypes, shapes, finite, ranges) before it is written.
- `writer`: `DatasetWriter` publishes a buffer atomically and cleans up after crashed publishes; `quarantine`.
- `reader`: `DatasetReader` lists published shards, verifies each against its checksums on first use
  (`DamagedShardError`) and reads contiguous slices.
"""

from shards.buffer import ShardBuffer
from shards.format import (
    ARRAY_NAMES,
    COARSE_ARRAYS,
    DESIRED_ARRAY,
    IMAGE_ARRAYS,
    PRODUCERS,
    REQUIRED_ARRAYS,
    SAMPLE_ARRAYS,
    SCHEMA,
    VEL_LIMIT,
    ShardError,
    ShardKey,
    array_sha256,
    dtype_of,
    update_sha256,
)
from shards.reader import DamagedShardError, DatasetReader, ShardMeta
from shards.validation import validate_arrays
from shards.writer import DatasetWriter, git_sha, quarantine

__all__ = [
    "ARRAY_NAMES",
    "COARSE_ARRAYS",
    "DESIRED_ARRAY",
    "IMAGE_ARRAYS",
    "PRODUCERS",
    "REQUIRED_ARRAYS",
    "SAMPLE_ARRAYS",
    "SCHEMA",
    "VEL_LIMIT",
    "DamagedShardError",
    "DatasetReader",
    "DatasetWriter",
    "ShardBuffer",
    "ShardError",
    "ShardKey",
    "ShardMeta",
    "array_sha256",
    "dtype_of",
    "git_sha",
    "quarantine",
    "update_sha256",
    "validate_arrays",
]
