"""The shard format: round trips, validation, atomic publishing, crash leftovers, concurrent writers, slices."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from datagen.shards import (
    ARRAY_NAMES,
    SCHEMA,
    DamagedShardError,
    DatasetReader,
    ShardBuffer,
    ShardError,
    ShardKey,
    array_sha256,
    validate_arrays,
)
from tests.datagen import K_CANON, H, W, make_buffer, make_writer, publish_worker

ROOT = Path(__file__).resolve().parents[2]
DTYPES = {
    "cur_rgb": np.uint8,
    "des_rgb": np.uint8,
    "des_index": np.int32,
    "vel": np.float32,
    "wTc": np.float64,
    "wTd": np.float64,
    "K": np.float32,
    "scene_scale": np.float32,
    "episode": np.int64,
    "step": np.int32,
    "scene_seed": np.int64,
    "policy_version": np.int32,
    "beta": np.float32,
    "coarse_match": np.float16,
    "coarse_valid": np.bool_,
}


def listing(root: Path) -> dict[str, list[str]]:
    return {d: sorted(p.name for p in (root / d).iterdir()) for d in ("shards", "_tmp")}


# -- keys and buffers ------------------------------------------------------------------------------------------------
def test_shard_key_id_and_validation() -> None:
    key = ShardKey("dagger", 3, 12)
    assert key.id == "dagger-r0003-000012"
    assert ShardKey.from_id(key.id) == key
    assert sorted([ShardKey("hemisphere", 0, 2), key, ShardKey("dagger", 1, 5)])[0] == ShardKey("dagger", 1, 5)
    with pytest.raises(ValueError, match="producer"):
        ShardKey("offline", 0, 0)
    with pytest.raises(ValueError, match="round"):
        ShardKey("dagger", -1, 0)
    with pytest.raises(ValueError, match="index"):
        ShardKey("dagger", 0, -3)
    with pytest.raises(ValueError, match="not a shard id"):
        ShardKey.from_id("dagger-r3-12")


def test_buffer_stacks_exact_dtypes_and_counts_bytes() -> None:
    buf = make_buffer(n=7, per_desired=3, coarse=(3, 4))
    arrays = buf.arrays()
    assert len(buf) == 7 and buf.m == 3
    assert set(arrays) == set(ARRAY_NAMES)
    for name, a in arrays.items():
        assert a.dtype == DTYPES[name], name
    assert arrays["cur_rgb"].shape == (7, H, W, 3) and arrays["des_rgb"].shape == (3, H, W, 3)
    assert arrays["coarse_match"].shape == (7, 3, 4, 2) and arrays["coarse_valid"].shape == (7, 3, 4)
    assert buf.nbytes == sum(a.nbytes for a in arrays.values())
    validate_arrays(arrays, height=H, width=W)


def test_buffer_copies_images_so_a_renderer_may_reuse_its_buffer() -> None:
    buf = ShardBuffer(H, W)
    img = np.random.default_rng(0).integers(0, 256, (H, W, 3), dtype=np.uint8)
    d = buf.add_desired(img)
    buf.add_sample(
        cur_rgb=img, des_index=d, vel=np.zeros(6), wTc=np.eye(4), wTd=np.eye(4), K=K_CANON,
        scene_scale=1.0, episode=0, step=0, scene_seed=0,
    )  # fmt: skip
    before = img.copy()
    img[:] = 0
    arrays = buf.arrays()
    assert np.array_equal(arrays["cur_rgb"][0], before) and np.array_equal(arrays["des_rgb"][0], before)


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("cur_rgb", np.zeros((H, W, 3), np.float32), "cur_rgb: dtype float32"),
        ("cur_rgb", np.zeros((W, H, 3), np.uint8), "cur_rgb: shape"),
        ("vel", np.zeros(5), "vel:"),
        ("wTc", np.eye(3), "wTc:"),
        ("des_index", 4, "des_index: 4 is not a desired image"),
        ("step", 2.5, "step: expected an integer"),
        ("step", 2**40, "step: .* does not fit int32"),
        ("coarse_match", np.zeros((2, 2, 2)), "coarse_match: this buffer has no coarse grid"),
    ],
)
def test_buffer_rejects_a_bad_field_by_name(field: str, value, match: str) -> None:
    buf = ShardBuffer(H, W)
    d = buf.add_desired(np.arange(H * W * 3, dtype=np.uint8).reshape(H, W, 3))
    sample = dict(
        cur_rgb=np.ones((H, W, 3), np.uint8), des_index=d, vel=np.zeros(6), wTc=np.eye(4), wTd=np.eye(4), K=K_CANON,
        scene_scale=1.0, episode=0, step=0, scene_seed=0,
    )  # fmt: skip
    with pytest.raises(ShardError, match=match) as err:
        buf.add_sample(**{**sample, field: value})
    assert err.value.array == field
    assert len(buf) == 0


def test_buffer_with_a_coarse_grid_requires_both_coarse_arrays() -> None:
    buf = ShardBuffer(H, W, coarse_grid=(3, 4))
    d = buf.add_desired(np.arange(H * W * 3, dtype=np.uint8).reshape(H, W, 3))
    sample = dict(
        cur_rgb=np.ones((H, W, 3), np.uint8), des_index=d, vel=np.zeros(6), wTc=np.eye(4), wTd=np.eye(4), K=K_CANON,
        scene_scale=1.0, episode=0, step=0, scene_seed=0, coarse_match=np.zeros((3, 4, 2)),
    )  # fmt: skip
    with pytest.raises(ShardError, match="coarse_valid: required"):
        buf.add_sample(**sample)
    with pytest.raises(ShardError, match="coarse_valid: float64"):
        buf.add_sample(**sample, coarse_valid=np.zeros((3, 4)))


# -- validation ------------------------------------------------------------------------------------------------------
def _corrupt(arrays: dict, name: str, how: str) -> None:
    if how == "nan":
        arrays[name][2, 1] = np.nan
    elif how == "wrong dtype":
        arrays[name] = arrays[name].astype(np.float64)
    elif how == "constant":
        arrays[name][1] = 7
    elif how == "out of range":
        arrays[name][3] = arrays["des_rgb"].shape[0] if name == "des_index" else 60.0
    elif how == "wrong shape":
        arrays[name] = arrays[name][:, :-1]
    elif how == "drop":
        del arrays[name]
    elif how == "not rigid":
        arrays[name][0, :3, :3] *= 2
    elif how == "zero":
        arrays[name][4] = 0
    elif how == "negative focal":
        arrays[name][5, 1, 1] = -3


@pytest.mark.parametrize(
    ("name", "how", "match"),
    [
        ("vel", "nan", r"vel\[2\]: not finite"),
        ("vel", "wrong dtype", "vel: dtype float64, expected float32"),
        ("cur_rgb", "constant", r"cur_rgb\[1\]: constant image"),
        ("des_rgb", "constant", r"des_rgb\[1\]: constant image"),
        ("des_index", "out of range", r"des_index\[3\]: 4 is outside \[0, M=4\)"),
        ("vel", "out of range", r"vel\[3\]: label out of range"),
        ("cur_rgb", "wrong shape", r"cur_rgb: shape \(12, 23, 32, 3\), expected \(12, 24, 32, 3\)"),
        ("wTd", "wrong shape", r"wTd: shape"),
        ("beta", "drop", "beta: missing"),
        ("coarse_valid", "drop", "coarse_valid: missing"),
        ("wTc", "not rigid", r"wTc\[0\]: not a rigid transform"),
        ("scene_scale", "zero", r"scene_scale\[4\]: .* must be > 0"),
        ("K", "negative focal", r"K\[5\]: focal lengths must be positive"),
        ("coarse_match", "nan", r"coarse_match\[2\]: not finite"),
    ],
)
def test_validation_names_the_array_and_the_problem(name: str, how: str, match: str) -> None:
    arrays = make_buffer(n=12, per_desired=3, coarse=(3, 4)).arrays()
    _corrupt(arrays, name, how)
    with pytest.raises(ShardError, match=match) as err:
        validate_arrays(arrays, height=H, width=W)
    assert err.value.array == name


def test_validation_rejects_another_image_size_and_unknown_arrays() -> None:
    arrays = make_buffer().arrays()
    with pytest.raises(ShardError, match="cur_rgb: shape"):
        validate_arrays(arrays, height=W, width=H)
    with pytest.raises(ShardError, match="depth: unknown array"):
        validate_arrays({**arrays, "depth": np.zeros(3)}, height=H, width=W)


# -- round trip ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("coarse", [None, (3, 4)])
def test_round_trip_of_every_array_with_exact_dtypes(tmp_path: Path, coarse) -> None:
    buf = make_buffer(n=10, per_desired=4, coarse=coarse, policy_version=2)
    expected = buf.arrays()
    writer = make_writer(tmp_path)
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


def test_info_json_is_written_once_and_a_disagreeing_writer_is_refused(tmp_path: Path) -> None:
    make_writer(tmp_path, config={"a": 1})
    info = json.loads((tmp_path / "info.json").read_text())
    assert (info["schema"], info["height"], info["width"], info["backend"]) == (SCHEMA, H, W, "mujoco")
    assert np.allclose(info["K"], K_CANON) and info["config"] == {"a": 1} and info["created"]
    make_writer(tmp_path, config={"a": 2})  # another run's config: fine, info.json unchanged
    assert json.loads((tmp_path / "info.json").read_text()) == info
    with pytest.raises(ShardError, match=r"image size 24x32 \(HxW\), this writer has 48x32"):
        make_writer(tmp_path, height=2 * H)
    with pytest.raises(ShardError, match="backend 'mujoco', this writer has 'isaac'"):
        make_writer(tmp_path, backend="isaac")
    with pytest.raises(ShardError, match=r"K .* this writer has"):
        make_writer(tmp_path, K=K_CANON * [[2], [2], [1]])
    assert DatasetReader(tmp_path).info == info


def test_reader_without_info_json_names_the_root(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "nothing")):
        DatasetReader(tmp_path / "nothing")


def test_invalid_buffer_writes_nothing(tmp_path: Path) -> None:
    writer = make_writer(tmp_path)
    with pytest.raises(ShardError, match=r"vel\[0\]: label out of range"):
        writer.publish(ShardKey("hemisphere", 0, 0), make_buffer(vel_scale=100.0), sidecar={})
    assert listing(tmp_path) == {"shards": [], "_tmp": []}
    assert not (tmp_path / "manifest.jsonl").exists()


def test_reading_contiguous_slices(tmp_path: Path) -> None:
    buf = make_buffer(n=14, per_desired=3)
    a = buf.arrays()
    make_writer(tmp_path).publish(ShardKey("hemisphere", 0, 1), buf, sidecar={})
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


# -- publishing: atomicity, crashes, overwrite, concurrency ----------------------------------------------------------
def test_refuses_to_overwrite_a_published_shard(tmp_path: Path) -> None:
    writer = make_writer(tmp_path)
    key = ShardKey("hemisphere", 0, 3)
    writer.publish(key, make_buffer(seed=1), sidecar={})
    before = DatasetReader(tmp_path).read(key.id)
    with pytest.raises(ShardError, match="already published"):
        writer.publish(key, make_buffer(seed=2), sidecar={})
    # a racing writer that passed the check: the rename fails, the shard stays intact and nothing is left behind
    writer.is_published = lambda key: False  # type: ignore[method-assign]
    writer._refuse_existing = lambda key: None  # type: ignore[method-assign]
    with pytest.raises(ShardError, match="already exists"):
        writer.publish(key, make_buffer(seed=2), sidecar={})
    after = DatasetReader(tmp_path).read(key.id)
    for name in before:
        np.testing.assert_array_equal(after[name], before[name])
    assert listing(tmp_path)["_tmp"] == []
    assert len((tmp_path / "manifest.jsonl").read_text().splitlines()) == 1


def test_failed_publish_leaves_nothing_visible(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    writer = make_writer(tmp_path)
    key = ShardKey("hemisphere", 0, 0)
    real_replace = os.replace

    def failing_sidecar_replace(src, dst):
        if str(dst).endswith(f"{key.id}.json"):
            raise OSError(28, "No space left on device")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", failing_sidecar_replace)
    with pytest.raises(OSError, match="No space left"):
        writer.publish(key, make_buffer(), sidecar={})
    assert DatasetReader(tmp_path).shards == []
    assert listing(tmp_path) == {"shards": [], "_tmp": []}  # rolled back: the shard is out of shards/ again

    def failing_zarr_replace(src, dst):  # zarr writes every chunk file through a temp file + os.replace
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "replace", failing_zarr_replace)
    with pytest.raises(OSError, match="Input/output error"):
        writer.publish(key, make_buffer(), sidecar={})
    assert listing(tmp_path) == {"shards": [], "_tmp": []}

    monkeypatch.setattr(os, "replace", real_replace)
    writer.publish(key, make_buffer(), sidecar={})  # the key is free: a retry succeeds
    assert [s.id for s in DatasetReader(tmp_path).shards] == [key.id]
    assert writer.clean_stale() == []


@pytest.mark.parametrize("stage", ["zarr", "rename", "sidecar"])
def test_crash_mid_publish_is_invisible_and_clean_stale_removes_the_leftovers(tmp_path: Path, stage: str) -> None:
    writer = make_writer(tmp_path)
    writer.publish(ShardKey("hemisphere", 0, 0), make_buffer(seed=0), sidecar={})
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
            writer.publish(crashed, make_buffer(seed=1), sidecar={})

    removed = writer.clean_stale()
    assert removed
    if stage == "sidecar":
        assert f"shards/{crashed.id}.zarr" in removed
    else:
        assert all(r.startswith(f"_tmp/{crashed.id}") for r in removed)
    assert listing(tmp_path) == {"shards": ["hemisphere-r0000-000000.json", "hemisphere-r0000-000000.zarr"], "_tmp": []}

    writer.publish(crashed, make_buffer(seed=1), sidecar={})  # rerunning fills the hole
    reader.refresh()
    assert [s.id for s in reader.shards] == ["hemisphere-r0000-000000", crashed.id]
    np.testing.assert_array_equal(reader.read(crashed.id)["vel"], make_buffer(seed=1).arrays()["vel"])
    assert writer.clean_stale() == []


def test_clean_stale_keeps_what_live_or_unknown_writers_may_still_be_writing(tmp_path: Path) -> None:
    from datagen.shards import _host_tag

    writer = make_writer(tmp_path)
    tmp = tmp_path / "_tmp"
    live = tmp / f"hemisphere-r0000-000004~{_host_tag()}~{os.getppid()}~abc.zarr"  # our parent: alive, this host
    dead = tmp / f"hemisphere-r0000-000005~{_host_tag()}~{2**22 + 12345}~abc.zarr"  # beyond pid_max: no such process
    remote = tmp / "hemisphere-r0000-000006~otherhost~123~abc.zarr"  # cannot be checked: only by age
    for p in (live, dead, remote):
        p.mkdir()
    assert writer.clean_stale() == ["_tmp/" + dead.name]
    assert writer.clean_stale(min_age_s=0) == ["_tmp/" + remote.name]
    assert live.exists()


def test_a_zarr_without_its_sidecar_is_not_listed(tmp_path: Path) -> None:
    writer = make_writer(tmp_path)
    writer.publish(ShardKey("hemisphere", 0, 0), make_buffer(), sidecar={})
    shards = tmp_path / "shards"
    shutil.copytree(shards / "hemisphere-r0000-000000.zarr", shards / "hemisphere-r0000-000001.zarr")
    shutil.copy(shards / "hemisphere-r0000-000000.json", shards / "hemisphere-r0000-000002.json")
    reader = DatasetReader(tmp_path)
    assert [s.id for s in reader.shards] == ["hemisphere-r0000-000000"]
    assert not writer.is_published(ShardKey("hemisphere", 0, 1))
    assert not writer.is_published(ShardKey("hemisphere", 0, 2))
    with pytest.raises(ShardError, match="without its data"):
        writer.publish(ShardKey("hemisphere", 0, 2), make_buffer(), sidecar={})


def test_refresh_sees_new_shards_and_the_manifest_has_one_line_each(tmp_path: Path) -> None:
    writer = make_writer(tmp_path)
    reader = DatasetReader(tmp_path)
    assert reader.shards == [] and len(reader) == 0
    keys = [ShardKey("hemisphere", 0, 1), ShardKey("dagger", 1, 0), ShardKey("hemisphere", 0, 0)]
    for i, key in enumerate(keys):
        writer.publish(key, make_buffer(seed=i, n=3 + i), sidecar={"i": i})
    assert reader.shards == []  # until refreshed
    listed = reader.refresh()
    assert [s.id for s in listed] == ["dagger-r0001-000000", "hemisphere-r0000-000000", "hemisphere-r0000-000001"]
    assert len(reader) == 3 + 4 + 5
    lines = [json.loads(line) for line in (tmp_path / "manifest.jsonl").read_text().splitlines()]
    assert [line["id"] for line in lines] == [k.id for k in keys]
    for line in lines:
        assert line == json.loads((tmp_path / "shards" / f"{line['id']}.json").read_text())


def test_concurrent_publishers_in_two_processes(tmp_path: Path) -> None:
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
        expected = make_buffer(seed=shard.key.index).arrays()
        got = reader.read(shard, all_desired=True)
        for name, a in expected.items():
            np.testing.assert_array_equal(got[name], a, err_msg=f"{shard.id} {name}")
    lines = [json.loads(line) for line in (tmp_path / "manifest.jsonl").read_text().splitlines()]
    assert sorted(line["id"] for line in lines) == sorted(ids)
    assert len({line["worker"] for line in lines}) == 2
    assert listing(tmp_path)["_tmp"] == []


def test_import_is_light() -> None:
    code = "import sys, datagen.shards; print(sorted({'torch', 'mujoco', 'ray', 'wandb'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "[]"


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
def test_a_damaged_shard_is_refused_naming_the_shard_and_the_array(tmp_path: Path, how: str) -> None:
    writer = make_writer(tmp_path)
    writer.publish(ShardKey("hemisphere", 0, 0), make_buffer(seed=1), sidecar={})
    good = make_buffer(seed=2).arrays()
    writer.publish(ShardKey("hemisphere", 0, 1), make_buffer(seed=2), sidecar={})
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
