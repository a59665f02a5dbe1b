"""DatasetReader: listing published shards, slices, refresh, and damaged shards refused, then quarantined."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from shards import DamagedShardError, DatasetReader, ShardError, ShardKey, array_sha256
from tests.fixtures.factories import H, W

pytestmark = pytest.mark.unit


def test_reader_without_info_json_names_the_root(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "nothing")):
        DatasetReader(tmp_path / "nothing")


def test_reading_contiguous_slices(tmp_path: Path, shard_buffer, shard_writer) -> None:
    buf = shard_buffer(n=14, per_desired=3)
    a = buf.arrays()
    shard_writer(tmp_path).publish(ShardKey("hemisphere", 0, 1), buf, sidecar={})
    reader = DatasetReader(tmp_path)
    shard_id = reader.shards[0].id

    part = reader.read(shard_id, 4, 11)
    for name in set(a) - {"des_rgb", "des_index"}:
        np.testing.assert_array_equal(part[name], a[name][4:11], err_msg=name)
    # only the desired images the slice uses (samples 4..10 use desired 1..3), des_index rebased to them
    np.testing.assert_array_equal(part["des_rgb"], a["des_rgb"][1:4])
    np.testing.assert_array_equal(part["des_index"], a["des_index"][4:11] - 1)
    np.testing.assert_array_equal(part["des_rgb"][part["des_index"]], a["des_rgb"][a["des_index"][4:11]])
    assert part["des_index"].dtype == np.int32

    whole = reader.read(shard_id, 4, 11, all_desired=True)
    np.testing.assert_array_equal(whole["des_rgb"], a["des_rgb"])
    np.testing.assert_array_equal(whole["des_index"], a["des_index"][4:11])

    some = reader.read(shard_id, 13, None, names=["vel", "step"])
    assert set(some) == {"vel", "step"} and some["vel"].shape == (1, 6)
    np.testing.assert_array_equal(some["step"], a["step"][13:])
    empty = reader.read(shard_id, 5, 5)
    assert empty["cur_rgb"].shape == (0, H, W, 3) and empty["des_rgb"].shape == (0, H, W, 3)

    with pytest.raises(ValueError, match=r"slice \[10:15\] is outside \[0:14\]"):
        reader.read(shard_id, 10, 15)
    with pytest.raises(ShardError, match="no array 'coarse_match'"):
        reader.read(shard_id, names=["coarse_match"])
    with pytest.raises(KeyError, match="dagger-r0000-000000"):
        reader.read("dagger-r0000-000000")


def test_a_zarr_without_its_sidecar_is_not_listed(tmp_path: Path, shard_buffer, shard_writer) -> None:
    writer = shard_writer(tmp_path)
    writer.publish(ShardKey("hemisphere", 0, 0), shard_buffer(), sidecar={})
    shards = tmp_path / "shards"
    shutil.copytree(shards / "hemisphere-r0000-000000.zarr", shards / "hemisphere-r0000-000001.zarr")
    shutil.copy(shards / "hemisphere-r0000-000000.json", shards / "hemisphere-r0000-000002.json")
    reader = DatasetReader(tmp_path)
    assert [s.id for s in reader.shards] == ["hemisphere-r0000-000000"]
    assert not writer.is_published(ShardKey("hemisphere", 0, 1))
    assert not writer.is_published(ShardKey("hemisphere", 0, 2))
    with pytest.raises(ShardError, match="without its data"):
        writer.publish(ShardKey("hemisphere", 0, 2), shard_buffer(), sidecar={})


def test_refresh_sees_new_shards_and_the_manifest_has_one_line_each(tmp_path: Path, shard_buffer, shard_writer) -> None:
    writer = shard_writer(tmp_path)
    reader = DatasetReader(tmp_path)
    assert reader.shards == [] and len(reader) == 0
    keys = [ShardKey("hemisphere", 0, 1), ShardKey("dagger", 1, 0), ShardKey("hemisphere", 0, 0)]
    for i, key in enumerate(keys):
        writer.publish(key, shard_buffer(seed=i, n=3 + i), sidecar={"i": i})
    assert reader.shards == []  # until refreshed
    listed = reader.refresh()
    assert [s.id for s in listed] == ["dagger-r0001-000000", "hemisphere-r0000-000000", "hemisphere-r0000-000001"]
    assert len(reader) == 3 + 4 + 5
    lines = [json.loads(line) for line in (tmp_path / "manifest.jsonl").read_text().splitlines()]
    assert [line["id"] for line in lines] == [k.id for k in keys]
    for line in lines:
        assert line == json.loads((tmp_path / "shards" / f"{line['id']}.json").read_text())


# -- damage on disk: never read as data ------------------------------------------------------------------------------
def _one_file(path: Path) -> Path:
    files = [p for p in path.rglob("*") if p.is_file() and p.name != "zarr.json"]
    assert len(files) == 1, files  # small test shards: one zarr shard file per array
    return files[0]


def _damage(shard: Path, how: str) -> str:
    """Damage a published shard one way; returns (a pattern of) the array the error must name."""
    if how == "missing chunk":
        _one_file(shard / "cur_rgb").unlink()
        return "cur_rgb"
    if how == "truncated chunk":
        f = _one_file(shard / "cur_rgb")
        f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
        return "cur_rgb"
    if how == "grown chunk":
        f = _one_file(shard / "vel")
        f.write_bytes(f.read_bytes() + b"\0" * 64)
        return "vel"
    if how == "missing array":
        shutil.rmtree(shard / "beta")
        return "beta"
    side = shard.with_suffix(".json")
    meta = json.loads(side.read_text())
    if how == "sidecar row count":
        meta["n"] -= 1
        name = r"\w+: shape"  # whichever per-sample array is checked first
    elif how == "sidecar checksum":
        meta["checksums"]["wTc"] = array_sha256(np.zeros(3))
        name = "wTc"
    else:
        raise AssertionError(how)
    side.write_text(json.dumps(meta))
    return name


@pytest.mark.parametrize(
    "how",
    ["missing chunk", "truncated chunk", "grown chunk", "missing array", "sidecar row count", "sidecar checksum"],
)
def test_a_damaged_shard_is_refused_naming_the_shard_and_the_array(
    tmp_path: Path, how: str, shard_buffer, shard_writer
) -> None:
    writer = shard_writer(tmp_path)
    writer.publish(ShardKey("hemisphere", 0, 0), shard_buffer(seed=1), sidecar={})
    good = shard_buffer(seed=2).arrays()
    writer.publish(ShardKey("hemisphere", 0, 1), shard_buffer(seed=2), sidecar={})
    name = _damage(tmp_path / "shards" / "hemisphere-r0000-000000.zarr", how)

    reader = DatasetReader(tmp_path)
    for call in (lambda: reader.read("hemisphere-r0000-000000"), lambda: reader.read("hemisphere-r0000-000000", 0, 1)):
        with pytest.raises(DamagedShardError, match=rf"shard hemisphere-r0000-000000: {name}\b") as err:
            call()
        assert err.value.shard == "hemisphere-r0000-000000" and err.value.array is not None
    np.testing.assert_array_equal(reader.read("hemisphere-r0000-000001")["cur_rgb"], good["cur_rgb"])  # others read

    where = reader.quarantine("hemisphere-r0000-000000", "test")
    assert [s.id for s in reader.shards] == ["hemisphere-r0000-000001"]
    assert sorted(p.name for p in where.iterdir()) == [
        "hemisphere-r0000-000000.json",
        "hemisphere-r0000-000000.reason.txt",
        "hemisphere-r0000-000000.zarr",
    ]
    assert not writer.is_published(ShardKey("hemisphere", 0, 0))  # a resuming producer makes it again
