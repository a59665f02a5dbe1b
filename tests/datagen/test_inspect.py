"""python -m datagen.inspect: counts, label statistics, the sample grid, and failing on a corrupt shard."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from datagen.inspect import LABELS, InspectError, check_shard, inspect, main
from shards import DatasetReader, ShardError, ShardKey, array_sha256

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def dataset(tmp_path: Path, shard_buffer, shard_writer) -> tuple[Path, np.ndarray]:
    """Two hemisphere shards (expert only) and a DAgger round-1 shard with policy version 3 on half its samples."""
    writer = shard_writer(tmp_path)
    buffers = {
        ShardKey("hemisphere", 0, 0): shard_buffer(seed=0, n=10),
        ShardKey("hemisphere", 0, 1): shard_buffer(seed=1, n=7),
        ShardKey("dagger", 1, 0): shard_buffer(seed=2, n=8, policy_version=3, coarse=(3, 4)),
    }
    for key, buf in buffers.items():
        writer.publish(key, buf, sidecar={})
    vel = np.concatenate([b.arrays()["vel"] for b in buffers.values()])
    return tmp_path, vel


@pytest.mark.unit
def test_inspect_prints_and_returns_the_stats_and_writes_the_grid(dataset, capsys: pytest.CaptureFixture) -> None:
    root, vel = dataset
    stats = inspect(root, samples=5)

    assert (stats["shards"], stats["samples"], stats["bad"]) == (3, 25, {})
    assert stats["producers"] == {"dagger": {"shards": 1, "samples": 8}, "hemisphere": {"shards": 2, "samples": 17}}
    assert stats["rounds"] == {
        "dagger-r0001": {"shards": 1, "samples": 8},
        "hemisphere-r0000": {"shards": 2, "samples": 17},
    }
    assert stats["policy_versions"] == {-1: {"shards": 3, "samples": 21}, 3: {"shards": 1, "samples": 4}}
    assert stats["bytes_on_disk"] > vel.nbytes

    v = vel.astype(np.float64)
    values = np.concatenate(
        [v, np.linalg.norm(v[:, :3], axis=1)[:, None], np.linalg.norm(v[:, 3:], axis=1)[:, None]], 1
    )
    assert list(stats["labels"]) == list(LABELS)
    for i, name in enumerate(LABELS):
        row = stats["labels"][name]
        assert row["mean"] == pytest.approx(values[:, i].mean(), abs=1e-9)
        assert row["std"] == pytest.approx(values[:, i].std(), abs=1e-9)
        assert (row["min"], row["max"]) == (pytest.approx(values[:, i].min()), pytest.approx(values[:, i].max()))

    out = root / "inspect.png"
    assert stats["out"] == str(out)
    with Image.open(out) as im:
        assert im.format == "PNG" and im.width >= 2 * 32 * 3 and im.height > 24 * 2
        pixels = np.asarray(im.convert("RGB"))
    assert pixels.std() > 10  # images and captions were drawn

    printed = capsys.readouterr().out
    for text in ("hemisphere", "dagger-r0001", "expert (-1)", "|w|", "vx"):
        assert text in printed
    summary = printed.strip().splitlines()[-1]
    assert summary.startswith("inspect: 3 shards, 25 samples,") and "MB on disk" in summary and str(out) in summary


@pytest.mark.unit
def test_inspect_of_an_empty_dataset_writes_no_grid(tmp_path: Path, shard_writer) -> None:
    shard_writer(tmp_path)
    stats = inspect(tmp_path, out=tmp_path / "g.png")
    assert (stats["shards"], stats["samples"], stats["labels"], stats["out"]) == (0, 0, {}, None)
    assert not (tmp_path / "g.png").exists()


def _chunk_file(root: Path, shard_id: str, array: str) -> Path:
    files = [p for p in (root / "shards" / f"{shard_id}.zarr" / array / "c").rglob("*") if p.is_file()]
    return max(files, key=lambda p: p.stat().st_size)


@pytest.mark.unit
def test_inspect_fails_on_a_corrupted_chunk_naming_the_shard(dataset, capsys: pytest.CaptureFixture) -> None:
    root, _ = dataset
    chunk = _chunk_file(root, "hemisphere-r0000-000001", "cur_rgb")
    data = bytearray(chunk.read_bytes())
    data[len(data) // 3 : len(data) // 3 + 64] = np.random.default_rng(0).integers(0, 256, 64, dtype=np.uint8).tobytes()
    chunk.write_bytes(bytes(data))

    with pytest.raises(InspectError, match=r"hemisphere-r0000-000001: .*cur_rgb") as err:
        inspect(root, samples=2)
    assert list(err.value.bad) == ["hemisphere-r0000-000001"]
    assert err.value.stats["shards"] == 2 and err.value.stats["samples"] == 18  # the good ones still count
    assert "BAD" in capsys.readouterr().out


@pytest.mark.unit
def test_inspect_catches_data_that_differs_from_its_checksum(dataset) -> None:
    import zarr

    root, _ = dataset
    # valid-looking but different labels, written through zarr itself: only the sidecar's checksum can tell
    array = zarr.open_group(root / "shards" / "dagger-r0001-000000.zarr", mode="r+")["vel"]
    array[0, 0] = np.float32(0.123)
    with pytest.raises(ShardError, match=r"dagger-r0001-000000: vel: checksum mismatch"):
        inspect(root, samples=0)


@pytest.mark.unit
def test_inspect_catches_a_deleted_chunk_file(dataset) -> None:
    root, _ = dataset
    # zarr reads a missing chunk file as the fill value (zeros) without a word; the checksum tells
    (root / "shards" / "hemisphere-r0000-000001.zarr" / "vel" / "c" / "0" / "0").unlink()
    with pytest.raises(ShardError, match=r"hemisphere-r0000-000001: vel: checksum mismatch"):
        inspect(root, samples=0)


@pytest.mark.unit
def test_inspect_catches_invalid_data_in_a_shard(dataset) -> None:
    import zarr

    root, _ = dataset
    array = zarr.open_group(root / "shards" / "hemisphere-r0000-000000.zarr", mode="r+")["vel"]
    array[7, 2] = np.float32(np.nan)
    # ... and a sidecar that vouches for it (a producer bug, not disk damage): only validation can tell
    side = root / "shards" / "hemisphere-r0000-000000.json"
    meta = json.loads(side.read_text())
    meta["checksums"]["vel"] = array_sha256(array[...])
    side.write_text(json.dumps(meta))
    with pytest.raises(ShardError, match=r"hemisphere-r0000-000000: vel\[7\]: not finite") as err:
        reader = DatasetReader(root)
        check_shard(reader, reader.shard("hemisphere-r0000-000000"), slice_bytes=1)  # a slice per sample: same index
    assert err.value.array == "vel"
    with pytest.raises(ShardError, match=r"hemisphere-r0000-000000: vel\[7\]: not finite"):
        inspect(root, samples=0)


@pytest.mark.integration
def test_cli_exit_status_and_messages(dataset, tmp_path: Path) -> None:
    root, _ = dataset
    grid = tmp_path / "out" / "grid.png"
    ok = subprocess.run(
        [sys.executable, "-m", "datagen.inspect", str(root), "--out", str(grid), "--samples", "3"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert ok.returncode == 0, ok.stderr
    assert grid.is_file() and "inspect: 3 shards, 25 samples" in ok.stdout

    chunk = _chunk_file(root, "dagger-r0001-000000", "cur_rgb")
    chunk.write_bytes(b"garbage" * 100)
    assert main([str(root), "--samples", "0"]) == 1
    assert main([str(tmp_path / "missing")]) == 2


@pytest.mark.unit
@pytest.mark.parametrize("quarantine", [False, True])
def test_datagen_verify_names_each_damaged_shard(dataset, capsys: pytest.CaptureFixture, quarantine: bool) -> None:
    from datagen.__main__ import verify

    root, _ = dataset
    assert verify(str(root)) == 0
    assert "verify: 3/3 shards intact" in capsys.readouterr().out
    (root / "shards" / "hemisphere-r0000-000001.zarr" / "vel" / "c" / "0" / "0").unlink()
    assert verify(str(root), quarantine=quarantine) == 1
    out = capsys.readouterr().out
    assert "DAMAGED shard hemisphere-r0000-000001: vel" in out and "2/3 shards intact" in out
    assert [s.id for s in DatasetReader(root).shards] == (
        ["dagger-r0001-000000", "hemisphere-r0000-000000"]
        if quarantine
        else ["dagger-r0001-000000", "hemisphere-r0000-000000", "hemisphere-r0000-000001"]
    )
