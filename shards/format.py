"""The dataset format: the on-disk layout, the arrays of a shard with their dtypes and shapes, shard ids, checksums.

This docstring is the one description of the contract between `datagen` (which writes) and `training` (which reads).

A dataset root holds::

    <root>/info.json          schema version, image size (height, width), canonical K, backend, config, created
    <root>/shards/<id>.zarr/  one finished shard, a Zarr v3 group, published by an atomic rename
    <root>/shards/<id>.json   its sidecar, written last (atomically): the shard counts once this file exists
    <root>/_tmp/              shards and sidecars being written, and what crashed writers left; never read
    <root>/manifest.jsonl     one line per published shard (a copy of its sidecar), appended after publishing
    <root>/quarantine/        damaged shards moved out of shards/, each with an <id>.reason.txt

A shard id is `<producer>-r<round:04d>-<index:06d>` (`ShardKey`), e.g. `hemisphere-r0000-000012`: deterministic, so
a rerun after a crash makes exactly the missing shards. `producer` is `hemisphere` (the offline sampler, round 0) or
`dagger` (round = the DAgger round).

A shard holds N samples and M desired images (several samples share one desired image). The arrays, each a Zarr array
named as here, with the row index first:

=================  =======  ===============  =========================================================================
array              dtype    shape            meaning
=================  =======  ===============  =========================================================================
cur_rgb            uint8    (N, H, W, 3)     the current camera's image, RGB
des_rgb            uint8    (M, H, W, 3)     the desired images, RGB
des_index          int32    (N,)             sample i's desired image is des_rgb[des_index[i]]
vel                float32  (N, 6)           the expert's label (vx, vy, vz, wx, wy, wz) normalised as [v / d*, w];
                                             every |component| <= VEL_LIMIT
wTc                float64  (N, 4, 4)        current camera pose in the world (rigid)
wTd                float64  (N, 4, 4)        desired camera pose in the world (rigid)
K                  float32  (N, 3, 3)        pinhole intrinsics in pixels, fx, fy > 0, last row 0 0 1
scene_scale        float32  (N,)             d*, metres from the desired camera to the scene centre, > 0
episode            int64    (N,)             episode number, >= 0
step               int32    (N,)             step within the episode, >= 0
scene_seed         int64    (N,)             the seed of the episode's scene, >= 0
policy_version     int32    (N,)             the policy that moved the camera, -1 for the expert
beta               float32  (N,)             DAgger's expert probability at that step, in [0, 1]
coarse_match       float16  (N, h, w, 2)     optional: the desired-image patch each current patch sees (x, y)
coarse_valid       bool     (N, h, w)        optional, with coarse_match: where that correspondence exists
=================  =======  ===============  =========================================================================

H, W are the dataset's image size (info.json); h, w the coarse patch grid. The group's attributes hold `schema`,
`producer`, `round`, `index`, `id`, `backend`, `created` and the `writer` (host, pid) that crash cleanup checks.

On disk (measured on 256x256 MuJoCo renders): images are one sample per inner chunk inside one Zarr shard per array
(a shard holds about 16 files whatever its size), compressed with Blosc zstd level 3 without shuffle; every chunk
carries a CRC32C, because Blosc has no checksum of its own and Zarr would otherwise decode a corrupted chunk into
wrong pixels without a word. The sidecar holds a sha256 of every array as well (`array_sha256`), which readers check.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any

import numpy as np

SCHEMA: int = 1
PRODUCERS = ("hemisphere", "dagger")

# Largest |component| of a stored (normalised) velocity label; anything beyond means a broken label.
VEL_LIMIT = 50.0
# Rotation part of a pose: |R^T R - I| and |det R - 1| below this.
POSE_TOLERANCE = 1e-4

# Per-sample arrays: name -> (dtype, shape of one sample; "H"/"W"/"h"/"w" are the image and coarse grid sizes).
SAMPLE_ARRAYS: dict[str, tuple[np.dtype, tuple]] = {
    "cur_rgb": (np.dtype(np.uint8), ("H", "W", 3)),
    "des_index": (np.dtype(np.int32), ()),
    "vel": (np.dtype(np.float32), (6,)),
    "wTc": (np.dtype(np.float64), (4, 4)),
    "wTd": (np.dtype(np.float64), (4, 4)),
    "K": (np.dtype(np.float32), (3, 3)),
    "scene_scale": (np.dtype(np.float32), ()),
    "episode": (np.dtype(np.int64), ()),
    "step": (np.dtype(np.int32), ()),
    "scene_seed": (np.dtype(np.int64), ()),
    "policy_version": (np.dtype(np.int32), ()),
    "beta": (np.dtype(np.float32), ()),
}
COARSE_ARRAYS: dict[str, tuple[np.dtype, tuple]] = {
    "coarse_match": (np.dtype(np.float16), ("h", "w", 2)),
    "coarse_valid": (np.dtype(np.bool_), ("h", "w")),
}
DESIRED_ARRAY = "des_rgb"  # u8 (M, H, W, 3)
ARRAY_NAMES = (*SAMPLE_ARRAYS, DESIRED_ARRAY, *COARSE_ARRAYS)
REQUIRED_ARRAYS = (*SAMPLE_ARRAYS, DESIRED_ARRAY)
IMAGE_ARRAYS = ("cur_rgb", DESIRED_ARRAY)

# Names in a dataset root (the layout above).
INFO_FILE = "info.json"
SHARDS_DIR = "shards"
TMP_DIR = "_tmp"
MANIFEST_FILE = "manifest.jsonl"
QUARANTINE_DIR = "quarantine"

_ID_RE = re.compile(r"^(?P<producer>[a-z]+)-r(?P<round>\d{4,})-(?P<index>\d{6,})$")


class ShardError(ValueError):
    """Invalid shard data, or a corrupt shard on disk. `array` names the offending array when there is one."""

    def __init__(self, message: str, *, array: str | None = None, shard: str | None = None) -> None:
        super().__init__(message)
        self.array = array
        self.shard = shard


@dataclass(frozen=True, order=True)
class ShardKey:
    """Which shard: the producer, the DAgger round (0 for the offline sampler) and the shard's index in it."""

    producer: str
    round: int
    index: int

    def __post_init__(self) -> None:
        if self.producer not in PRODUCERS:
            raise ValueError(f"producer must be one of {PRODUCERS}, got {self.producer!r}")
        for name in ("round", "index"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 0:
                raise ValueError(f"{name} must be an integer >= 0, got {value!r}")
            object.__setattr__(self, name, int(value))

    @property
    def id(self) -> str:
        """The shard's id, `<producer>-r<round:04d>-<index:06d>`: its file names in the root."""
        return f"{self.producer}-r{self.round:04d}-{self.index:06d}"

    @classmethod
    def from_id(cls, shard_id: str) -> ShardKey:
        """Parse `hemisphere-r0003-000012`; a ValueError for anything else."""
        match = _ID_RE.match(shard_id)
        if match is None:
            raise ValueError(f"not a shard id: {shard_id!r} (expected <producer>-r<round:04d>-<index:06d>)")
        key = cls(match["producer"], int(match["round"]), int(match["index"]))
        if key.id != shard_id:
            raise ValueError(f"not a canonical shard id: {shard_id!r} (expected {key.id!r})")
        return key

    def __str__(self) -> str:
        return self.id


def dtype_of(name: str) -> np.dtype:
    """The dtype of array `name` of the format; a KeyError for a name that is not one."""
    if name == DESIRED_ARRAY:
        return np.dtype(np.uint8)
    return {**SAMPLE_ARRAYS, **COARSE_ARRAYS}[name][0]


def array_sha256(a: np.ndarray) -> str:
    """sha256 of an array's bytes in C order, little-endian: what the sidecar's `checksums` hold ("sha256:<hex>")."""
    h = hashlib.sha256()
    update_sha256(h, a)
    return "sha256:" + h.hexdigest()


def update_sha256(h: Any, a: np.ndarray) -> None:
    """Feed an array's bytes to a hashlib object, as `array_sha256` does (slices along axis 0 may come in turn)."""
    a = np.ascontiguousarray(a)
    if a.dtype.byteorder == ">":
        a = a.astype(a.dtype.newbyteorder("<"))
    h.update(memoryview(a.reshape(-1).view(np.uint8)))
