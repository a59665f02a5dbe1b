"""Reading a dataset root: the published shards, verified against their checksums, read in contiguous slices.

A shard is published once its sidecar exists next to its Zarr group (the layout is in `shards.format`). The first
time a process opens a shard, every array is decoded whole and compared with the sidecar's sha256; a shard whose bytes
are not what was published is a `DamagedShardError`, never data.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from file_io import tree_bytes
from shards import writer
from shards.format import (
    ARRAY_NAMES,
    DESIRED_ARRAY,
    INFO_FILE,
    REQUIRED_ARRAYS,
    SCHEMA,
    SHARDS_DIR,
    ShardError,
    ShardKey,
    array_sha256,
)


class DamagedShardError(ShardError):
    """A published shard whose bytes on disk are not what was published: a missing or damaged chunk, an array that
    is gone, or a sidecar that disagrees with the arrays. Readers refuse it; the training stream quarantines it."""


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
        path = self.root / INFO_FILE
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
        shards_dir = self.root / SHARDS_DIR
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
        qdir = writer.quarantine(self.root, meta.id, reason)  # moving files is the writer's; the reader forgets it
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
        return sum(tree_bytes(s.path) + (s.path.with_suffix(".json")).stat().st_size for s in self.shards)

    def __repr__(self) -> str:
        return f"DatasetReader({str(self.root)!r}: {len(self.shards)} shards, {len(self)} samples)"
