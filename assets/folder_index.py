"""A folder listing cached as JSON and trusted until the folder changes.

Datasets such as Google Scanned Objects hold thousands of folders, often on a network file system where listing is
slow, and every data-generation worker needs the same list. The first worker walks the tree and writes the index; the
others read it and check it with one `stat` per directory and one listing of the root, instead of a walk.

Validity rule: adding, removing or renaming an entry in a directory changes that directory's mtime, so the index is
valid while every recorded directory keeps its recorded mtime (and the root keeps its names, since the index file
itself lives there). Replacing a file's contents under the same name is not detected; that does not change the list.
Like git's "racily clean" check, a directory whose mtime is within two seconds of the walk is not trusted, because a
change in the same clock tick would leave its mtime unchanged.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from file_io import write_json

INDEX_FILE = ".cnsv2_index.json"
_VERSION = 1
_RACY_NS = 2_000_000_000


@dataclass(frozen=True)
class FolderIndex:
    """The entries of a folder, where their cache lives (None when no cache could be written) and whether it was hit."""

    entries: list[dict[str, Any]]
    cache_path: Path | None
    from_cache: bool


def walk(root: Path) -> tuple[dict[str, int], list[str]]:
    """All directories (relative path -> mtime_ns) and files (relative POSIX paths) under root, hidden ones skipped."""
    dirs: dict[str, int] = {}
    files: list[str] = []
    seen: set[str] = set()
    for current, subdirs, names in os.walk(root, followlinks=True):
        real = os.path.realpath(current)
        if real in seen:  # a symlink loop; followlinks is on because datasets are often linked in
            subdirs[:] = []
            continue
        seen.add(real)
        rel = Path(current).relative_to(root).as_posix()
        dirs[rel] = os.stat(current).st_mtime_ns
        subdirs[:] = sorted(d for d in subdirs if not d.startswith("."))
        prefix = "" if rel == "." else rel + "/"
        files.extend(prefix + n for n in sorted(names) if not n.startswith("."))
    return dirs, sorted(files)


def cached_index(
    root: Path,
    key: str,
    classify: Callable[[list[str]], list[dict[str, Any]]],
    cache_dir: str | os.PathLike[str] | None = None,
) -> FolderIndex:
    """classify(files under root), read from the index cache when the folder has not changed since it was written."""
    root = Path(root).resolve()
    candidates = _cache_candidates(root, cache_dir)
    for path in candidates:
        entries = _read_valid(path, root, key)
        if entries is not None:
            return FolderIndex(entries, path, True)

    scanned_at = time.time_ns()
    dirs, files = walk(root)
    entries = classify(files)
    record = {"scanned_at_ns": scanned_at, "root_names": _root_names(root), "dirs": dirs, "entries": entries}
    for path in candidates:
        if _write(path, key, record):
            return FolderIndex(entries, path, False)
    warnings.warn(f"could not write an index cache for {root} (tried {', '.join(map(str, candidates))})", stacklevel=3)
    return FolderIndex(entries, None, False)


def _cache_candidates(root: Path, cache_dir: str | os.PathLike[str] | None) -> list[Path]:
    digest = hashlib.sha256(str(root).encode()).hexdigest()[:16]
    if cache_dir is not None:
        return [Path(cache_dir) / f"index-{digest}.json"]
    home = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "cnsv2" / f"index-{digest}.json"
    return [root / INDEX_FILE, home]


def _root_names(root: Path) -> list[str]:
    return sorted(n for n in os.listdir(root) if not n.startswith("."))


def _read_valid(path: Path, root: Path, key: str) -> list[dict[str, Any]] | None:
    try:
        data = json.loads(path.read_text())
        record = data["indexes"][key]
        if data.get("version") != _VERSION:
            return None
        if record["root_names"] != _root_names(root):
            return None
        trusted_before = record["scanned_at_ns"] - _RACY_NS
        for rel, mtime in record["dirs"].items():
            if rel == ".":
                continue  # the root's own mtime moves whenever the index file is written; its names were compared
            if mtime >= trusted_before or os.stat(root / rel).st_mtime_ns != mtime:
                return None
        return list(record["entries"])
    except (OSError, ValueError, KeyError, TypeError):
        # Missing, half-written by a concurrent worker, or from another version: all just mean "walk again".
        return None


def _write(path: Path, key: str, record: dict[str, Any]) -> bool:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            data = json.loads(path.read_text())
            if data.get("version") != _VERSION or not isinstance(data.get("indexes"), dict):
                raise ValueError
        except (OSError, ValueError):
            data = {"version": _VERSION, "indexes": {}}
        data["indexes"][key] = record
        write_json(path, data)  # a concurrent reader sees the old index or the new one, never half of one
        return True
    except OSError:
        return False
