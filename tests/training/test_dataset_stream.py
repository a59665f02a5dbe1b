"""The shard stream's parts one by one: producer mixing, the train loop, validation slicing and dealing, quarantine,
quarter turns, the coarse grid, noise, the loader's wiring and the wait for data.

Small roots of 8 px images with chosen scene seeds, so that every split, run and slice is known by hand: `TRAIN_SEEDS`
and `VAL_SEEDS` are scenes that `split_of_scene` puts in each split at VAL_FRACTION. Each sample's `step` is its uid.
The train loop is driven through stand-ins for the reader and the clock (`_Source`, `_Clock`), so that blocks,
re-listing, waiting and warnings are counted exactly, without sleeping.
"""

from __future__ import annotations

import functools
import json
import logging
import pickle
import shutil
import types
from collections import Counter
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import training.dataset as ds
from configs.schema import DataConfig
from policy.rotation import rotate_label, turn_image
from shards import DamagedShardError, ShardBuffer, ShardError, ShardKey, ShardMeta
from sim.geometry import make_pose, relative_pose, rot_z
from tests.fixtures.factories import make_writer
from tests.training.test_dataset import data_cfg
from training.dataset import (
    ShardStream,
    _augment,
    _init_worker,
    _NoiseBank,
    collate,
    loader_threads,
    make_loader,
    split_of_scene,
    wait_for_shards,
)

pytestmark = pytest.mark.unit

H = W = 8
K = np.array([[8.0, 0.0, 4.0], [0.0, 8.0, 4.0], [0.0, 0.0, 1.0]])
VAL_FRACTION = 0.5
TRAIN_SEEDS = [s for s in range(1000) if split_of_scene(s, VAL_FRACTION) == "train"]
VAL_SEEDS = [s for s in range(1000) if split_of_scene(s, VAL_FRACTION) == "val"]
T, V = TRAIN_SEEDS, VAL_SEEDS

# The layout root: (producer, index, scene seed of each sample). Validation runs, by hand: hemisphere 0 holds val
# samples 3..13 and 18..19, hemisphere 1 is all val, hemisphere 2 has one val scene of four (val weight 4 x 1/4 = 1);
# dagger 0 is all train.
LAYOUT = [
    ("dagger", 0, [T[0]] * 3 + [T[1]] * 3),
    ("hemisphere", 0, [T[2]] * 3 + [V[0]] * 5 + [V[1]] * 6 + [T[3]] * 4 + [V[2]] * 2 + [T[4]] * 4),
    ("hemisphere", 1, [V[3]] * 8),
    ("hemisphere", 2, [V[4], T[5], T[6], T[7]]),
]
D0, H0, H1, H2 = "dagger-r0000-000000", "hemisphere-r0000-000000", "hemisphere-r0000-000001", "hemisphere-r0000-000002"


def cfg_for(root: Path | str, **kw: Any) -> DataConfig:
    """test_dataset.py's config with this file's split, blocks of 4 and no shuffling beyond one sample."""
    return data_cfg(root, **{"val_fraction": VAL_FRACTION, "block": 4, "shuffle_buffer": 1, **kw})


def publish_seeds(
    writer: Any,
    producer: str,
    index: int,
    seeds: list[int],
    first_uid: int,
    *,
    grid: tuple[int, int] | None = None,
    yaws: list[float] | None = None,
) -> list[int]:
    """Publish one shard whose sample i has scene seed seeds[i] and step first_uid + i; returns the uids.

    With `grid`, sample i's coarse matches count up from first_uid + i cell by cell and only cell (0, 0) is valid.
    With `yaws`, sample i's camera is turned by yaws[i] rad about its optical axis from the desired one."""
    rng = np.random.default_rng(first_uid)
    buf = ShardBuffer(writer.height, writer.width, coarse_grid=grid)
    d = buf.add_desired(rng.integers(0, 256, (writer.height, writer.width, 3), dtype=np.uint8))
    for i, seed in enumerate(seeds):
        extra = {}
        if grid is not None:
            valid = np.zeros(grid, bool)
            valid[0, 0] = True
            match = np.arange(grid[0] * grid[1] * 2, dtype=np.float32).reshape(*grid, 2) + first_uid + i
            extra = {"coarse_match": match, "coarse_valid": valid}
        yaw = 0.0 if yaws is None else yaws[i]
        buf.add_sample(
            cur_rgb=rng.integers(0, 256, (writer.height, writer.width, 3), dtype=np.uint8), des_index=d,
            vel=np.full(6, 0.01 * (i + 1)), wTc=make_pose(rot_z(yaw), [0.05, -0.02, 0.1]), wTd=np.eye(4), K=writer.K,
            scene_scale=1.0, episode=i, step=first_uid + i, scene_seed=seed, **extra,
        )  # fmt: skip
    writer.publish(ShardKey(producer, 0, index), buf)
    return list(range(first_uid, first_uid + len(seeds)))


@pytest.fixture(scope="module")
def layout(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, list[int]]]:
    """The LAYOUT root and the uids of each shard."""
    root = tmp_path_factory.mktemp("layout") / "data"
    writer = make_writer(root, height=H, width=W, K=K)
    uids: dict[str, list[int]] = {}
    for producer, index, seeds in LAYOUT:
        first = sum(map(len, uids.values()))
        uids[ShardKey(producer, 0, index).id] = publish_seeds(writer, producer, index, seeds, first)
    return root, uids


def val_uids(uids: dict[str, list[int]], *shards: str) -> list[int]:
    """The val samples of `shards` (all shards when none is named), by the seeds LAYOUT gave them."""
    seeds = {ShardKey(p, 0, i).id: s for p, i, s in LAYOUT}
    return sorted(u for sid in shards or seeds for u, s in zip(uids[sid], seeds[sid], strict=True) if s in VAL_SEEDS)


def copy_root(layout_root: Path, tmp_path: Path) -> Path:
    """A private copy of a module root, for a test that quarantines or republishes."""
    root = tmp_path / "data"
    shutil.copytree(layout_root, root)
    return root


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "training.dataset"]


def steps(records: list[dict]) -> list[int]:
    return [int(r["step"]) for r in records]


def val_pass(stream: ShardStream) -> list[int]:
    """The steps of one pass of a val stream, sorted; at most 100 (more is a train stream: endless)."""
    return sorted(int(s["step"]) for s in islice(stream, 100))


# -- weights, plan and picks (no files) ------------------------------------------------------------------------------


def _meta(producer: str, index: int, n: int, seeds: list[int] | None = None) -> ShardMeta:
    key = ShardKey(producer, 0, index)
    sidecar = {} if seeds is None else {"seeds": list(seeds)}
    return ShardMeta(key.id, key, Path(f"/nowhere/{key.id}.zarr"), n, 1, sidecar)


def test_weight_is_the_expected_samples_of_the_split() -> None:
    # Five distinct scenes, two of them train: 40 x 2/5 = 16 train samples and 24 val samples expected.
    shard = _meta("hemisphere", 0, 40, [T[0], V[0], T[1], V[1], V[2]])
    assert ShardStream(cfg_for("/nowhere"), "train", 0)._weight(shard) == pytest.approx(16.0)
    assert ShardStream(cfg_for("/nowhere"), "val", 0)._weight(shard) == pytest.approx(24.0)
    # An older sidecar without seeds: the split's share of scenes, here val_fraction 0.25.
    cfg = cfg_for("/nowhere", val_fraction=0.25)
    for seeds in (None, []):
        old = _meta("hemisphere", 1, 40, seeds)
        assert ShardStream(cfg, "train", 0)._weight(old) == pytest.approx(30.0)
        assert ShardStream(cfg, "val", 0)._weight(old) == pytest.approx(10.0)


def test_plan_draws_blocks_so_that_dagger_supplies_its_fraction_of_samples() -> None:
    # Train weights by hand (block 8): dagger 40 and 5 (p 8/9, 1/9; a block keeps 8 and 4 of 8 samples), hemisphere
    # 20 and 4 (p 5/6, 1/6; a block keeps 4 of 8, and the 4-sample shard gives 4). Expected samples per block: dagger
    # 8/9*8 + 1/9*4 = 68/9, hemisphere 5/6*4 + 1/6*4 = 4. Block probabilities ~ 0.3/(68/9) and 0.7/4: 27/146, 119/146.
    d1, d2 = _meta("dagger", 0, 40, [T[0]]), _meta("dagger", 1, 10, [T[1], V[0]])
    h1, h2 = _meta("hemisphere", 0, 40, [T[2], T[3], V[1], V[2]]), _meta("hemisphere", 1, 4, [T[4]])
    stream = ShardStream(cfg_for("/nowhere", block=8, dagger_fraction=0.3), "train", 0)
    plan = stream._plan([h1, d1, h2, d2])
    assert [(pool, p_shard.tolist()) for _, pool, p_shard in plan] == [
        ([d1, d2], pytest.approx([8 / 9, 1 / 9])),
        ([h1, h2], pytest.approx([5 / 6, 1 / 6])),
    ]
    assert [p for p, _, _ in plan] == pytest.approx([27 / 146, 119 / 146])
    # The stated contract: the expected share of DAgger samples is dagger_fraction.
    kept = [27 / 146 * 68 / 9, 119 / 146 * 4]
    assert kept[0] / sum(kept) == pytest.approx(0.3)


@pytest.mark.parametrize(("fraction", "producer"), [(1.0, "hemisphere"), (0.0, "dagger"), (0.3, "hemisphere")])
def test_plan_with_one_producer_uses_it_whatever_the_fraction(fraction: float, producer: str) -> None:
    pool = [_meta(producer, 0, 40, [T[0]]), _meta(producer, 1, 40, [T[1], V[0]])]
    plan = ShardStream(cfg_for("/nowhere", dagger_fraction=fraction), "train", 0)._plan(pool)
    assert len(plan) == 1
    p, got, p_shard = plan[0]
    assert p == 1.0 and got == pool and p_shard.tolist() == pytest.approx([2 / 3, 1 / 3])


def test_pick_shard_follows_the_plan_probabilities() -> None:
    a, b, c, d, e = (_meta("hemisphere", i, 10) for i in range(5))
    plan = [(0.25, [a, b], np.array([0.2, 0.8])), (0.75, [c, d, e], np.array([0.5, 0.25, 0.25]))]
    rng = np.random.default_rng(0)
    counts = Counter(ShardStream._pick_shard(plan, rng).id for _ in range(4000))
    share = [counts[s.id] / 4000 for s in (a, b, c, d, e)]
    # Expected 0.25 x (0.2, 0.8) and 0.75 x (0.5, 0.25, 0.25); 0.03 is four standard errors at most.
    assert share == pytest.approx([0.05, 0.2, 0.375, 0.1875, 0.1875], abs=0.03)
    one = [(1.0, [a, b], np.array([1.0, 0.0]))]
    assert {ShardStream._pick_shard(one, rng).id for _ in range(50)} == {a.id}


# -- the train loop, on a stand-in reader and clock ------------------------------------------------------------------


class _Clock:
    """Stands in for the module's `time`: `monotonic()` is whatever the test set, `sleep(s)` moves it on by s."""

    def __init__(self, t: float = 1000.0) -> None:
        self.t, self.slept = t, []

    def monotonic(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        if len(self.slept) > 5000:
            raise RuntimeError("5000 polls: an endless wait")
        self.t += seconds


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> _Clock:
    """The module's clock, stood in for: nothing sleeps, and an endless wait fails at once."""
    fake = _Clock()
    monkeypatch.setattr(ds, "time", fake)
    return fake


class _Source:
    """Stands in for the reader under a train stream: lists `shards` (less those quarantined, and none while
    `available(t)` says so), reads records {shard, i, serial} of [start, stop) with a serial number per record read,
    moves the clock by `step_s` per read, and fails the reads of the shards in `fail`."""

    def __init__(self, shards: list[ShardMeta], clock: _Clock, step_s: float = 0.0) -> None:
        self.shards, self.clock, self.step_s = shards, clock, step_s
        self.available = lambda t: True
        self.fail: set[str] = set()
        self.gone: list[tuple[str, str]] = []
        self.listings = self.served = self.yielded = 0
        self.reads: list[dict] = []

    def listing(self) -> list[ShardMeta]:
        self.listings += 1
        if not self.available(self.clock.t - 1000.0):
            return []
        return [s for s in self.shards if s.id not in {g for g, _ in self.gone}]

    def read(self, shard: ShardMeta, start: int, stop: int) -> list[dict]:
        if not 0 <= start <= stop <= shard.n:  # what DatasetReader.read refuses
            raise ValueError(f"slice [{start}:{stop}] is outside [0:{shard.n}]")
        if len(self.reads) > 20_000:
            raise RuntimeError("20000 reads: the stream never yields")
        self.reads.append({"shard": shard.id, "start": start, "stop": stop, "listings": self.listings,
                           "held": self.served - self.yielded, "yielded": self.yielded})  # fmt: skip
        self.clock.t += self.step_s
        if shard.id in self.fail:
            raise DamagedShardError("injected damage", shard=shard.id)  # a message that does not name the shard
        out = [{"shard": shard.id, "i": i, "serial": self.served + j} for j, i in enumerate(range(start, stop))]
        self.served += len(out)
        return out

    def quarantine(self, shard: ShardMeta, reason: str) -> Path:  # DatasetReader.quarantine
        self.gone.append((shard.id, reason))
        return Path("/stand-in/quarantine")


def train_on(source: _Source, seed: int = 0, **kw: Any) -> tuple[ShardStream, Any]:
    """A train stream over `source` (through its `_listing`, `_read` and reader) and its record generator."""
    stream = ShardStream(cfg_for("/stand-in", **kw), "train", seed)
    stream._listing, stream._read, stream._reader = source.listing, source.read, source  # type: ignore[method-assign]
    return stream, stream._train_records(np.random.default_rng(seed))


def pull(source: _Source, records: Any, n: int) -> list[dict]:
    out = []
    for record in islice(records, n):
        source.yielded += 1
        out.append(record)
    return out


def _is_cyclic_run(indices: set[int], length: int, n: int) -> bool:
    return any(indices == {(s + j) % n for j in range(length)} for s in range(n))


@pytest.mark.parametrize(("n", "length"), [(10, 4), (3, 3)])
def test_a_block_is_a_run_of_block_samples_that_wraps_around_the_shard_end(n: int, length: int, clock: _Clock) -> None:
    # shuffle_buffer 1: a block comes out whole (in some order) before the next is read.
    source = _Source([_meta("hemisphere", 0, n)], clock)
    _, records = train_on(source, block=4, shuffle_buffer=1)
    got = pull(source, records, 60 * length)
    blocks = [{r["i"] for r in got[k : k + length]} for k in range(0, len(got), length)]
    assert all(_is_cyclic_run(b, length, n) for b in blocks), blocks[:5]
    # Every start is drawn, the ones that wrap too (a wrap's second read starts at 0 and is shorter than a block).
    starts = {read["start"] for read in source.reads if read["start"] != 0 or read["stop"] == length}
    assert starts == set(range(n))


def test_the_shuffle_buffer_holds_shuffle_buffer_samples_and_yields_each_read_sample_once(clock: _Clock) -> None:
    source = _Source([_meta("hemisphere", 0, 50)], clock)
    _, records = train_on(source, block=1, shuffle_buffer=6)
    got = pull(source, records, 300)
    serials = [r["serial"] for r in got]
    assert len(set(serials)) == len(serials)  # nothing duplicated, nothing lost from the buffer
    assert serials != sorted(serials)  # shuffled
    # A sample leaves only when the buffer holds shuffle_buffer samples: every read after the first sample came
    # out finds exactly shuffle_buffer - 1 held back.
    held = [read["held"] for read in source.reads if read["yielded"] > 0]
    assert held and set(held) == {5}
    assert [read["held"] for read in source.reads if read["yielded"] == 0] == [0, 1, 2, 3, 4, 5]


def test_the_shard_list_is_refreshed_after_as_many_blocks_as_shards_when_refresh_seconds_is_0(clock: _Clock) -> None:
    source = _Source([_meta("hemisphere", i, 5) for i in range(3)], clock)
    _, records = train_on(source, block=1, refresh_seconds=0.0)
    pull(source, records, 30)
    assert [read["listings"] for read in source.reads] == [1 + j // 3 for j in range(30)]


def test_the_shard_list_is_refreshed_every_refresh_seconds(clock: _Clock) -> None:
    # Three shards (a block count would re-list every 3 blocks); each read takes 0.25 s: re-list every 2 blocks.
    source = _Source([_meta("hemisphere", i, 5) for i in range(3)], clock, step_s=0.25)
    _, records = train_on(source, block=1, refresh_seconds=0.5)
    pull(source, records, 30)
    assert [read["listings"] for read in source.reads] == [1 + j // 2 for j in range(30)]
    assert not clock.slept


def test_an_empty_root_is_polled_with_a_warning_every_minute_until_shards_come(
    clock: _Clock, caplog: pytest.LogCaptureFixture
) -> None:
    # No shards for the first 120 s, then data for 5 s, then none again until 190 s. Each read takes 1 s.
    source = _Source([_meta("hemisphere", 0, 5)], clock, step_s=1.0)
    source.available = lambda t: 120.0 < t < 125.0 or t > 190.0
    stream, records = train_on(source, block=1, refresh_seconds=0.0)
    with caplog.at_level(logging.WARNING, logger="training.dataset"):
        got = pull(source, records, 6)
    assert len(got) == 6
    assert set(clock.slept) == {0.5}
    # Warnings at 60 s and 120 s of the first wait, and 60 s into the second: the count restarts with each wait.
    messages = _warnings(caplog)
    assert len(messages) == 3, messages
    assert all(m.startswith(f"{stream.cfg.root}: ") and "no train shards after 60 s" in m for m in messages)


def test_a_damaged_shard_is_quarantined_and_the_train_stream_goes_on_without_it(
    clock: _Clock, caplog: pytest.LogCaptureFixture
) -> None:
    good, bad = _meta("hemisphere", 0, 6), _meta("hemisphere", 1, 6)
    source = _Source([good, bad], clock)
    source.fail = {bad.id}
    stream, records = train_on(source, block=2)
    with caplog.at_level(logging.WARNING, logger="training.dataset"):
        got = pull(source, records, 40)
    assert len(got) == 40 and {r["shard"] for r in got} == {good.id}
    assert stream.damaged == [bad.id]
    assert source.gone == [(bad.id, "injected damage")]
    # Listed again at once, without it.
    after = next(i for i, read in enumerate(source.reads) if read["shard"] == bad.id) + 1
    assert source.reads[after]["listings"] == source.reads[after - 1]["listings"] + 1
    (message,) = _warnings(caplog)
    assert message.startswith("/stand-in: ")  # the root
    for part in (bad.id, "/stand-in/quarantine", "(1 damaged so far)", "injected damage"):
        assert part in message


# -- validation: slices, dealing, partition --------------------------------------------------------------------------


def _opened(stream: ShardStream) -> dict[str, ShardMeta]:
    reader = stream._open()
    assert reader is not None
    return {s.id: s for s in reader.shards}


def test_listing_keeps_the_shards_with_samples_of_the_split(layout) -> None:
    root, _ = layout
    assert [s.id for s in ShardStream(cfg_for(root), "val", 0)._listing()] == [H0, H1, H2]  # H2: weight 1
    assert [s.id for s in ShardStream(cfg_for(root), "train", 0)._listing()] == [D0, H0, H2]
    # With the matching loss, a hemisphere shard without coarse arrays is refused at listing, before any read; a
    # DAgger shard without them is fine (its samples get an all-invalid grid).
    with pytest.raises(ShardError, match=H0) as err:
        ShardStream(cfg_for(root), "train", 0, with_coarse=True)._listing()
    assert err.value.shard == H0


def test_split_slices_are_the_runs_of_the_split_cut_into_blocks(layout) -> None:
    root, _ = layout
    val = ShardStream(cfg_for(root, block=4), "val", 0)
    assert val._split_slices(_opened(val)[H0]) == [(3, 7), (7, 11), (11, 14), (18, 20)]
    assert val._split_slices(_opened(val)[H1]) == [(0, 4), (4, 8)]
    assert val._split_slices(_opened(val)[D0]) == []
    train = ShardStream(cfg_for(root, block=4), "train", 0)
    assert train._split_slices(_opened(train)[H0]) == [(0, 3), (14, 18), (20, 24)]
    assert train._split_slices(_opened(train)[H2]) == [(1, 4)]


def test_a_val_pass_yields_each_val_sample_once_and_the_same_every_pass(layout) -> None:
    root, uids = layout
    stream = ShardStream(cfg_for(root), "val", 0)
    for _ in range(2):
        assert val_pass(stream) == val_uids(uids)


def test_val_slices_are_dealt_to_the_least_loaded_stream(layout) -> None:
    # Val slices in listing order (block 4): H0 4, 4, 3, 2; H1 4, 4; H2 1. Dealt in turn to the least-loaded stream:
    # two streams get 11 and 11 samples, three get 8, 8 and 6.
    root, uids = layout
    stream = ShardStream(cfg_for(root), "val", 0)
    for streams, sizes in ((2, [11, 11]), (3, [6, 8, 8])):
        parts = [steps(list(stream._val_records(i, streams))) for i in range(streams)]
        assert sorted(map(len, parts)) == sizes
        assert sorted(u for part in parts for u in part) == val_uids(uids)


def test_val_is_partitioned_over_ranks_and_loader_workers(layout, monkeypatch: pytest.MonkeyPatch) -> None:
    # Two ranks of two loader workers: four streams, dealt 4, 4, 3, 2 then 4 to the fourth, 4 to the third, 1 to the
    # first: 5, 4, 7, 6 samples.
    root, uids = layout
    parts = {}
    for rank in (0, 1):
        for worker in (0, 1):
            info = types.SimpleNamespace(id=worker, num_workers=2)
            monkeypatch.setattr(ds, "get_worker_info", lambda info=info: info)
            stream = ShardStream(cfg_for(root), "val", 0, rank=rank, world_size=2)
            parts[rank, worker] = val_pass(stream)
    assert sorted(u for part in parts.values() for u in part) == val_uids(uids)
    assert sorted(map(len, parts.values())) == [4, 5, 6, 7]


def test_stream_defaults() -> None:
    val, train = ShardStream(cfg_for("/x"), "val", 0), ShardStream(cfg_for("/x"), "train", 0)
    assert (val.rank, val.world_size, val.with_coarse, val.rot90, val.augment) == (0, 1, False, False, False)
    assert (train.rank, train.world_size, train.with_coarse, train.rot90, train.augment) == (0, 1, False, False, True)


def test_the_train_stream_is_reproducible_per_seed_and_new_on_every_pass(layout) -> None:
    root, _ = layout
    cfg = cfg_for(root, color_jitter=0.2, noise_std=0.05, block=8, shuffle_buffer=8)

    def take(stream: ShardStream) -> dict[str, torch.Tensor]:
        return collate(list(islice(iter(stream), 16)))

    stream = ShardStream(cfg, "train", 0)
    first, second = take(stream), take(stream)
    assert not torch.equal(first["step"], second["step"])  # a second pass is a new stream
    again = take(ShardStream(cfg, "train", 0))
    assert all(torch.equal(first[k], again[k]) for k in first)  # samples, and their colour and noise draws
    assert not torch.equal(first["step"], take(ShardStream(cfg, "train", 2))["step"])


def test_augmentation_at_zero_jitter_and_noise_changes_nothing(layout) -> None:
    # "0 turns it off": not even the draws of the stream move, so the samples are those of a stream without it.
    root, _ = layout
    cfg = cfg_for(root, block=8, shuffle_buffer=4)
    on = collate(list(islice(iter(ShardStream(cfg, "train", 1, augment=True)), 16)))
    off = collate(list(islice(iter(ShardStream(cfg, "train", 1, augment=False)), 16)))
    assert all(torch.equal(on[k], off[k]) for k in on)


# -- quarantine during validation ------------------------------------------------------------------------------------


def _fail_once(stream: ShardStream, shard_id: str, when: str) -> None:
    """Make the stream's reader fail once on `shard_id`: while slicing it (scene seeds) or while reading a slice."""
    reader = stream._open()
    assert reader is not None
    real, done = reader.read, []

    def read(shard: Any, start: int = 0, stop: int | None = None, names: Any = None, **kw: Any) -> Any:
        sid = shard if isinstance(shard, str) else shard.id
        slicing = list(names or []) == ["scene_seed"]
        if sid == shard_id and not done and slicing == (when == "slicing"):
            done.append(1)
            raise DamagedShardError(f"shard {sid}: cur_rgb: injected damage", array="cur_rgb", shard=sid)
        return real(shard, start, stop, names, **kw)

    reader.read = read  # type: ignore[method-assign]


@pytest.mark.parametrize("when", ["slicing", "reading"])
def test_a_shard_damaged_during_a_val_pass_is_quarantined_once_and_the_pass_goes_on(
    layout, tmp_path: Path, when: str, caplog: pytest.LogCaptureFixture
) -> None:
    root = copy_root(layout[0], tmp_path)
    uids = layout[1]
    stream = ShardStream(cfg_for(root), "val", 0)
    _fail_once(stream, H0, when)  # the first of three val shards; this stream holds all four of its slices
    with caplog.at_level(logging.WARNING, logger="training.dataset"):
        got = val_pass(stream)
    assert got == val_uids(uids, H1, H2)
    assert stream.damaged == [H0]
    (reason,) = (root / "quarantine").glob("*.reason.txt")
    assert "injected damage" in reason.read_text()
    (message,) = _warnings(caplog)
    assert "(1 damaged so far)" in message and "injected damage" in message


def test_a_shard_republished_after_quarantine_is_weighed_and_sliced_afresh(
    layout, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = copy_root(layout[0], tmp_path)
    uids = layout[1]
    stream = ShardStream(cfg_for(root), "val", 0)
    assert val_pass(stream) == val_uids(uids)
    with caplog.at_level(logging.WARNING, logger="training.dataset"):
        stream._quarantine(_opened(stream)[H1], DamagedShardError(f"shard {H1}: des_rgb: test damage", shard=H1))
    (message,) = _warnings(caplog)
    for part in (str(root), H1, str(root / "quarantine"), "(1 damaged so far)", "des_rgb: test damage"):
        assert part in message
    assert stream.damaged == [H1]
    # The producer makes it again, smaller and with other scenes: 6 samples, val ones at 1, 2, 4 and 5.
    seeds = [T[8], V[5], V[5], T[8], V[6], V[6]]
    new = publish_seeds(make_writer(root, height=H, width=W, K=K), "hemisphere", 1, seeds, 100)
    assert val_pass(stream) == sorted(val_uids(uids, H0, H2) + [new[i] for i in (1, 2, 4, 5)])
    assert stream._weight(_opened(stream)[H1]) == pytest.approx(6 * 2 / 3)  # two of its three scenes are val


def test_pickled_streams_leave_their_reader_behind(layout) -> None:
    root, _ = layout
    stream = ShardStream(cfg_for(root), "val", 7, rank=1, world_size=2)
    stream._open()
    copy = pickle.loads(pickle.dumps(stream))
    assert copy._reader is None and stream._reader is not None
    assert (copy.seed, copy.split, copy.rank, copy.world_size) == (7, "val", 1, 2)


# -- quarter turns ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def turns_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """H1: 12 samples with 2 x 2 coarse grids, 4 of a val scene then 8 of a train scene, each turned a different yaw
    from its desired camera; its sidecar is an older one, without the "coarse" flag. Beside it D0, 3 train samples
    without matches, and H0, 3 train samples with matches but damaged (a chunk file gone; no test reads it)."""
    root = tmp_path_factory.mktemp("turns") / "data"
    writer = make_writer(root, height=H, width=W, K=K)
    publish_seeds(writer, "dagger", 0, [T[1]] * 3, 100)
    publish_seeds(writer, "hemisphere", 0, [T[2]] * 3, 200, grid=(2, 2))
    publish_seeds(
        writer, "hemisphere", 1, [V[0]] * 4 + [T[0]] * 8, 0, grid=(2, 2), yaws=[0.3 * i - 1.5 for i in range(12)]
    )
    victim = root / "shards" / f"{H0}.zarr"
    next(p for p in (victim / "cur_rgb").rglob("*") if p.is_file() and p.name != "zarr.json").unlink()
    side = root / "shards" / f"{H1}.json"
    side.write_text(json.dumps({k: v for k, v in json.loads(side.read_text()).items() if k != "coarse"}))
    return root


def _turned(stream: ShardStream, start: int = 0, stop: int = 12) -> list[dict]:
    return stream._read(_opened(stream)[H1], start, stop)


def test_turned_samples_carry_their_turned_image_label_and_matches(turns_root: Path) -> None:
    stream = ShardStream(cfg_for(turns_root, rot90_max_deg=180.0), "train", 0, with_coarse=True, rot90=True)
    records = _turned(stream)
    assert steps(records) == list(range(4, 12))
    raw = stream._open().read(_opened(stream)[H1], 0, 12)  # as stored
    assert {r["turn"] for r in records} - {0}, "every turn drawn was 0: nothing checked"
    for r in records:
        i, k = r["step"], r["turn"]
        assert r["vel"].dtype == np.float32 and r["coarse_match"].dtype == np.float32
        dTc = relative_pose(raw["wTd"][i], raw["wTc"][i])
        vel = raw["vel"][i] if k == 0 else rotate_label(dTc, k, 1.0)
        np.testing.assert_allclose(r["vel"], vel, atol=1e-6)
        assert np.array_equal(r["cur"], turn_image(raw["cur_rgb"][i], k) if k else raw["cur_rgb"][i])
        # The desired image stays: the matches (desired-patch coordinates) move with the current patches.
        assert np.array_equal(r["coarse_match"], np.rot90(raw["coarse_match"][i], k, axes=(0, 1)))
        assert np.array_equal(r["coarse_valid"], np.rot90(raw["coarse_valid"][i], k, axes=(0, 1)))


def test_train_turns_are_drawn_per_read_and_reproducible_per_seed(turns_root: Path) -> None:
    cfg = cfg_for(turns_root, rot90_max_deg=180.0)

    def turns(seed: int, reads: int = 1) -> list[list[int]]:
        stream = ShardStream(cfg, "train", seed, rot90=True)
        return [[r["turn"] for r in _turned(stream)] for _ in range(reads)]

    first, second = turns(0, reads=2)
    assert first != second  # the same samples read again are turned afresh
    assert turns(0) == [first]  # the same seed: the same turns
    assert turns(2) != [first]


def test_val_turns_are_a_function_of_the_sample(turns_root: Path) -> None:
    # The same turns in every pass, whatever the seed and however the samples are cut into slices.
    def turns(seed: int, block: int, passes: int = 1) -> list[dict[int, int]]:
        stream = ShardStream(cfg_for(turns_root, rot90_max_deg=180.0, block=block), "val", seed, rot90=True)
        return [{r["step"]: r["turn"] for r in stream._val_records(0, 1)} for _ in range(passes)]

    first, second = turns(0, 4, passes=2)
    assert sorted(first) == [0, 1, 2, 3] and first == second
    assert len(set(first.values())) > 1  # drawn, not all the same
    assert turns(5, 1) == [first] and turns(9, 3) == [first]


# -- the coarse grid of samples without matches ----------------------------------------------------------------------


def test_dagger_samples_get_an_all_invalid_grid_sized_from_the_datagen_config(tmp_path: Path) -> None:
    # No shard holds matches: 8 x 12 images in patches of 4 make a 2 x 3 grid.
    writer = make_writer(tmp_path, height=8, width=12, K=K, config={"datagen": {"hemisphere": {"coarse_patch": 4}}})
    publish_seeds(writer, "dagger", 0, [T[0]] * 3, 0)
    stream = ShardStream(cfg_for(tmp_path), "train", 0, with_coarse=True)
    records = stream._read(_opened(stream)[D0], 0, 3)
    assert len(records) == 3
    for r in records:
        assert r["coarse_match"].shape == (2, 3, 2) and r["coarse_match"].dtype == np.float32
        assert r["coarse_valid"].shape == (2, 3) and r["coarse_valid"].dtype == np.bool_
        assert not r["coarse_match"].any() and not r["coarse_valid"].any()


def test_an_unknown_coarse_grid_is_a_clear_error(layout) -> None:
    # Neither a shard with matches nor datagen.hemisphere.coarse_patch in info.json.
    root, _ = layout
    stream = ShardStream(cfg_for(root), "train", 0, with_coarse=True)
    with pytest.raises(ShardError, match="coarse_patch"):
        stream._read(_opened(stream)[D0], 0, 6)


def test_the_coarse_grid_comes_from_a_readable_shard_with_matches(turns_root: Path) -> None:
    # The first hemisphere shard, H0, is damaged: it must neither fail the read of a DAgger shard nor get it
    # quarantined in its place. H1's sidecar is older, without the "coarse" flag: its arrays decide.
    stream = ShardStream(cfg_for(turns_root), "train", 0, with_coarse=True)
    records = stream._read(_opened(stream)[D0], 0, 3)
    assert steps(records) == [100, 101, 102]
    assert [r["coarse_valid"].shape for r in records] == [(2, 2)] * 3
    assert [r["coarse_match"].shape for r in records] == [(2, 2, 2)] * 3


# -- augmentation noise ----------------------------------------------------------------------------------------------


def _window_of(out: torch.Tensor, bank: torch.Tensor) -> bool:
    flat, n = out.flatten(), out.numel()
    return any(torch.equal(flat, bank[s : s + n]) for s in range(bank.numel() - n + 1))


@pytest.mark.parametrize("reuse", [None, 3])
def test_noise_comes_in_windows_of_a_bank_redrawn_every_reuse_cuts(reuse: int | None) -> None:
    shape, n = torch.Size([3, 2, 2]), 12
    every = 16 if reuse is None else reuse  # 16 is the default
    bank = _NoiseBank(torch.Generator().manual_seed(7), *([] if reuse is None else [reuse]))
    ref = torch.Generator().manual_seed(7)
    banks = [torch.randn(2 * n, generator=ref) for _ in range(3)]  # the generator's draws, bank after bank
    rng = np.random.default_rng(0)
    outs = [bank(shape, rng) for _ in range(2 * every + 1)]
    assert all(out.shape == shape for out in outs)
    assert all(_window_of(out, banks[i // every]) for i, out in enumerate(outs))


def test_noise_windows_start_anywhere_in_the_bank_and_a_larger_image_gets_a_larger_bank() -> None:
    bank, rng = _NoiseBank(torch.Generator().manual_seed(1)), np.random.default_rng(1)
    ref = torch.Generator().manual_seed(1)
    first = torch.randn(2, generator=ref)
    ones = [bank(torch.Size([1]), rng) for _ in range(12)]
    assert {float(o) for o in ones} == set(first.tolist())  # both offsets of a 2-sample bank
    big = bank(torch.Size([4, 3]), rng)  # 12 samples need a bank of 24: drawn now, not at the 16th cut
    assert _window_of(big, torch.randn(24, generator=ref))


def test_jitter_and_noise_keep_images_in_0_1() -> None:
    gen = torch.Generator().manual_seed(0)
    img = (torch.rand(3, 6, 6, generator=gen) > 0.5).float()  # saturated colours, black and white
    lo, hi = [], []
    for seed in range(20):
        out = _augment(img.clone(), 0.5, 0.0, np.random.default_rng(seed), _NoiseBank(gen))
        lo.append(float(out.min()))
        hi.append(float(out.max()))
    assert min(lo) == 0.0 and max(hi) == 1.0  # clipped at both ends
    gray = torch.full((3, 16, 16), 0.5)
    noisy = _augment(gray.clone(), 0.0, 0.5, np.random.default_rng(0), _NoiseBank(gen))
    assert float(noisy.min()) == 0.0 and float(noisy.max()) == 1.0
    assert 0.29 < float((noisy - gray).abs().mean()) < 0.34  # |N(0, 0.5)| clipped at 0.5 averages 0.316


# -- the loader, its workers and the wait for data -------------------------------------------------------------------


def test_collate_stacks_a_batch_of_one() -> None:
    # A val pass can end on a batch of one sample.
    batch = collate([{"cur": torch.zeros(3, 2, 2), "step": torch.tensor(7)}])
    assert batch["cur"].shape == (1, 3, 2, 2) and batch["step"].tolist() == [7]


def test_make_loader_builds_the_stream_and_a_loader_without_workers(tmp_path: Path) -> None:
    cfg = cfg_for(tmp_path, workers=0)
    loader = make_loader(cfg, "val", seed=3, batch_size=5)
    stream = loader.dataset
    assert isinstance(stream, ShardStream) and stream.cfg is cfg
    assert (stream.split, stream.seed, stream.rank, stream.world_size) == ("val", 3, 0, 1)
    assert (stream.with_coarse, stream.rot90, stream.augment) == (False, False, False)
    assert loader.batch_size == 5 and loader.num_workers == 0 and loader.collate_fn is collate
    assert not loader.pin_memory and loader.worker_init_fn is None and not loader.persistent_workers
    loader = make_loader(cfg, "train", 4, 2, rank=1, world_size=3, with_coarse=True, rot90=True)
    stream = loader.dataset
    assert (stream.split, stream.seed, stream.rank, stream.world_size) == ("train", 4, 1, 3)
    assert (stream.with_coarse, stream.rot90, stream.augment) == (True, True, True)


def test_make_loader_spawns_persistent_workers_with_their_thread_count(tmp_path: Path) -> None:
    loader = make_loader(cfg_for(tmp_path, workers=1, threads=3), "train", 0, 4)  # not iterated: nothing spawns
    assert loader.num_workers == 1
    assert loader.multiprocessing_context.get_start_method() == "spawn" and loader.persistent_workers is True
    init = loader.worker_init_fn
    assert isinstance(init, functools.partial) and init.func is _init_worker
    assert init.args == (3,) and not init.keywords


def test_loader_threads_are_data_threads_else_one(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr("runtime.threads.usable_cpus", lambda: 8)  # an automatic count would be 8
    assert loader_threads(cfg_for(tmp_path, threads=3)) == 3
    assert loader_threads(cfg_for(tmp_path, threads=None)) == 1
    assert loader_threads(cfg_for(tmp_path, threads=0)) == 1


def test_a_loader_worker_sets_its_torch_threads() -> None:
    n = 3 if torch.get_num_threads() != 3 else 2  # the autouse fixture of tests/conftest.py restores the count
    _init_worker(n, 0)
    assert torch.get_num_threads() == n


def test_wait_for_shards_polls_until_shards_come(clock: _Clock, monkeypatch: pytest.MonkeyPatch) -> None:
    asked = []
    monkeypatch.setattr(ds, "count_shards", lambda root: asked.append(root) or (3 if clock.t >= 1001.0 else 0))
    assert wait_for_shards("/some/root", 1.2, poll=0.5) == 3
    assert asked == ["/some/root"] * 3 and clock.slept == [0.5, 0.5]


def test_wait_for_shards_gives_up_at_the_deadline_naming_the_root(
    clock: _Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ds, "count_shards", lambda root: 0)
    with pytest.raises(TimeoutError, match=r"/some/root: no published shards after waiting 1\.2 s"):
        wait_for_shards("/some/root", 1.2, poll=0.5)
    assert clock.slept == [0.5, 0.5, pytest.approx(0.2)]  # the last poll waits only what is left
    assert clock.t == pytest.approx(1001.2)


def test_split_of_scene_is_pinned() -> None:
    # Datasets on disk keep their split across versions: these are the val scenes of 0..39 at 0.3 since the start.
    val = [0, 2, 5, 8, 9, 12, 16, 18, 20, 22, 23, 24, 25, 26, 30, 31, 37, 39]
    assert [s for s in range(40) if split_of_scene(s, 0.3) == "val"] == val
