"""The folder index is written once, reused while the folder is unchanged, and redone when it changes."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from assets import folder_index
from assets.folder_index import INDEX_FILE, cached_index

pytestmark = pytest.mark.unit


def _age(root: Path, seconds: float = 100.0) -> None:
    """Backdate every directory, as for a dataset downloaded a while ago (fresh mtimes are not trusted)."""
    past = time.time() - seconds
    for d in [root, *(p for p in root.rglob("*") if p.is_dir())]:
        os.utime(d, (past, past))


def _files(files: list[str]) -> list[dict]:
    return [{"name": f} for f in files]


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    for rel in ["a/x.txt", "a/b/y.txt", "c/z.txt", ".hidden/w.txt", "top.txt"]:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text("1")
    _age(root)
    return root


def _no_walk(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(root: Path) -> None:
        raise AssertionError("the folder was walked again")

    monkeypatch.setattr(folder_index, "walk", boom)


def test_written_once_then_reused(tree: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = cached_index(tree, "k", _files)
    assert not first.from_cache and first.cache_path == tree.resolve() / INDEX_FILE
    assert [e["name"] for e in first.entries] == ["a/b/y.txt", "a/x.txt", "c/z.txt", "top.txt"]  # hidden skipped
    mtime = first.cache_path.stat().st_mtime_ns
    _no_walk(monkeypatch)
    second = cached_index(tree, "k", _files)
    assert second.from_cache and second.entries == first.entries
    assert first.cache_path.stat().st_mtime_ns == mtime  # read, not rewritten


@pytest.mark.parametrize("change", ["add deep", "add top", "remove", "rename dir"])
def test_any_change_of_listing_invalidates(tree: Path, change: str) -> None:
    cached_index(tree, "k", _files)
    if change == "add deep":
        (tree / "a/b/new.txt").write_text("1")
    elif change == "add top":
        (tree / "new.txt").write_text("1")
    elif change == "remove":
        (tree / "c/z.txt").unlink()
    else:
        (tree / "c").rename(tree / "d")
    again = cached_index(tree, "k", _files)
    assert not again.from_cache
    assert again.entries == _files(folder_index.walk(tree)[1])


def test_fresh_directories_are_not_trusted(tree: Path) -> None:
    (tree / "a/b/new.txt").write_text("1")  # a/b now has a current mtime
    cached_index(tree, "k", _files)
    assert not cached_index(tree, "k", _files).from_cache  # could hide a change made in the same clock tick


def test_keys_are_separate_and_version_mismatch_rescans(tree: Path) -> None:
    cached_index(tree, "one", _files)
    assert not cached_index(tree, "two", lambda f: [{"n": len(f)}]).from_cache
    assert cached_index(tree, "one", _files).from_cache and cached_index(tree, "two", _files).from_cache
    path = tree / INDEX_FILE
    data = json.loads(path.read_text())
    data["version"] = -1
    path.write_text(json.dumps(data))
    assert not cached_index(tree, "one", _files).from_cache


def test_corrupt_cache_is_ignored(tree: Path) -> None:
    cached_index(tree, "k", _files)
    (tree / INDEX_FILE).write_text("{ half a json")
    again = cached_index(tree, "k", _files)
    assert not again.from_cache and len(again.entries) == 4


def test_explicit_cache_dir(tree: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = cached_index(tree, "k", _files, cache_dir=tmp_path / "cache")
    assert first.cache_path is not None and first.cache_path.parent == tmp_path / "cache"
    assert not (tree / INDEX_FILE).exists()
    _no_walk(monkeypatch)
    assert cached_index(tree, "k", _files, cache_dir=tmp_path / "cache").from_cache


def test_unwritable_root_falls_back_to_the_user_cache(
    tree: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    (tree / INDEX_FILE).mkdir()  # the index file cannot be written (works even when the tests run as root)
    _age(tree)
    first = cached_index(tree, "k", _files)
    assert first.cache_path is not None and first.cache_path.is_relative_to(tmp_path / "xdg" / "cnsv2")
    assert cached_index(tree, "k", _files).from_cache
