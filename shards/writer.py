"""Publishing shards into a dataset root, and cleaning up after publishes that crashed.

`DatasetWriter.publish` takes a `ShardBuffer`, validates it, writes it under `_tmp/`, reads one sample back, renames
the folder into `shards/` and writes the sidecar last (the layout is in `shards.format`). A crash at any point leaves
nothing visible; `DatasetWriter.clean_stale` removes the leftovers. Several processes may publish into one root at
once, each with its own keys. `quarantine` moves a damaged shard out of `shards/`. Every file and folder is published
through `file_io`.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import shutil
import socket
import subprocess
import threading
import time
import uuid
import warnings
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from file_io import atomic_dir, tree_bytes, write_text
from shards.buffer import ShardBuffer
from shards.format import (
    DESIRED_ARRAY,
    IMAGE_ARRAYS,
    INFO_FILE,
    MANIFEST_FILE,
    QUARANTINE_DIR,
    SCHEMA,
    SHARDS_DIR,
    TMP_DIR,
    ShardError,
    ShardKey,
    array_sha256,
)
from shards.validation import validate_arrays

# Measured on 400 renders of the smoke scenes (256x256, MuJoCo, camera effects on half the scenes), Blosc zstd-3:
# noshuffle compresses them 2.00x at 1.3 ms/image, bitshuffle 1.68x at 0.9 ms/image; both decode in 0.2 ms/image.
# Real renders carry noise and texture, so the bit planes that bitshuffle separates are not sparse.
_IMAGE_SHUFFLE = "noshuffle"
_CODECS = ("zstd", "lz4", "lz4hc", "zlib", "blosclz", "none")
# Inner chunks of non-image arrays hold about this many raw bytes (the whole array when it is smaller).
_SMALL_CHUNK_BYTES = 1 << 20
_TMP_SEP = "~"

# Shard ids this process is publishing right now, so that its own clean_stale leaves them alone.
_IN_FLIGHT: set[str] = set()
_IN_FLIGHT_LOCK = threading.Lock()


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


def _tmp_prefix(stem: str) -> str:
    """`<stem>~<host>~<pid>~`: file_io appends a random part, and `clean_stale` reads the writer back from it."""
    return f"{stem}{_TMP_SEP}{_host_tag()}{_TMP_SEP}{os.getpid()}{_TMP_SEP}"


def _unique_name(stem: str, suffix: str) -> str:
    return f"{_tmp_prefix(stem)}{uuid.uuid4().hex[:16]}{suffix}"


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
            self.root / SHARDS_DIR,
            self.root / TMP_DIR,
            self.root / MANIFEST_FILE,
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
        path = self.root / INFO_FILE
        text = _to_json(info, "config", indent=2) + "\n"
        if not path.exists():
            try:
                # Exclusive: of two writers creating a root at once, one wins and the other checks against it.
                write_text(path, text, tmp_dir=self.tmp_dir, prefix=_tmp_prefix(INFO_FILE), exclusive=True)
                return json.loads(text)
            except FileExistsError:
                pass
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
        """Where shard `key`'s Zarr group is once published."""
        return self.shards_dir / f"{key.id}.zarr"

    def sidecar_path(self, key: ShardKey) -> Path:
        """Where shard `key`'s sidecar is once published (its existence is what publishes the shard)."""
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
        renamed = False
        try:
            started = time.perf_counter()
            self._write_folder(key, arrays, meta)
            renamed = True
            meta["write_s"] = round(time.perf_counter() - started, 4)
            write_text(
                side, _to_json(meta, "sidecar", indent=2) + "\n", tmp_dir=self.tmp_dir, prefix=_tmp_prefix(side.name)
            )
            renamed = False  # published: nothing to roll back from here on
        except BaseException:
            if renamed:  # take the shard out of shards/ (one rename), then delete it
                with contextlib.suppress(OSError):
                    trash = self.tmp_dir / _unique_name(key.id, ".zarr")
                    os.rename(final, trash)
                    shutil.rmtree(trash, ignore_errors=True)
            raise
        finally:
            with _IN_FLIGHT_LOCK:
                _IN_FLIGHT.discard(key.id)
        self._append_manifest(meta)
        return final

    def _write_folder(self, key: ShardKey, arrays: dict[str, np.ndarray], meta: dict) -> None:
        """Write the Zarr group under _tmp/, read it back, and rename it into shards/ (never over an existing one)."""
        final, written = self.shard_path(key), False
        try:
            with atomic_dir(
                final, overwrite=False, tmp_dir=self.tmp_dir, prefix=_tmp_prefix(key.id), suffix=".zarr"
            ) as tmp:
                self._write_group(tmp, key, arrays, meta)
                self._read_back(tmp, key, arrays)
                meta["nbytes_disk"] = tree_bytes(tmp)
                written = True
        except FileExistsError:
            if not written:
                raise
            raise ShardError(f"shard {key.id} already exists at {final}; refusing to overwrite", shard=key.id) from None
        except OSError as e:
            if not written:
                raise  # the write itself failed: say how, as the file system did
            raise ShardError(f"shard {key.id}: cannot publish it as {final}: {e}", shard=key.id) from e

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
            fd = os.open(self.manifest, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)  # less the umask, as file_io
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
        if self.tmp_dir.is_dir():
            for p in sorted(self.tmp_dir.iterdir()):
                parts = p.name.split(_TMP_SEP)
                owner = (parts[1], int(parts[2])) if len(parts) == 4 and parts[2].isdigit() else None
                if _is_stale(p, owner, parts[0].removesuffix(".json"), now, min_age_s):
                    self._remove(p, removed)
        for p in sorted(self.shards_dir.glob("*.zarr")):
            if (self.shards_dir / f"{p.stem}.json").exists():
                continue
            # The sidecar is looked for again: a publish may have completed while its writer was checked.
            if (
                _is_stale(p, _read_writer(p), p.stem, now, min_age_s)
                and not (self.shards_dir / f"{p.stem}.json").exists()
            ):
                self._remove(p, removed)
        return removed

    def _remove(self, p: Path, removed: list[str]) -> None:
        """Delete a leftover file or folder; list it in `removed` (relative to the root) once it is gone."""
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
        if not p.exists():
            removed.append(p.relative_to(self.root).as_posix())


def _is_stale(p: Path, owner: tuple[str, int] | None, shard_id: str, now: float, min_age_s: float) -> bool:
    """Whether a leftover is no one's work in progress: its writer (host, pid) is known dead, or, where the writer
    cannot be checked, it has been untouched for `min_age_s` at time `now`."""
    state = "unknown" if owner is None else _writer_state(owner[0], owner[1], shard_id)
    if state != "unknown":
        return state == "dead"
    try:
        st = p.lstat()
    except FileNotFoundError:
        return False
    return now - max(st.st_mtime, st.st_ctime) >= min_age_s


def quarantine(root: str | os.PathLike, shard_id: str, reason: str) -> Path:
    """Move shard `shard_id` of dataset `root` out of `shards/` into `<root>/quarantine/`, with `<id>.reason.txt`.

    Returns the quarantine folder. The sidecar goes first, so the shard stops being published in one rename; a
    producer that resumes then makes it again. A part that is already gone (another process moved it) is skipped, not
    an error. If the id is in quarantine already, the new copy gets a unique name beside it.
    """
    root = Path(root)
    qdir = root / QUARANTINE_DIR
    qdir.mkdir(exist_ok=True)
    stem = shard_id if not (qdir / f"{shard_id}.json").exists() else _unique_name(shard_id, "")
    with contextlib.suppress(FileNotFoundError):
        os.rename(root / SHARDS_DIR / f"{shard_id}.json", qdir / f"{stem}.json")
    with contextlib.suppress(FileNotFoundError):
        os.rename(root / SHARDS_DIR / f"{shard_id}.zarr", qdir / f"{stem}.zarr")
    write_text(qdir / f"{stem}.reason.txt", reason.rstrip() + "\n")
    return qdir


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
