"""DatasetWriter: round trips, info.json, atomic publishing, crash leftovers and their cleanup, concurrent writers."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
from pathlib import Path

import numpy as np
import pytest

from shards import SCHEMA, DatasetReader, ShardError, ShardKey, array_sha256
from shards.writer import _host_tag
from tests.fixtures.factories import K_CANON, H, W
from tests.shards import listing, publish_worker


@pytest.mark.unit
@pytest.mark.parametrize("coarse", [None, (3, 4)])
def test_round_trip_of_every_array_with_exact_dtypes(tmp_path: Path, coarse, shard_buffer, shard_writer) -> None:
    buf = shard_buffer(n=10, per_desired=4, coarse=coarse, policy_version=2)
    expected = buf.arrays()
    writer = shard_writer(tmp_path)
    key = ShardKey("dagger", 2, 7)
    path = writer.publish(key, buf, sidecar={"beta": 0.5, "actor": 3})
    assert path == tmp_path / "shards" / "dagger-r0002-000007.zarr" and path.is_dir()
    assert writer.is_published(key)

    reader = DatasetReader(tmp_path)
    assert [s.id for s in reader.shards] == [key.id] and len(reader) == 10
    meta = reader.shards[0]
    assert (meta.key, meta.n, meta.m, meta.path) == (key, 10, 3, path)
    got = reader.read(meta, all_desired=True)
    assert set(got) == set(expected)
    for name, a in expected.items():
        assert got[name].dtype == a.dtype, name
        assert got[name].shape == a.shape, name
        np.testing.assert_array_equal(got[name], a, err_msg=name)

    import zarr

    attrs = dict(zarr.open_group(path, mode="r").attrs)
    assert attrs["schema"] == SCHEMA and attrs["producer"] == "dagger" and attrs["round"] == 2
    assert attrs["backend"] == "mujoco" and attrs["created"]

    side = json.loads((tmp_path / "shards" / f"{key.id}.json").read_text())
    assert side == meta.sidecar
    assert (side["id"], side["producer"], side["round"], side["index"], side["n"], side["m"]) == (
        key.id, "dagger", 2, 7, 10, 3,
    )  # fmt: skip
    assert side["policy_versions"] == [-1, 2]
    assert side["seeds"] == sorted(set(expected["scene_seed"].tolist()))
    assert side["checksums"]["vel"] == array_sha256(expected["vel"])
    assert side["checksums"]["cur_rgb"] == array_sha256(expected["cur_rgb"])
    assert set(side["checksums"]) == set(expected)
    assert side["beta"] == 0.5 and side["actor"] == 3 and side["created"]
    assert "git_sha" in side  # best effort: a sha or null
    assert side["coarse"] is (coarse is not None)


@pytest.mark.unit
def test_info_json_is_written_once_and_a_disagreeing_writer_is_refused(tmp_path: Path, shard_writer) -> None:
    shard_writer(tmp_path, config={"a": 1})
    info = json.loads((tmp_path / "info.json").read_text())
    assert (info["schema"], info["height"], info["width"], info["backend"]) == (SCHEMA, H, W, "mujoco")
    assert np.allclose(info["K"], K_CANON) and info["config"] == {"a": 1} and info["created"]
    shard_writer(tmp_path, config={"a": 2})  # another run's config: fine, info.json unchanged
    assert json.loads((tmp_path / "info.json").read_text()) == info
    with pytest.raises(ShardError, match=r"image size 24x32 \(HxW\), this writer has 48x32"):
        shard_writer(tmp_path, height=2 * H)
    with pytest.raises(ShardError, match="backend 'mujoco', this writer has 'isaac'"):
        shard_writer(tmp_path, backend="isaac")
    with pytest.raises(ShardError, match=r"K .* this writer has"):
        shard_writer(tmp_path, K=K_CANON * [[2], [2], [1]])
    assert DatasetReader(tmp_path).info == info


@pytest.mark.unit
def test_invalid_buffer_writes_nothing(tmp_path: Path, shard_buffer, shard_writer) -> None:
    writer = shard_writer(tmp_path)
    with pytest.raises(ShardError, match=r"vel\[0\]: label out of range"):
        writer.publish(ShardKey("hemisphere", 0, 0), shard_buffer(vel_scale=100.0), sidecar={})
    assert listing(tmp_path) == {"shards": [], "_tmp": []}
    assert not (tmp_path / "manifest.jsonl").exists()


@pytest.mark.unit
def test_refuses_to_overwrite_a_published_shard(tmp_path: Path, shard_buffer, shard_writer) -> None:
    writer = shard_writer(tmp_path)
    key = ShardKey("hemisphere", 0, 3)
    writer.publish(key, shard_buffer(seed=1), sidecar={})
    before = DatasetReader(tmp_path).read(key.id)
    with pytest.raises(ShardError, match="already published"):
        writer.publish(key, shard_buffer(seed=2), sidecar={})
    # a racing writer that passed the check: the rename fails, the shard stays intact and nothing is left behind
    writer.is_published = lambda key: False  # type: ignore[method-assign]
    writer._refuse_existing = lambda key: None  # type: ignore[method-assign]
    with pytest.raises(ShardError, match="already exists"):
        writer.publish(key, shard_buffer(seed=2), sidecar={})
    after = DatasetReader(tmp_path).read(key.id)
    for name in before:
        np.testing.assert_array_equal(after[name], before[name])
    assert listing(tmp_path)["_tmp"] == []
    assert len((tmp_path / "manifest.jsonl").read_text().splitlines()) == 1


@pytest.mark.unit
def test_failed_publish_leaves_nothing_visible(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, shard_buffer, shard_writer
) -> None:
    writer = shard_writer(tmp_path)
    key = ShardKey("hemisphere", 0, 0)
    real_replace = os.replace

    def failing_sidecar_replace(src, dst):
        if str(dst).endswith(f"{key.id}.json"):
            raise OSError(28, "No space left on device")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", failing_sidecar_replace)
    with pytest.raises(OSError, match="No space left"):
        writer.publish(key, shard_buffer(), sidecar={})
    assert DatasetReader(tmp_path).shards == []
    assert listing(tmp_path) == {"shards": [], "_tmp": []}  # rolled back: the shard is out of shards/ again

    def failing_zarr_replace(src, dst):  # zarr writes every chunk file through a temp file + os.replace
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "replace", failing_zarr_replace)
    with pytest.raises(OSError, match="Input/output error"):
        writer.publish(key, shard_buffer(), sidecar={})
    assert listing(tmp_path) == {"shards": [], "_tmp": []}

    monkeypatch.setattr(os, "replace", real_replace)
    writer.publish(key, shard_buffer(), sidecar={})  # the key is free: a retry succeeds
    assert [s.id for s in DatasetReader(tmp_path).shards] == [key.id]
    assert writer.clean_stale() == []


@pytest.mark.integration
@pytest.mark.parametrize("stage", ["zarr", "rename", "sidecar"])
def test_crash_mid_publish_is_invisible_and_clean_stale_removes_the_leftovers(
    tmp_path: Path, stage: str, shard_buffer, shard_writer
) -> None:
    writer = shard_writer(tmp_path)
    writer.publish(ShardKey("hemisphere", 0, 0), shard_buffer(seed=0), sidecar={})
    proc = mp.get_context("spawn").Process(target=publish_worker, args=(str(tmp_path), "hemisphere", [1], stage))
    proc.start()
    proc.join(60)
    assert proc.exitcode == 17  # died mid-publish

    left = listing(tmp_path)
    crashed = ShardKey("hemisphere", 0, 1)
    if stage == "sidecar":  # renamed into shards/ but never published
        assert f"{crashed.id}.zarr" in left["shards"] and f"{crashed.id}.json" not in left["shards"]
    else:
        assert left["shards"] == ["hemisphere-r0000-000000.json", "hemisphere-r0000-000000.zarr"]
        assert any(name.startswith(crashed.id) for name in left["_tmp"])
    reader = DatasetReader(tmp_path)
    assert [s.id for s in reader.shards] == ["hemisphere-r0000-000000"]
    assert not writer.is_published(crashed)
    if stage == "sidecar":
        with pytest.raises(ShardError, match="without its sidecar"):
            writer.publish(crashed, shard_buffer(seed=1), sidecar={})

    removed = writer.clean_stale()
    assert removed
    if stage == "sidecar":
        assert f"shards/{crashed.id}.zarr" in removed
    else:
        assert all(r.startswith(f"_tmp/{crashed.id}") for r in removed)
    assert listing(tmp_path) == {"shards": ["hemisphere-r0000-000000.json", "hemisphere-r0000-000000.zarr"], "_tmp": []}

    writer.publish(crashed, shard_buffer(seed=1), sidecar={})  # rerunning fills the hole
    reader.refresh()
    assert [s.id for s in reader.shards] == ["hemisphere-r0000-000000", crashed.id]
    np.testing.assert_array_equal(reader.read(crashed.id)["vel"], shard_buffer(seed=1).arrays()["vel"])
    assert writer.clean_stale() == []


@pytest.mark.unit
def test_clean_stale_keeps_what_live_or_unknown_writers_may_still_be_writing(tmp_path: Path, shard_writer) -> None:
    writer = shard_writer(tmp_path)
    tmp = tmp_path / "_tmp"
    live = tmp / f"hemisphere-r0000-000004~{_host_tag()}~{os.getppid()}~abc.zarr"  # our parent: alive, this host
    dead = tmp / f"hemisphere-r0000-000005~{_host_tag()}~{2**22 + 12345}~abc.zarr"  # beyond pid_max: no such process
    remote = tmp / "hemisphere-r0000-000006~otherhost~123~abc.zarr"  # cannot be checked: only by age
    for p in (live, dead, remote):
        p.mkdir()
    assert writer.clean_stale() == ["_tmp/" + dead.name]
    assert writer.clean_stale(min_age_s=0) == ["_tmp/" + remote.name]
    assert live.exists()


@pytest.mark.integration
def test_concurrent_publishers_in_two_processes(tmp_path: Path, shard_buffer) -> None:
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(2)
    procs = [
        ctx.Process(target=publish_worker, args=(str(tmp_path), producer, indices, None, barrier))
        for producer, indices in (("hemisphere", list(range(6))), ("dagger", list(range(10, 16))))
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0]
    reader = DatasetReader(tmp_path)
    ids = [s.id for s in reader.shards]
    assert len(ids) == 12
    for shard in reader.shards:
        expected = shard_buffer(seed=shard.key.index).arrays()
        got = reader.read(shard, all_desired=True)
        for name, a in expected.items():
            np.testing.assert_array_equal(got[name], a, err_msg=f"{shard.id} {name}")
    lines = [json.loads(line) for line in (tmp_path / "manifest.jsonl").read_text().splitlines()]
    assert sorted(line["id"] for line in lines) == sorted(ids)
    assert len({line["worker"] for line in lines}) == 2
    assert listing(tmp_path)["_tmp"] == []
