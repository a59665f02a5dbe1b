"""file_io: atomic writes keep the old content on failure, leave no temporaries, fsync in order, respect the umask."""

from __future__ import annotations

import json
import os
import stat
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import file_io
from file_io import atomic_dir, atomic_path, write_bytes, write_json, write_text

pytestmark = pytest.mark.unit


@pytest.fixture
def umask() -> Iterator[None]:
    old = os.umask(0o022)
    yield
    os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_write_text_and_bytes_replace_the_content(tmp_path: Path) -> None:
    target = tmp_path / "a.txt"
    assert write_text(target, "one\n") == target
    assert target.read_text() == "one\n"
    write_bytes(target, b"\x00two")
    assert target.read_bytes() == b"\x00two"
    write_text(str(target), "drei ü", encoding="latin-1")
    assert target.read_bytes() == "drei ü".encode("latin-1")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]


@pytest.mark.parametrize("fails", ["write", "fsync", "replace"])
def test_a_failure_mid_write_keeps_the_old_content_and_leaves_no_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fails: str
) -> None:
    target = tmp_path / "config.yaml"
    target.write_text("old\n")

    def broken(*args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    if fails == "write":
        monkeypatch.setattr(os, "fdopen", lambda fd, mode: _FailingFile(fd))
    else:
        monkeypatch.setattr(os, fails, broken)
    with pytest.raises(OSError, match="No space left"):
        write_text(target, "new\n")
    assert target.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.yaml"]


class _FailingFile:
    """Stands in for the file object: the bytes never reach the disk."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def __enter__(self) -> _FailingFile:
        return self

    def __exit__(self, *exc: object) -> None:
        os.close(self.fd)

    def write(self, data: bytes) -> int:
        raise OSError(28, "No space left on device")


def test_temporary_names_are_unique_and_where_asked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sources: list[str] = []
    real_replace = os.replace

    def replace(src: str, dst: str) -> None:
        sources.append(str(src))
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    for _ in range(3):
        write_text(tmp_path / "a.json", "{}")
    spool = tmp_path / "spool"
    spool.mkdir()
    write_text(tmp_path / "b.json", "{}", tmp_dir=spool, prefix="b.json~me~", suffix=".part")

    assert len(set(sources)) == 4
    for src in sources[:3]:
        assert Path(src).parent == tmp_path and Path(src).name.startswith(".a.json.") and src.endswith(".tmp")
    assert Path(sources[3]).parent == spool and Path(sources[3]).name.startswith("b.json~me~")
    assert sources[3].endswith(".part")
    assert list(spool.iterdir()) == []


def test_json_round_trips_and_what_is_not_json_writes_nothing(tmp_path: Path) -> None:
    target = tmp_path / "meta.json"
    obj = {"a": [1, 2.5, None, True], "b": {"c": "ü"}}
    write_json(target, obj, indent=2)
    assert json.loads(target.read_text()) == obj
    assert target.read_text().endswith("}\n")
    write_json(target, {"p": Path("/x")}, default=str)
    assert json.loads(target.read_text()) == {"p": "/x"}

    with pytest.raises(ValueError, match="Out of range float"):
        write_json(target, {"x": float("nan")})
    with pytest.raises(TypeError, match="not JSON serializable"):
        write_json(target, {"x": object()})
    assert json.loads(target.read_text()) == {"p": "/x"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["meta.json"]
    write_json(target, {"x": float("inf")}, allow_nan=True)
    assert target.read_text() == '{"x": Infinity}\n'


def test_exclusive_creates_only_once(tmp_path: Path) -> None:
    target = tmp_path / "info.json"
    write_text(target, "first", exclusive=True)
    with pytest.raises(FileExistsError):
        write_text(target, "second", exclusive=True)
    assert target.read_text() == "first"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["info.json"]


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc to name the fsynced files")
def test_the_file_is_fsynced_before_the_rename_and_the_folder_after(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    events: list[tuple[str, str]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def replace(src: str, dst: str) -> None:
        events.append(("replace", str(src)))
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    write_bytes(tmp_path / "x.bin", b"data")
    (kind0, tmp0), (kind1, tmp1), (kind2, folder) = events
    assert (kind0, kind1, kind2) == ("fsync", "replace", "fsync")
    assert tmp0 == tmp1 and Path(tmp0).parent == tmp_path.resolve()
    assert folder == str(tmp_path.resolve())


@pytest.mark.parametrize("mask", [0o022, 0o077, 0o002])
@pytest.mark.skipif(sys.platform == "win32", reason="POSIX modes")
def test_new_files_and_folders_get_the_ordinary_modes_less_the_umask(tmp_path: Path, mask: int) -> None:
    old = os.umask(mask)
    try:
        write_text(tmp_path / "a.txt", "x")
        write_json(tmp_path / "b.json", {})
        with atomic_path(tmp_path / "c.bin") as tmp:
            tmp.write_bytes(b"x")
        with atomic_dir(tmp_path / "d") as folder:
            (folder / "inner.txt").write_text("x")
            os.close(os.open(folder / "private.bin", os.O_CREAT | os.O_WRONLY, 0o600))  # as safetensors does
            os.close(os.open(folder / "run.sh", os.O_CREAT | os.O_WRONLY, 0o700))
            (folder / "sub").mkdir(mode=0o700)
    finally:
        os.umask(old)
    for name in ("a.txt", "b.json", "c.bin", "d/inner.txt", "d/private.bin"):
        assert _mode(tmp_path / name) == 0o666 & ~mask, name
    for name in ("d", "d/sub", "d/run.sh"):  # not mkdtemp's 0o700
        assert _mode(tmp_path / name) == 0o777 & ~mask, name


def test_atomic_path_lets_another_writer_make_the_file(tmp_path: Path) -> None:
    target = tmp_path / "layer.usdc"
    target.write_text("old")
    with atomic_path(target, suffix=".tmp.usdc") as tmp:
        assert tmp.parent == tmp_path and tmp.name.endswith(".tmp.usdc") and not tmp.exists()
        tmp.write_text("new")
    assert target.read_text() == "new"

    with pytest.raises(RuntimeError, match="export failed"), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("export failed")
    with pytest.raises(FileNotFoundError), atomic_path(target):
        pass  # the writer wrote nothing: nothing to publish
    assert target.read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["layer.usdc"]


def test_atomic_dir_publishes_replaces_and_rolls_back(tmp_path: Path, umask: None) -> None:
    target = tmp_path / "ckpt"
    with atomic_dir(target) as folder:
        assert folder.parent == tmp_path and folder.name.startswith(".ckpt.") and list(folder.iterdir()) == []
        (folder / "w.bin").write_bytes(b"1")
    assert (target / "w.bin").read_bytes() == b"1"

    with atomic_dir(target) as folder:  # overwrite: the old folder goes whole
        (folder / "v.bin").write_bytes(b"2")
    assert sorted(p.name for p in target.iterdir()) == ["v.bin"]

    with pytest.raises(RuntimeError, match="mid-save"), atomic_dir(target) as folder:
        (folder / "u.bin").write_bytes(b"3")
        raise RuntimeError("mid-save")
    assert sorted(p.name for p in target.iterdir()) == ["v.bin"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]


def test_atomic_dir_without_overwrite_never_replaces_content(tmp_path: Path) -> None:
    spool = tmp_path / "_tmp"
    spool.mkdir()
    target = tmp_path / "s.zarr"
    with atomic_dir(target, overwrite=False, tmp_dir=spool, prefix="s~", suffix=".zarr") as folder:
        assert folder.parent == spool and folder.name.startswith("s~") and folder.name.endswith(".zarr")
        (folder / "a").write_text("first")
    with pytest.raises(FileExistsError, match="refusing to replace"), atomic_dir(target, overwrite=False) as folder:
        (folder / "a").write_text("second")
    assert (target / "a").read_text() == "first"
    assert list(spool.iterdir()) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["_tmp", "s.zarr"]


def test_atomic_dir_puts_the_old_folder_back_when_the_new_cannot_move_in(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "ship"
    with atomic_dir(target) as folder:
        (folder / "old.txt").write_text("old")
    real_rename = os.rename

    def rename(src: str, dst: str) -> None:
        if Path(dst) == target and Path(src).name.endswith(".tmp"):
            raise OSError(5, "Input/output error")
        real_rename(src, dst)

    monkeypatch.setattr(os, "rename", rename)
    with pytest.raises(OSError, match="Input/output error"), atomic_dir(target) as folder:
        (folder / "new.txt").write_text("new")
    assert sorted(p.name for p in target.iterdir()) == ["old.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ship"]


def test_tree_bytes_counts_every_file(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x").write_bytes(b"12345")
    (tmp_path / "y").write_bytes(b"123")
    assert file_io.tree_bytes(tmp_path) == 8
