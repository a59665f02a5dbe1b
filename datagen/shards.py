"""The on-disk dataset format: shards of training samples, written whole, published atomically, read in slices.

A dataset root holds::

    <root>/info.json          schema version, image size (H, W), canonical K, backend, config, created
    <root>/shards/<id>.zarr/  one finished shard, a Zarr v3 group, published by atomic rename
    <root>/shards/<id>.json   sidecar (written last, atomically): the shard counts once this file exists
    <root>/_tmp/              shards and sidecars being written; never read
    <root>/manifest.jsonl     one line per published shard (its sidecar), appended after publishing

A producer fills a `ShardBuffer` in memory (per-sample writes into Zarr get slower as a shard fills) and hands it to
`DatasetWriter.publish`, which validates it, writes it under `_tmp/`, reads one sample back, renames the directory
into `shards/` and writes the sidecar last. A crash at any point leaves nothing visible; `clean_stale` removes the
leftovers. Several processes may publish into one root at once, each with its own keys.

On disk (measured on 256x256 MuJoCo renders, see the `_IMAGE_SHUFFLE` note): images are one sample per inner chunk
inside one Zarr shard per array (a shard holds about 16 files whatever its size), compressed with Blosc zstd level 3
without shuffle; every chunk carries a CRC32C, because Blosc has no checksum of its own and Zarr would otherwise decode
a corrupted chunk into wrong pixels without a word. The sidecar holds a sha256 of every array as well.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import operator
import os
import re
import shutil
import socket
import subprocess
import threading
import time
import uuid
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
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

# Measured on 400 renders of the smoke scenes (256x256, MuJoCo, camera effects on half the scenes), Blosc zstd-3:
# noshuffle compresses them 2.00x at 1.3 ms/image, bitshuffle 1.68x at 0.9 ms/image; both decode in 0.2 ms/image.
# Real renders carry noise and texture, so the bit planes that bitshuffle separates are not sparse.
_IMAGE_SHUFFLE = "noshuffle"
_CODECS = ("zstd", "lz4", "lz4hc", "zlib", "blosclz", "none")
# Inner chunks of non-image arrays hold about this many raw bytes (the whole array when it is smaller).
_SMALL_CHUNK_BYTES = 1 << 20
_TMP_SEP = "~"
_ID_RE = re.compile(r"^(?P<producer>[a-z]+)-r(?P<round>\d{4,})-(?P<index>\d{6,})$")

# Shard ids this process is publishing right now, so that its own clean_stale leaves them alone.
_IN_FLIGHT: set[str] = set()
_IN_FLIGHT_LOCK = threading.Lock()


class ShardError(ValueError):
    """Invalid shard data, or a corrupt shard on disk. `array` names the offending array when there is one."""

    def __init__(self, message: str, *, array: str | None = None, shard: str | None = None) -> None:
        super().__init__(message)
        self.array = array
        self.shard = shard


class DamagedShardError(ShardError):
    """A published shard whose bytes on disk are not what was published: a missing or damaged chunk, an array that
    is gone, or a sidecar that disagrees with the arrays. Readers refuse it; the training stream quarantines it."""


# -- keys ------------------------------------------------------------------------------------------------------------
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


# -- validation ------------------------------------------------------------------------------------------------------
def validate_arrays(arrays: Mapping[str, np.ndarray], *, height: int, width: int, offset: int = 0) -> None:
    """Check a shard's arrays against the contract; a ShardError names the first bad array and what is wrong.

    Checks names, dtypes, shapes, that floats are finite, label range (|vel| components <= VEL_LIMIT), des_index in
    [0, M), non-constant images (a constant image is a broken render), poses rigid, K a pinhole matrix with positive
    focal lengths, scene_scale > 0, beta in [0, 1], policy_version >= -1 and episode, step, scene_seed >= 0.
    `offset` is added to the sample indices in messages (for arrays that are a slice of a shard).
    """
    unknown = sorted(set(arrays) - set(ARRAY_NAMES))
    if unknown:
        raise ShardError(f"{unknown[0]}: unknown array; a shard holds {', '.join(ARRAY_NAMES)}", array=unknown[0])
    for name in REQUIRED_ARRAYS:
        if name not in arrays:
            raise ShardError(f"{name}: missing", array=name)
    coarse = [name for name in COARSE_ARRAYS if name in arrays]
    if len(coarse) == 1:
        other = next(name for name in COARSE_ARRAYS if name not in arrays)
        raise ShardError(f"{other}: missing ({coarse[0]} is present; the coarse arrays come together)", array=other)

    for name, value in arrays.items():
        if not isinstance(value, np.ndarray):
            raise ShardError(f"{name}: expected a numpy array, got {type(value).__name__}", array=name)
        expected = _dtype_of(name)
        if value.dtype != expected:
            raise ShardError(f"{name}: dtype {value.dtype}, expected {expected}", array=name)

    n = arrays["cur_rgb"].shape[0] if arrays["cur_rgb"].ndim else 0
    if n == 0:
        raise ShardError("cur_rgb: an empty shard (N = 0)", array="cur_rgb")
    grid = arrays["coarse_valid"].shape[1:3] if "coarse_valid" in arrays else None
    if grid is not None and len(grid) != 2:
        raise ShardError(
            f"coarse_valid: shape {arrays['coarse_valid'].shape}, expected (N, h, w)", array="coarse_valid"
        )
    sizes = {"H": height, "W": width, "h": grid[0] if grid else 0, "w": grid[1] if grid else 0}
    for name, (_, sample_shape) in {**SAMPLE_ARRAYS, **COARSE_ARRAYS}.items():
        if name in arrays:
            expected_shape = (n, *(sizes.get(d, d) for d in sample_shape))
            if arrays[name].shape != expected_shape:
                raise ShardError(f"{name}: shape {arrays[name].shape}, expected {expected_shape}", array=name)
    des = arrays[DESIRED_ARRAY]
    if des.ndim != 4 or des.shape[1:] != (height, width, 3) or des.shape[0] == 0:
        raise ShardError(
            f"{DESIRED_ARRAY}: shape {des.shape}, expected (M >= 1, {height}, {width}, 3)", array="des_rgb"
        )

    for name in ("vel", "wTc", "wTd", "K", "scene_scale", "beta", "coarse_match"):
        if name in arrays:
            bad = ~np.isfinite(arrays[name].reshape(n, -1)).all(axis=1)
            if bad.any():
                i = int(np.argmax(bad))
                raise ShardError(f"{name}[{i + offset}]: not finite ({_short(arrays[name][i])})", array=name)
    vel = arrays["vel"]
    bad = (np.abs(vel) > VEL_LIMIT).any(axis=1)
    if bad.any():
        i = int(np.argmax(bad))
        raise ShardError(
            f"vel[{i + offset}]: label out of range, |component| > {VEL_LIMIT} ({_short(vel[i])})", array="vel"
        )

    m = des.shape[0]
    des_index = arrays["des_index"]
    bad = (des_index < 0) | (des_index >= m)
    if bad.any():
        i = int(np.argmax(bad))
        raise ShardError(f"des_index[{i + offset}]: {int(des_index[i])} is outside [0, M={m})", array="des_index")
    for name in IMAGE_ARRAYS:
        flat = arrays[name].reshape(arrays[name].shape[0], -1)
        constant = flat.min(axis=1) == flat.max(axis=1)
        if constant.any():
            i = int(np.argmax(constant))
            at = i if name == DESIRED_ARRAY else i + offset
            raise ShardError(
                f"{name}[{at}]: constant image (every pixel {int(flat[i, 0])}): a broken render", array=name
            )

    for name in ("wTc", "wTd"):
        _check_poses(name, arrays[name], offset)
    K = arrays["K"].astype(np.float64)
    bad = (K[:, 0, 0] <= 0) | (K[:, 1, 1] <= 0)
    if bad.any():
        i = int(np.argmax(bad))
        raise ShardError(f"K[{i + offset}]: focal lengths must be positive ({_short(K[i])})", array="K")
    bad = (K[:, 1, 0] != 0) | (K[:, 2, 0] != 0) | (K[:, 2, 1] != 0) | (K[:, 2, 2] != 1)
    if bad.any():
        i = int(np.argmax(bad))
        raise ShardError(
            f"K[{i + offset}]: not a pinhole matrix [[fx, s, cx], [0, fy, cy], [0, 0, 1]] ({_short(K[i])})", array="K"
        )
    _check_range(arrays, "scene_scale", lambda a: a > 0, "must be > 0", offset)
    _check_range(arrays, "beta", lambda a: (a >= 0) & (a <= 1), "must be in [0, 1]", offset)
    _check_range(arrays, "policy_version", lambda a: a >= -1, "must be >= -1 (-1 = expert)", offset)
    for name in ("episode", "step", "scene_seed"):
        _check_range(arrays, name, lambda a: a >= 0, "must be >= 0", offset)


def _dtype_of(name: str) -> np.dtype:
    if name == DESIRED_ARRAY:
        return np.dtype(np.uint8)
    return {**SAMPLE_ARRAYS, **COARSE_ARRAYS}[name][0]


def _check_poses(name: str, T: np.ndarray, offset: int) -> None:
    bottom = np.abs(T[:, 3] - np.array([0.0, 0.0, 0.0, 1.0])).max(axis=1) > 0
    R = T[:, :3, :3]
    ortho = np.abs(np.einsum("nji,njk->nik", R, R) - np.eye(3)).max(axis=(1, 2)) > POSE_TOLERANCE
    det = np.abs(np.linalg.det(R) - 1.0) > POSE_TOLERANCE
    bad = bottom | ortho | det
    if bad.any():
        i = int(np.argmax(bad))
        raise ShardError(
            f"{name}[{i + offset}]: not a rigid transform (R orthonormal, det 1, last row 0 0 0 1)", array=name
        )


def _check_range(arrays: Mapping[str, np.ndarray], name: str, ok: Any, what: str, offset: int) -> None:
    bad = ~ok(arrays[name])
    if bad.any():
        i = int(np.argmax(bad))
        raise ShardError(f"{name}[{i + offset}]: {arrays[name][i].item()} {what}", array=name)


def _short(a: np.ndarray) -> str:
    return np.array2string(np.asarray(a).ravel(), precision=4, threshold=12, separator=", ")


# -- the in-memory buffer --------------------------------------------------------------------------------------------
class ShardBuffer:
    """One shard buffered in memory; `DatasetWriter.publish` writes it in one go.

    Each field is checked for shape and kind as it is added (the error names the field); values (finite, range) are
    checked once for the whole shard by `validate_arrays`. Images are copied, so a renderer may reuse its buffers.
    """

    def __init__(self, height: int, width: int, coarse_grid: tuple[int, int] | None = None) -> None:
        if height < 1 or width < 1:
            raise ValueError(f"image size must be positive, got {height}x{width}")
        if coarse_grid is not None:
            coarse_grid = (int(coarse_grid[0]), int(coarse_grid[1]))
            if min(coarse_grid) < 1:
                raise ValueError(f"coarse_grid must be positive, got {coarse_grid}")
        self.height, self.width, self.coarse_grid = int(height), int(width), coarse_grid
        self._desired: list[np.ndarray] = []
        self._samples: dict[str, list] = {name: [] for name in SAMPLE_ARRAYS}
        if coarse_grid is not None:
            self._samples.update({name: [] for name in COARSE_ARRAYS})
        self._nbytes = 0

    def __len__(self) -> int:
        return len(self._samples["cur_rgb"])

    @property
    def m(self) -> int:
        """The number of desired images."""
        return len(self._desired)

    @property
    def nbytes(self) -> int:
        """Raw bytes buffered (what the arrays will take uncompressed)."""
        return self._nbytes

    def add_desired(self, rgb: np.ndarray) -> int:
        """Add a desired image (uint8 HxWx3); returns the des_index that samples of it use."""
        self._desired.append(self._image(DESIRED_ARRAY, rgb))
        self._nbytes += self._desired[-1].nbytes
        return len(self._desired) - 1

    def add_sample(
        self,
        *,
        cur_rgb: np.ndarray,
        des_index: int,
        vel: Any,
        wTc: Any,
        wTd: Any,
        K: Any,
        scene_scale: float,
        episode: int,
        step: int,
        scene_seed: int,
        policy_version: int = -1,
        beta: float = 1.0,
        coarse_match: Any = None,
        coarse_valid: Any = None,
    ) -> None:
        """Add one sample; `des_index` must come from `add_desired`, `vel` is the normalised expert label."""
        index = self._int("des_index", des_index, np.int32)
        if not 0 <= index < len(self._desired):
            raise ShardError(
                f"des_index: {index} is not a desired image of this buffer (M = {self.m})", array="des_index"
            )
        row: dict[str, Any] = {
            "cur_rgb": self._image("cur_rgb", cur_rgb),
            "des_index": index,
            "vel": self._floats("vel", vel, (6,)),
            "wTc": self._floats("wTc", wTc, (4, 4)),
            "wTd": self._floats("wTd", wTd, (4, 4)),
            "K": self._floats("K", K, (3, 3)),
            "scene_scale": self._floats("scene_scale", scene_scale, ()),
            "episode": self._int("episode", episode, np.int64),
            "step": self._int("step", step, np.int32),
            "scene_seed": self._int("scene_seed", scene_seed, np.int64),
            "policy_version": self._int("policy_version", policy_version, np.int32),
            "beta": self._floats("beta", beta, ()),
        }
        if self.coarse_grid is None:
            if coarse_match is not None or coarse_valid is not None:
                raise ShardError(
                    "coarse_match: this buffer has no coarse grid (coarse_grid=None)", array="coarse_match"
                )
        else:
            if coarse_match is None or coarse_valid is None:
                missing = "coarse_match" if coarse_match is None else "coarse_valid"
                raise ShardError(f"{missing}: required, this buffer has coarse_grid={self.coarse_grid}", array=missing)
            row["coarse_match"] = self._floats("coarse_match", coarse_match, (*self.coarse_grid, 2))
            valid = np.asarray(coarse_valid)
            if valid.dtype != np.bool_ or valid.shape != self.coarse_grid:
                raise ShardError(
                    f"coarse_valid: {valid.dtype} {valid.shape}, expected bool {self.coarse_grid}", array="coarse_valid"
                )
            row["coarse_valid"] = valid.copy()
        for name, value in row.items():
            self._samples[name].append(value)
            self._nbytes += _dtype_of(name).itemsize * int(np.prod(np.shape(value), dtype=np.int64))

    def arrays(self) -> dict[str, np.ndarray]:
        """The buffered shard as arrays of the contract's dtypes (stacked copies)."""
        if not self._desired or not len(self):
            raise ShardError(f"cur_rgb: an empty shard (N = {len(self)}, M = {self.m})", array="cur_rgb")
        out = {DESIRED_ARRAY: np.stack(self._desired)}
        for name, values in self._samples.items():
            dtype = _dtype_of(name)
            out[name] = np.stack(values).astype(dtype, copy=False) if np.ndim(values[0]) else np.array(values, dtype)
        return out

    def _image(self, name: str, rgb: np.ndarray) -> np.ndarray:
        rgb = np.asarray(rgb)
        if rgb.dtype != np.uint8:
            raise ShardError(f"{name}: dtype {rgb.dtype}, expected uint8", array=name)
        if rgb.shape != (self.height, self.width, 3):
            raise ShardError(f"{name}: shape {rgb.shape}, expected ({self.height}, {self.width}, 3)", array=name)
        return np.array(rgb, copy=True, order="C")

    @staticmethod
    def _floats(name: str, value: Any, shape: tuple) -> np.ndarray:
        a = np.asarray(value)
        if a.dtype.kind not in "fiu" or a.shape != shape:
            raise ShardError(f"{name}: {a.dtype} {a.shape}, expected a real array of shape {shape}", array=name)
        return a.astype(_dtype_of(name), copy=True)

    @staticmethod
    def _int(name: str, value: Any, dtype: type) -> int:
        try:
            i = operator.index(value)
        except TypeError:
            raise ShardError(f"{name}: expected an integer, got {value!r}", array=name) from None
        info = np.iinfo(dtype)
        if not info.min <= i <= info.max:
            raise ShardError(f"{name}: {i} does not fit {np.dtype(dtype)}", array=name)
        return i


# -- helpers ---------------------------------------------------------------------------------------------------------
def array_sha256(a: np.ndarray) -> str:
    """sha256 of an array's bytes in C order, little-endian: what the sidecar's `checksums` hold."""
    h = hashlib.sha256()
    update_sha256(h, a)
    return "sha256:" + h.hexdigest()


def update_sha256(h: Any, a: np.ndarray) -> None:
    """Feed an array's bytes to a hashlib object, as `array_sha256` does (slices along axis 0 may come in turn)."""
    a = np.ascontiguousarray(a)
    if a.dtype.byteorder == ">":
        a = a.astype(a.dtype.newbyteorder("<"))
    h.update(memoryview(a.reshape(-1).view(np.uint8)))


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@functools.cache
def git_sha() -> str | None:
    """The project's `git rev-parse HEAD`, or None when there is no git or no repository (best effort, cached)."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    sha = out.stdout.strip()
    return sha if out.returncode == 0 and re.fullmatch(r"[0-9a-f]{40,64}", sha) else None


def _json_default(obj: Any) -> Any:
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, set | frozenset):
        return sorted(obj)
    if hasattr(obj, "model_dump"):  # a pydantic config section
        return obj.model_dump(mode="json")
    raise TypeError(f"{type(obj).__name__} is not JSON-serialisable")


def _to_json(obj: Any, what: str, *, indent: int | None = None) -> str:
    try:
        return json.dumps(obj, default=_json_default, indent=indent, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{what} must be JSON-serialisable: {e}") from None


def _tmp_name(stem: str, suffix: str) -> str:
    return f"{stem}{_TMP_SEP}{_host_tag()}{_TMP_SEP}{os.getpid()}{_TMP_SEP}{uuid.uuid4().hex[:12]}{suffix}"


def _write_json_atomic(path: Path, text: str, tmp_dir: Path) -> None:
    """Write `text` to `path` atomically: a temp file in `tmp_dir` (same filesystem), fsync, os.replace."""
    tmp = tmp_dir / _tmp_name(path.name, ".tmp")
    try:
        with open(tmp, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def _fsync_tree(path: Path) -> None:
    for dirpath, _, files in os.walk(path):
        for name in files:
            fd = os.open(os.path.join(dirpath, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        _fsync_dir(Path(dirpath))


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):  # not every filesystem lets a directory be fsynced
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _disk_bytes(path: Path) -> int:
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path) for f in files)


@functools.cache
def _host_tag() -> str:
    """This machine and PID namespace (containers may share a hostname): where a writer's pid can be checked."""
    tag = socket.gethostname()
    with contextlib.suppress(OSError):
        tag += f"@{os.stat('/proc/self/ns/pid').st_ino}"
    return re.sub(r"[^A-Za-z0-9._@-]", "_", tag)


def _writer_state(host: str, pid: int, shard_id: str) -> str:
    """ "alive", "dead" or "unknown" (another host): whether the writer of a leftover may still be writing it."""
    if host != _host_tag():
        return "unknown"
    if pid == os.getpid():
        with _IN_FLIGHT_LOCK:
            return "alive" if shard_id in _IN_FLIGHT else "dead"
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return "dead"
    except PermissionError:
        return "alive"
    return "alive"


# -- writing ---------------------------------------------------------------------------------------------------------
class DatasetWriter:
    """Publishes shards into a dataset root; creates the layout and info.json, or checks an existing root agrees."""

    def __init__(
        self,
        root: str | os.PathLike,
        *,
        height: int,
        width: int,
        K: Any,
        backend: str,
        config: Mapping[str, Any] | Any,
        codec: str = "zstd",
        config_check: Callable[[Mapping[str, Any], Mapping[str, Any]], list[str]] | None = None,
        append: bool = False,
    ) -> None:
        if codec not in _CODECS:
            raise ValueError(f"codec must be one of {_CODECS}, got {codec!r}")
        K = np.asarray(K, dtype=np.float64)
        if K.shape != (3, 3) or not np.isfinite(K).all() or K[0, 0] <= 0 or K[1, 1] <= 0:
            raise ValueError(f"K must be a finite 3x3 pinhole matrix with positive focal lengths, got {K.tolist()}")
        if height < 1 or width < 1:
            raise ValueError(f"image size must be positive, got {height}x{width}")
        self.root = Path(root)
        self.height, self.width, self.K, self.backend, self.codec = int(height), int(width), K, str(backend), codec
        self.config, self._config_check, self.append = config, config_check, bool(append)
        self.shards_dir, self.tmp_dir, self.manifest = (
            self.root / "shards",
            self.root / "_tmp",
            self.root / "manifest.jsonl",
        )
        self.shards_dir.mkdir(parents=True, exist_ok=True)
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        info = {
            "schema": SCHEMA,
            "height": self.height,
            "width": self.width,
            "K": K.tolist(),
            "backend": self.backend,
            "config": config,
            "created": _now(),
        }
        self.info = self._create_or_check_info(info)

    def _create_or_check_info(self, info: dict) -> dict:
        path = self.root / "info.json"
        text = _to_json(info, "config", indent=2) + "\n"
        if not path.exists():
            tmp = self.tmp_dir / _tmp_name("info.json", ".tmp")
            try:
                tmp.write_text(text)
                try:
                    os.link(tmp, path)  # atomic create-if-absent: of two writers creating a root at once, one wins
                except FileExistsError:
                    raise
                except OSError:  # a filesystem without hard links
                    if path.exists():
                        raise FileExistsError(path) from None
                    os.replace(tmp, path)
                return json.loads(text)
            except FileExistsError:
                pass
            finally:
                tmp.unlink(missing_ok=True)
        try:
            existing = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise ShardError(f"{path}: unreadable dataset info ({e})") from None
        problems = []
        if existing.get("schema") != SCHEMA:
            problems.append(f"schema {existing.get('schema')!r}, this code writes {SCHEMA}")
        if (existing.get("height"), existing.get("width")) != (self.height, self.width):
            problems.append(
                f"image size {existing.get('height')}x{existing.get('width')} (HxW), "
                f"this writer has {self.height}x{self.width}"
            )
        K = np.asarray(existing.get("K", np.full((3, 3), np.nan)), dtype=np.float64)
        if K.shape != (3, 3) or not np.allclose(K, self.K, rtol=1e-9, atol=1e-9):
            problems.append(f"K {existing.get('K')}, this writer has {self.K.tolist()}")
        if existing.get("backend") != self.backend:
            problems.append(f"backend {existing.get('backend')!r}, this writer has {self.backend!r}")
        if problems:
            raise ShardError(
                f"{path} disagrees with this writer: " + "; ".join(problems) + ". Use another dataset root."
            )
        differences = self._config_check(existing.get("config") or {}, info["config"]) if self._config_check else []
        if differences and not self.append:
            raise ShardError(
                f"{self.root} was made with another config, which would change what its shards contain: "
                + "; ".join(differences)
                + ". Use another run.name (or datagen.root), or set datagen.append=true to add shards made with this "
                "config (each shard's sidecar records its own; the root's record stays the first one)."
            )
        if differences:
            warnings.warn(
                f"{self.root}: appending shards made with another config: " + "; ".join(differences),
                RuntimeWarning,
                stacklevel=3,
            )
        return existing

    # -- queries ---------------------------------------------------------------------------------------------------
    def shard_path(self, key: ShardKey) -> Path:
        return self.shards_dir / f"{key.id}.zarr"

    def sidecar_path(self, key: ShardKey) -> Path:
        return self.shards_dir / f"{key.id}.json"

    def is_published(self, key: ShardKey) -> bool:
        """Whether the shard is published: its sidecar exists next to its zarr directory."""
        return self.sidecar_path(key).is_file() and self.shard_path(key).is_dir()

    # -- publish ---------------------------------------------------------------------------------------------------
    def publish(self, key: ShardKey, buffer: ShardBuffer, *, sidecar: Mapping[str, Any] | None = None) -> Path:
        """Validate, write under _tmp/, read one sample back, rename into shards/, write the sidecar, log it.

        Returns the shard's path. A ShardError for invalid data (nothing is written) or when the key is already
        published (never overwritten). If anything fails after the rename, the shard is taken out of shards/ again;
        after a crash the leftovers are invisible to readers and `clean_stale` removes them.
        """
        final, side = self.shard_path(key), self.sidecar_path(key)
        self._refuse_existing(key)
        extra = dict(sidecar or {})
        arrays = buffer.arrays()
        validate_arrays(arrays, height=self.height, width=self.width)
        meta = self._sidecar(key, arrays, extra)  # also checks that the extra fields are JSON

        with _IN_FLIGHT_LOCK:
            if key.id in _IN_FLIGHT:
                raise ShardError(f"shard {key.id} is being published by another thread of this process", shard=key.id)
            _IN_FLIGHT.add(key.id)
        tmp = self.tmp_dir / _tmp_name(key.id, ".zarr")
        renamed = False
        try:
            started = time.perf_counter()
            self._write_group(tmp, key, arrays, meta)
            self._read_back(tmp, key, arrays)
            _fsync_tree(tmp)
            meta["nbytes_disk"] = _disk_bytes(tmp)
            meta["write_s"] = round(time.perf_counter() - started, 4)
            try:
                os.rename(tmp, final)  # fails on an existing non-empty directory: never overwrites a shard
            except OSError as e:
                if final.exists():
                    raise ShardError(
                        f"shard {key.id} already exists at {final}; refusing to overwrite", shard=key.id
                    ) from None
                raise ShardError(f"shard {key.id}: cannot move {tmp} to {final}: {e}", shard=key.id) from e
            renamed = True
            _fsync_dir(self.shards_dir)
            _write_json_atomic(side, _to_json(meta, "sidecar", indent=2) + "\n", self.tmp_dir)  # publishes the shard
            renamed = False  # published: nothing to roll back from here on
            _fsync_dir(self.shards_dir)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            if renamed:  # take the shard out of shards/ (one rename), then delete it
                with contextlib.suppress(OSError):
                    trash = self.tmp_dir / _tmp_name(key.id, ".zarr")
                    os.rename(final, trash)
                    shutil.rmtree(trash, ignore_errors=True)
            raise
        finally:
            with _IN_FLIGHT_LOCK:
                _IN_FLIGHT.discard(key.id)
        self._append_manifest(meta)
        return final

    def _refuse_existing(self, key: ShardKey) -> None:
        final, side = self.shard_path(key), self.sidecar_path(key)
        if self.is_published(key):
            raise ShardError(f"shard {key.id} is already published at {final}; refusing to overwrite", shard=key.id)
        if final.exists():
            raise ShardError(
                f"shard {key.id}: {final} exists without its sidecar (a crashed publish, or one in progress); "
                "DatasetWriter.clean_stale() removes it once its writer is gone",
                shard=key.id,
            )
        if side.exists():
            raise ShardError(f"shard {key.id}: {side} exists without its data; refusing to overwrite", shard=key.id)

    def _sidecar(self, key: ShardKey, arrays: dict[str, np.ndarray], extra: dict) -> dict:
        meta: dict[str, Any] = {
            "id": key.id,
            "producer": key.producer,
            "round": key.round,
            "index": key.index,
            "schema": SCHEMA,
            "backend": self.backend,
            "n": int(arrays["cur_rgb"].shape[0]),
            "m": int(arrays[DESIRED_ARRAY].shape[0]),
            "coarse": "coarse_match" in arrays,
            "policy_versions": sorted({int(v) for v in np.unique(arrays["policy_version"])}),
            "episodes": int(np.unique(arrays["episode"]).size),
            "seeds": [int(s) for s in np.unique(arrays["scene_seed"])],
            "checksums": {name: array_sha256(arrays[name]) for name in sorted(arrays)},
            "nbytes_raw": int(sum(a.nbytes for a in arrays.values())),
            "codec": f"blosc-{self.codec}-3+crc32c" if self.codec != "none" else "crc32c",
            "git_sha": git_sha(),
            "config": self.config,
            "writer": {"host": socket.gethostname(), "pid": os.getpid()},
            "created": _now(),
        }
        clash = sorted(set(extra) & (set(meta) | {"nbytes_disk", "write_s"}))
        if clash:
            raise ValueError(f"sidecar fields {clash} are set by publish; choose other names")
        meta.update(extra)
        _to_json(meta, "sidecar")
        return meta

    def _write_group(self, path: Path, key: ShardKey, arrays: dict[str, np.ndarray], meta: dict) -> None:
        import zarr

        group = zarr.open_group(
            path,
            mode="w-",
            zarr_format=3,
            attributes={
                "schema": SCHEMA,
                "producer": key.producer,
                "round": key.round,
                "index": key.index,
                "id": key.id,
                "backend": self.backend,
                "created": meta["created"],
                "writer": {"host": _host_tag(), "pid": os.getpid()},
            },
        )
        for name in sorted(arrays):
            data = arrays[name]
            chunks, shards = _chunking(name, data)
            arr = group.create_array(
                name,
                shape=data.shape,
                dtype=data.dtype,
                chunks=chunks,
                shards=shards,
                compressors=_compressors(name, data.dtype, self.codec),
                fill_value=0,
                config={"write_empty_chunks": True},  # every chunk on disk: a missing file is then an error
            )
            arr[...] = data

    def _read_back(self, path: Path, key: ShardKey, arrays: dict[str, np.ndarray]) -> None:
        """Open the written group afresh and compare its attributes, shapes and the last sample with the buffer."""
        import zarr

        group = zarr.open_group(path, mode="r")
        if group.attrs.get("id") != key.id or group.attrs.get("schema") != SCHEMA:
            raise ShardError(f"shard {key.id}: read-back attributes differ: {dict(group.attrs)}", shard=key.id)
        n = arrays["cur_rgb"].shape[0]
        i = n - 1
        j = int(arrays["des_index"][i])
        for name, data in arrays.items():
            stored = group[name]
            row = j if name == DESIRED_ARRAY else i
            back = stored[row]
            if stored.shape != data.shape or stored.dtype != data.dtype or not np.array_equal(back, data[row]):
                raise ShardError(
                    f"{name}: read-back of sample {row} differs from the buffer ({stored.dtype} {stored.shape})",
                    array=name,
                    shard=key.id,
                )

    def _append_manifest(self, meta: dict) -> None:
        line = (_to_json(meta, "sidecar") + "\n").encode()
        try:
            fd = os.open(self.manifest, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                written = os.write(fd, line)  # one write with O_APPEND: lines from concurrent writers never interleave
            finally:
                os.close(fd)
            if written != len(line):
                raise OSError(f"short write ({written} of {len(line)} bytes)")
        except OSError as e:  # the shard is published (its sidecar is the record); the manifest is a log
            warnings.warn(f"{self.manifest}: could not append shard {meta['id']}: {e}", RuntimeWarning, stacklevel=3)

    # -- cleanup ---------------------------------------------------------------------------------------------------
    def clean_stale(self, *, min_age_s: float = 600.0) -> list[str]:
        """Remove what crashed publishes left: `_tmp/` entries and `shards/<id>.zarr` without a sidecar.

        A leftover of a dead process on this host goes at once; one of a live writer (another process, or a publish
        in flight in this one) stays. A writer on another host cannot be checked, so its leftovers go only once
        untouched for `min_age_s` (a publish takes seconds): producers may call this at start while others publish.
        Returns the removed paths, relative to the root.
        """
        removed: list[str] = []
        now = time.time()

        def stale(p: Path, owner: tuple[str, int] | None, shard_id: str) -> bool:
            state = "unknown" if owner is None else _writer_state(owner[0], owner[1], shard_id)
            if state != "unknown":
                return state == "dead"
            try:
                st = p.lstat()
            except FileNotFoundError:
                return False
            return now - max(st.st_mtime, st.st_ctime) >= min_age_s

        def remove(p: Path) -> None:
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)
            if not p.exists():
                removed.append(p.relative_to(self.root).as_posix())

        if self.tmp_dir.is_dir():
            for p in sorted(self.tmp_dir.iterdir()):
                parts = p.name.split(_TMP_SEP)
                owner = (parts[1], int(parts[2])) if len(parts) == 4 and parts[2].isdigit() else None
                if stale(p, owner, parts[0].removesuffix(".json")):
                    remove(p)
        for p in sorted(self.shards_dir.glob("*.zarr")):
            if (self.shards_dir / f"{p.stem}.json").exists():
                continue
            if stale(p, _read_writer(p), p.stem) and not (self.shards_dir / f"{p.stem}.json").exists():
                remove(p)
        return removed


def _read_writer(path: Path) -> tuple[str, int] | None:
    try:
        writer = json.loads((path / "zarr.json").read_text())["attributes"]["writer"]
        return str(writer["host"]), int(writer["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _chunking(name: str, data: np.ndarray) -> tuple[tuple[int, ...], tuple[int, ...] | None]:
    """(inner chunk shape, shard shape or None): images one sample per chunk, all in one Zarr shard per array."""
    n = data.shape[0]
    if name in IMAGE_ARRAYS:
        rows = 1
    else:
        per_sample = max(1, data[:1].nbytes)
        rows = max(1, min(n, _SMALL_CHUNK_BYTES // per_sample))
    chunks = (rows, *data.shape[1:])
    return chunks, (data.shape if rows < n else None)


def _compressors(name: str, dtype: np.dtype, codec: str) -> list:
    from zarr.codecs import BloscCodec, Crc32cCodec

    if codec == "none":
        return [Crc32cCodec()]
    if name in IMAGE_ARRAYS:
        shuffle = _IMAGE_SHUFFLE
    elif dtype == np.bool_:
        shuffle = "bitshuffle"  # 0/1 bytes: seven empty bit planes
    else:
        shuffle = "shuffle"  # byte shuffle for numbers
    return [BloscCodec(cname=codec, clevel=3, shuffle=shuffle), Crc32cCodec()]


# -- reading ---------------------------------------------------------------------------------------------------------
def _read_array(meta: ShardMeta, name: str, array: Any, sel: slice) -> np.ndarray:
    """`array[sel]` decoded; a chunk that fails to decode (CRC32C, Blosc, size) is a DamagedShardError naming it."""
    try:
        return np.asarray(array[sel])
    except Exception as e:
        where = name if sel == slice(None) else f"{name}[{sel.start}:{sel.stop}]"
        raise DamagedShardError(
            f"shard {meta.id}: {where}: corrupt or unreadable ({type(e).__name__}: {e})", array=name, shard=meta.id
        ) from e


@dataclass(frozen=True)
class ShardMeta:
    """A published shard: its id, key, zarr path, N samples, M desired images and its sidecar."""

    id: str
    key: ShardKey
    path: Path
    n: int
    m: int
    sidecar: dict = field(compare=False, hash=False, repr=False)


class DatasetReader:
    """Reads a dataset root: lists published shards (`refresh` picks up new ones) and reads contiguous slices.

    Zarr arrays are opened lazily and cached per process; open the reader inside each DataLoader worker (Zarr runs
    its I/O on a background asyncio thread, which does not survive a fork).
    """

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)
        path = self.root / "info.json"
        if not path.is_file():
            raise FileNotFoundError(f"{self.root}: not a dataset root (no info.json)")
        try:
            self.info: dict = json.loads(path.read_text())
        except ValueError as e:
            raise ShardError(f"{path}: unreadable dataset info ({e})") from None
        if self.info.get("schema") != SCHEMA:
            raise ShardError(f"{path}: dataset schema {self.info.get('schema')!r}, this code reads schema {SCHEMA}")
        self.height, self.width = int(self.info["height"]), int(self.info["width"])
        self.shards: list[ShardMeta] = []
        self._by_id: dict[str, ShardMeta] = {}
        self._open: dict[str, dict[str, Any]] = {}
        self._pid = os.getpid()
        self.refresh()

    def refresh(self) -> list[ShardMeta]:
        """Re-list the published shards (those whose sidecar exists next to their zarr), sorted by key."""
        found: dict[str, ShardMeta] = {}
        shards_dir = self.root / "shards"
        names = sorted(shards_dir.glob("*.json")) if shards_dir.is_dir() else []
        for side in names:
            shard_id = side.stem
            zarr_dir = shards_dir / f"{shard_id}.zarr"
            if not zarr_dir.is_dir():
                continue
            if shard_id in self._by_id:
                found[shard_id] = self._by_id[shard_id]
                continue
            try:
                key = ShardKey.from_id(shard_id)
            except ValueError:
                continue  # not ours
            try:
                meta = json.loads(side.read_text())
                found[shard_id] = ShardMeta(shard_id, key, zarr_dir, int(meta["n"]), int(meta["m"]), meta)
            except (OSError, ValueError, KeyError, TypeError) as e:
                raise ShardError(f"shard {shard_id}: unreadable sidecar {side}: {e}", shard=shard_id) from None
        self.shards = sorted(found.values(), key=lambda s: s.key)
        self._by_id = {s.id: s for s in self.shards}
        for gone in set(self._open) - set(found):
            del self._open[gone]
        return list(self.shards)

    def __len__(self) -> int:
        return sum(s.n for s in self.shards)

    def __iter__(self) -> Iterator[ShardMeta]:
        return iter(self.shards)

    def shard(self, shard: ShardMeta | str) -> ShardMeta:
        """The ShardMeta of an id (refreshing once if it is new)."""
        if isinstance(shard, ShardMeta):
            return shard
        if shard not in self._by_id:
            self.refresh()
        if shard not in self._by_id:
            raise KeyError(f"{self.root}: no published shard {shard!r}")
        return self._by_id[shard]

    def arrays(self, shard: ShardMeta | str) -> dict[str, Any]:
        """The shard's zarr arrays (opened once per process), checked against its sidecar's N and M."""
        meta = self.shard(shard)
        if os.getpid() != self._pid:  # forked: zarr handles of the parent are not ours
            self._open.clear()
            self._pid = os.getpid()
        if meta.id not in self._open:
            import zarr

            try:
                group = zarr.open_group(meta.path, mode="r")
                arrays = dict(group.arrays())
            except Exception as e:
                raise DamagedShardError(f"shard {meta.id}: cannot open {meta.path}: {e}", shard=meta.id) from e
            for name in REQUIRED_ARRAYS:
                if name not in arrays:
                    raise DamagedShardError(
                        f"shard {meta.id}: {name}: missing from {meta.path}", array=name, shard=meta.id
                    )
            for name, a in arrays.items():
                if name not in ARRAY_NAMES:
                    raise DamagedShardError(
                        f"shard {meta.id}: {name}: not an array of this format", array=name, shard=meta.id
                    )
                expected = meta.m if name == DESIRED_ARRAY else meta.n
                if a.shape[0] != expected:
                    raise DamagedShardError(
                        f"shard {meta.id}: {name}: shape {a.shape}, the sidecar says {expected} rows",
                        array=name,
                        shard=meta.id,
                    )
            self._verify(meta, arrays)
            self._open[meta.id] = arrays
        return self._open[meta.id]

    @staticmethod
    def _verify(meta: ShardMeta, arrays: dict[str, Any]) -> None:
        # Zarr hands back the fill value for a chunk whose file is gone, and a chunk of the wrong size can still
        # decode: only the published checksums tell damage from data. A shard is ~20 MB and this runs once per
        # process (155 ms for a 100-sample 256 px shard, 2 cores), so every array is decoded whole and hashed first.
        stored = meta.sidecar.get("checksums")
        if not isinstance(stored, dict):
            raise DamagedShardError(
                f"shard {meta.id}: its sidecar has no checksums, so it cannot be verified", shard=meta.id
            )
        for name in sorted(set(stored) | set(arrays)):
            if name not in arrays:
                raise DamagedShardError(
                    f"shard {meta.id}: {name}: in the sidecar's checksums but not in {meta.path}",
                    array=name,
                    shard=meta.id,
                )
            if name not in stored:
                raise DamagedShardError(
                    f"shard {meta.id}: {name}: no checksum in the sidecar", array=name, shard=meta.id
                )
            data = _read_array(meta, name, arrays[name], slice(None))
            if array_sha256(data) != stored[name]:
                raise DamagedShardError(
                    f"shard {meta.id}: {name}: checksum mismatch: the data differs from what was published "
                    "(a missing or damaged chunk, or a sidecar that disagrees with the arrays)",
                    array=name,
                    shard=meta.id,
                )

    def quarantine(self, shard: ShardMeta | str, reason: str) -> Path:
        """Move a damaged shard out of `shards/` into `<root>/quarantine/` with a `<id>.reason.txt`; returns its
        folder there. The sidecar goes first, so the shard stops being published in one rename; a producer that
        resumes then makes it again. Another process may have moved it already: that is not an error."""
        meta = self.shard(shard)
        qdir = self.root / "quarantine"
        qdir.mkdir(exist_ok=True)
        stem = meta.id if not (qdir / f"{meta.id}.json").exists() else _tmp_name(meta.id, "")
        side = meta.path.with_suffix(".json")
        with contextlib.suppress(FileNotFoundError):
            os.rename(side, qdir / f"{stem}.json")
        with contextlib.suppress(FileNotFoundError):
            os.rename(meta.path, qdir / f"{stem}.zarr")
        (qdir / f"{stem}.reason.txt").write_text(reason.rstrip() + "\n")
        self._open.pop(meta.id, None)
        self.refresh()
        return qdir

    def read(
        self,
        shard: ShardMeta | str,
        start: int = 0,
        stop: int | None = None,
        names: Sequence[str] | None = None,
        *,
        all_desired: bool = False,
    ) -> dict[str, np.ndarray]:
        """Samples [start, stop) of a shard (a contiguous slice: fast), as arrays of the contract's dtypes.

        `des_rgb[des_index[i]]` is always sample i's desired image. By default `des_rgb` holds only the desired
        images the slice uses (the stored range des_index.min()..max()) and `des_index` is rebased to it;
        `all_desired=True` returns the whole des_rgb and des_index as stored. `names` picks arrays (default: all).
        """
        meta = self.shard(shard)
        stop = meta.n if stop is None else stop
        if not 0 <= start <= stop <= meta.n:
            raise ValueError(f"shard {meta.id}: slice [{start}:{stop}] is outside [0:{meta.n}]")
        arrays = self.arrays(meta)
        wanted = list(arrays) if names is None else list(dict.fromkeys(names))
        for name in wanted:
            if name not in arrays:
                known = "" if name in ARRAY_NAMES else f"; arrays are {', '.join(ARRAY_NAMES)}"
                raise ShardError(f"shard {meta.id}: no array {name!r}{known}", array=name, shard=meta.id)

        def get(name: str, sel: slice) -> np.ndarray:
            return _read_array(meta, name, arrays[name], sel)

        out = {name: get(name, slice(start, stop)) for name in wanted if name != DESIRED_ARRAY}
        if DESIRED_ARRAY in wanted or ("des_index" in wanted and not all_desired):
            des_index = out["des_index"] if "des_index" in out else get("des_index", slice(start, stop))
            if all_desired:
                lo, hi = 0, meta.m
            elif des_index.size:
                lo, hi = int(des_index.min()), int(des_index.max()) + 1
            else:
                lo = hi = 0
            if lo < 0 or hi > meta.m:
                raise DamagedShardError(
                    f"shard {meta.id}: des_index[{start}:{stop}] spans [{lo}, {hi}), outside [0, M={meta.m})",
                    array="des_index",
                    shard=meta.id,
                )
            if DESIRED_ARRAY in wanted:
                out[DESIRED_ARRAY] = get(DESIRED_ARRAY, slice(lo, hi))
            if "des_index" in out and lo:
                out["des_index"] = (des_index - lo).astype(np.int32)
        return {name: out[name] for name in wanted}

    def disk_bytes(self) -> int:
        """Bytes on disk of the published shards (zarr directories and sidecars)."""
        return sum(_disk_bytes(s.path) + (s.path.with_suffix(".json")).stat().st_size for s in self.shards)

    def __repr__(self) -> str:
        return f"DatasetReader({str(self.root)!r}: {len(self.shards)} shards, {len(self)} samples)"


__all__ = [
    "ARRAY_NAMES",
    "PRODUCERS",
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
    "git_sha",
    "update_sha256",
    "validate_arrays",
]
