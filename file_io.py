"""Atomic file writes: a reader sees the old content or the new, never part of one, and a crash leaves no visible half.

Every file or folder that other code (or another process) may read while it is being written goes through here:
configs, dataset info and sidecars, folder indexes, checkpoints, shipped policies, USD layers and textures. That gives
the project one policy:

- The new content is written under a unique temporary name (`<prefix><random hex><suffix>`, by default
  `.<name>.<hex>.tmp`) in the target's folder, or in `tmp_dir` when the caller wants its leftovers elsewhere (it
  must be on the same file system, since a rename cannot cross one).
- The file is flushed and fsynced, renamed over the target with `os.replace`, and the target's folder is fsynced, so
  that after a power cut the target holds either all of the old content or all of the new.
- On any failure the temporary is removed and the target is left as it was.
- New files get mode 0o666 and new folders 0o777, less the process umask, as `open` and `mkdir` give them.
  `tempfile.mkstemp` and `mkdtemp` make them private (0o600, 0o700), and so does safetensors for the files it
  writes, which left checkpoints and configs unreadable to the other users of a shared run folder. A published
  folder's files are given the ordinary modes too, whoever wrote them.

It is a top-level module, not part of a package, because every layer writes files: `configs` and `assets` are leaves
below `sim`, and `shards` a leaf beside `configs`, so the one place all of them may import from is a leaf below them
all. It uses only the standard library.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import stat
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

__all__ = [
    "atomic_dir",
    "atomic_path",
    "fsync_dir",
    "fsync_tree",
    "tree_bytes",
    "write_bytes",
    "write_json",
    "write_text",
]


def write_bytes(
    path: str | os.PathLike[str],
    data: bytes | bytearray | memoryview,
    *,
    tmp_dir: str | os.PathLike[str] | None = None,
    prefix: str | None = None,
    suffix: str = ".tmp",
    exclusive: bool = False,
) -> Path:
    """Write `data` to `path` atomically and durably (see the module docstring); returns `path` as a Path.

    `tmp_dir`, `prefix` and `suffix` place and name the temporary file. With `exclusive=True` the file is created
    only if `path` does not exist yet (a FileExistsError otherwise), so that of several processes creating it at
    once exactly one wins. The parent folder must exist (FileNotFoundError). OSError from the file system
    propagates, with the target untouched and no temporary left.
    """
    path = Path(path)
    tmp = _temp_name(path, tmp_dir, prefix, suffix)
    try:
        # O_EXCL: a name that somehow exists is an error, never a file shared with another writer.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        _commit(tmp, path, exclusive)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    return path


def write_text(
    path: str | os.PathLike[str],
    text: str,
    *,
    encoding: str = "utf-8",
    tmp_dir: str | os.PathLike[str] | None = None,
    prefix: str | None = None,
    suffix: str = ".tmp",
    exclusive: bool = False,
) -> Path:
    """Write `text` (encoded with `encoding`) to `path` atomically; the arguments and errors are `write_bytes`'s."""
    data = text.encode(encoding)
    return write_bytes(path, data, tmp_dir=tmp_dir, prefix=prefix, suffix=suffix, exclusive=exclusive)


def write_json(
    path: str | os.PathLike[str],
    obj: Any,
    *,
    indent: int | None = None,
    default: Callable[[Any], Any] | None = None,
    allow_nan: bool = False,
    tmp_dir: str | os.PathLike[str] | None = None,
    prefix: str | None = None,
    suffix: str = ".tmp",
    exclusive: bool = False,
) -> Path:
    """Write `obj` as JSON (UTF-8, one trailing newline) to `path` atomically.

    `indent` and `default` are `json.dumps`'s. NaN and infinities are refused unless `allow_nan` (they are not JSON,
    and many readers reject them). A TypeError or ValueError for what cannot be encoded is raised before anything is
    written; the other arguments and errors are `write_bytes`'s.
    """
    text = json.dumps(obj, indent=indent, default=default, allow_nan=allow_nan) + "\n"
    return write_text(path, text, tmp_dir=tmp_dir, prefix=prefix, suffix=suffix, exclusive=exclusive)


@contextlib.contextmanager
def atomic_path(
    path: str | os.PathLike[str],
    *,
    tmp_dir: str | os.PathLike[str] | None = None,
    prefix: str | None = None,
    suffix: str = ".tmp",
) -> Iterator[Path]:
    """Yield a temporary path for a writer that must create the file itself (a USD exporter, a PNG encoder).

    The body writes the file at the yielded path; on a clean exit the file is fsynced, renamed over `path` and the
    folder fsynced. If the body raises, or writes nothing (FileNotFoundError), the temporary is removed and `path`
    keeps its old content. `suffix` matters to writers that pick the format from the file name.
    """
    path = Path(path)
    tmp = _temp_name(path, tmp_dir, prefix, suffix)
    try:
        yield tmp
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        _commit(tmp, path, exclusive=False)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


@contextlib.contextmanager
def atomic_dir(
    path: str | os.PathLike[str],
    *,
    overwrite: bool = True,
    tmp_dir: str | os.PathLike[str] | None = None,
    prefix: str | None = None,
    suffix: str = ".tmp",
) -> Iterator[Path]:
    """Yield a new, empty temporary folder; on a clean exit publish it as `path` in one rename.

    Everything under the folder is fsynced before the rename and the parent after it. Files and folders in it get
    the ordinary modes (0o666, or 0o777 for an executable, and 0o777 for a folder, less the umask) whatever their
    writer chose. If the body raises, the temporary folder is removed and `path` is left as it was.

    `overwrite=True` replaces an existing `path`: the old one is renamed aside first (a folder cannot be renamed over
    a non-empty one), so between the two renames `path` is briefly absent; the old one is then deleted, and put back
    if the second rename fails. `overwrite=False` never replaces content: a FileExistsError when `path` is a file or
    a non-empty folder (an empty folder is replaced, as `os.rename` does).
    """
    path = Path(path)
    tmp = _temp_name(path, tmp_dir, prefix, suffix)
    os.mkdir(tmp, 0o777)
    try:
        yield tmp
        _ordinary_modes(tmp)
        fsync_tree(tmp)
        if overwrite and os.path.lexists(path):
            aside = _temp_name(path, None, None, ".old")
            os.rename(path, aside)
            try:
                os.rename(tmp, path)
            except BaseException:
                os.rename(aside, path)
                raise
            _remove(aside)
        else:
            try:
                os.rename(tmp, path)
            except OSError as e:
                if os.path.lexists(path):
                    raise FileExistsError(f"{path} already exists; refusing to replace it") from e
                raise
        fsync_dir(path.parent)
    except BaseException:
        _remove(tmp)
        raise


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """fsync a folder, so that the names created, renamed or removed in it last; a no-op where that is unsupported."""
    with contextlib.suppress(OSError):  # not every file system lets a folder be opened or fsynced
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def fsync_tree(path: str | os.PathLike[str]) -> None:
    """fsync every file and folder under `path` (the content of a folder about to be published)."""
    for dirpath, _, files in os.walk(path):
        for name in files:
            fd = os.open(os.path.join(dirpath, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fsync_dir(dirpath)


def tree_bytes(path: str | os.PathLike[str]) -> int:
    """The total size in bytes of the files under folder `path` (what it takes on disk, less block rounding)."""
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path) for f in files)


def _temp_name(path: Path, tmp_dir: str | os.PathLike[str] | None, prefix: str | None, suffix: str) -> Path:
    folder = Path(tmp_dir) if tmp_dir is not None else path.parent
    head = f".{path.name}." if prefix is None else prefix
    return folder / f"{head}{uuid.uuid4().hex[:16]}{suffix}"


def _ordinary_modes(folder: Path) -> None:
    # The folder was made by os.mkdir(..., 0o777), so its mode is 0o777 less the umask; reading the umask itself
    # (os.umask sets it) would race with other threads creating files.
    allowed = stat.S_IMODE(folder.stat().st_mode) & 0o777
    for dirpath, dirs, files in os.walk(folder):
        for name in dirs:
            os.chmod(os.path.join(dirpath, name), allowed)
        for name in files:
            p = os.path.join(dirpath, name)
            if not os.path.islink(p):
                executable = os.stat(p).st_mode & 0o111
                os.chmod(p, allowed & (0o777 if executable else 0o666))


def _commit(tmp: Path, path: Path, exclusive: bool) -> None:
    """Move the finished, fsynced `tmp` to `path` (replacing it, or only creating it when `exclusive`)."""
    if exclusive:
        try:
            os.link(tmp, path)  # atomic create-if-absent: a second creator gets FileExistsError
        except FileExistsError:
            raise
        except OSError:
            # A file system without hard links: check, then rename. Two creators racing here may both succeed, the
            # second replacing the first; callers that need strict exclusivity need hard links.
            if os.path.lexists(path):
                raise FileExistsError(f"{path} already exists") from None
            os.replace(tmp, path)
    else:
        os.replace(tmp, path)
    fsync_dir(path.parent)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
