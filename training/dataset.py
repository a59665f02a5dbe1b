"""The training data: a stream of samples over the published shards of a datagen root.

Train and validation are split by scene seed (a stable hash), never by sample, so no scene is in both. The train
stream never ends. It re-lists the shards while it runs, so DAgger shards published during training are picked up.
When both producers have data, DAgger supplies about `dagger_fraction` of the samples: each block is drawn from one
producer, with the probability corrected for the share of a block the split filter keeps. Blocks are contiguous
slices, because a Zarr slice read is fast and a fancy-index read is slow. They pass through a shuffle buffer.
The validation stream makes one deterministic pass. It is partitioned over DDP ranks and loader workers, so each
validation sample is read exactly once overall.

Zarr 3 does its I/O on an asyncio loop in a background thread, and that loop does not survive a fork. So the
`DatasetReader` is opened lazily in the process that iterates, and loader workers are spawned.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import math
import time
from collections.abc import Iterator, Sequence
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, IterableDataset, default_collate, get_worker_info

from configs.schema import DataConfig
from policy.rotation import draw_quarter_turn, rotate_label, rotate_match_grid, turn_image
from runtime.threads import resolve_threads, set_torch_threads
from shards import DamagedShardError, DatasetReader, ShardError, ShardMeta
from sim.geometry import relative_pose, rotation_angle

Split = Literal["train", "val"]
PRODUCER_CODES: dict[str, int] = {"hemisphere": 0, "dagger": 1}
SAMPLE_FIELDS = (
    "cur", "des", "vel", "scene_scale", "policy_version", "beta", "producer", "step", "scene_seed", "rot_deg", "turn",
)  # fmt: skip
COARSE_FIELDS = ("coarse_match", "coarse_valid")

_POSES = ("wTc", "wTd")
_READ = ("cur_rgb", "des_rgb", "des_index", "vel", "scene_scale", "policy_version", "beta", "step", "scene_seed")
# An empty root is normal at start-up (datagen runs beside the trainer): poll it often and cheaply.
_EMPTY_POLL_S = 0.5
_WAIT_WARN_S = 60.0
# ITU-R 601 luma, as torchvision's grayscale uses.
_LUMA = (0.299, 0.587, 0.114)

log = logging.getLogger(__name__)


def split_of_scene(scene_seed: int, val_fraction: float) -> Split:
    """'val' for a stable, hash-chosen `val_fraction` of scene seeds, else 'train'; the same in every process."""
    # hashlib rather than hash(): Python salts str hashes per process and spawned workers must agree.
    digest = hashlib.blake2b(f"cnsv2-split:{int(scene_seed)}".encode(), digest_size=8).digest()
    return "val" if int.from_bytes(digest, "little") / 2.0**64 < val_fraction else "train"


def _split_mask(scene_seeds: np.ndarray, val_fraction: float, split: Split) -> np.ndarray:
    seeds, inverse = np.unique(scene_seeds, return_inverse=True)
    keep = np.array([split_of_scene(int(s), val_fraction) == split for s in seeds], dtype=bool)
    return keep[inverse.reshape(-1)]


def count_shards(root: str) -> int:
    """How many shards are published under `root` now (0 while the root has no info.json yet)."""
    try:
        return len(DatasetReader(root).shards)
    except FileNotFoundError:
        return 0


def wait_for_shards(root: str, timeout: float, *, poll: float = _EMPTY_POLL_S) -> int:
    """Block until `root` has published shards and return how many; TimeoutError naming the root after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        n = count_shards(root)
        if n:
            return n
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(
                f"{root}: no published shards after waiting {timeout:g} s "
                "(is datagen running, and writing to this data.root?)"
            )
        time.sleep(min(poll, left))


class ShardStream(IterableDataset):
    """Samples of one split, as tensors: endless and shuffled for 'train', one deterministic pass for 'val'."""

    def __init__(
        self,
        cfg: DataConfig,
        split: Split,
        seed: int,
        *,
        rank: int = 0,
        world_size: int = 1,
        with_coarse: bool = False,
        augment: bool | None = None,
        rot90: bool = False,
    ) -> None:
        if split not in ("train", "val"):
            raise ValueError(f"split must be 'train' or 'val', got {split!r}")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, world_size), got rank={rank}, world_size={world_size}")
        self.cfg, self.split, self.seed = cfg, split, int(seed)
        self.rank, self.world_size = int(rank), int(world_size)
        self.with_coarse = bool(with_coarse)
        self.rot90 = bool(rot90)
        self.augment = (split == "train") if augment is None else bool(augment)
        self._reader: DatasetReader | None = None
        self._passes = 0
        self._grid: tuple[int, int] | None = None
        self._weights: dict[str, float] = {}  # shard id -> expected samples of this split
        self._val_units: dict[str, list[tuple[int, int]]] = {}  # shard id -> val slices
        self._turn_rng = np.random.default_rng([self.seed % 2**63, self.rank])  # training's quarter turns
        self.damaged: list[str] = []  # ids of the shards this stream found damaged and quarantined

    def __getstate__(self) -> dict[str, Any]:
        # Workers open their own reader: zarr handles must not cross processes.
        return {**self.__dict__, "_reader": None}

    def wait_for_shards(self, timeout: float) -> int:
        """Block until the root has published shards and return how many; TimeoutError naming the root."""
        return wait_for_shards(self.cfg.root, timeout)

    def __iter__(self) -> Iterator[dict[str, Tensor]]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        self._passes += 1
        # A new stream on every pass: with persistent workers, iter(loader) calls __iter__ on the same object again.
        rng = np.random.default_rng([self.seed % 2**64, self.rank, worker, self._passes, self.split == "val"])
        noise = _NoiseBank(torch.Generator().manual_seed(int(rng.integers(2**62))))
        if self.split == "train":
            records = self._train_records(rng)
        else:
            records = self._val_records(self.rank * workers + worker, self.world_size * workers)
        for record in records:
            yield self._tensors(record, rng, noise)

    # -- shard lists ---------------------------------------------------------------------------------------------
    def _open(self) -> DatasetReader | None:
        if self._reader is None:
            try:
                self._reader = DatasetReader(self.cfg.root)
            except FileNotFoundError:
                return None
        return self._reader

    def _listing(self) -> list[ShardMeta]:
        """The published shards that hold samples of this split (per their sidecar's scene seeds)."""
        reader = self._open()
        if reader is None:
            return []
        usable = []
        for shard in reader.refresh():
            if self.with_coarse and shard.key.producer == "hemisphere" and shard.sidecar.get("coarse") is False:
                raise ShardError(
                    f"shard {shard.id} ({shard.path}) has no coarse_match/coarse_valid, but the trainer asked for "
                    "them (with_coarse=True): regenerate with datagen.hemisphere.coarse_match=true, or train "
                    "without the matching loss",
                    array="coarse_match",
                    shard=shard.id,
                )
            if self._weight(shard) > 0:
                usable.append(shard)
        return usable

    def _weight(self, shard: ShardMeta) -> float:
        if shard.id not in self._weights:
            seeds = shard.sidecar.get("seeds")
            if not seeds:  # an older sidecar without seeds: assume the split's share; the block filter decides
                share = self.cfg.val_fraction if self.split == "val" else 1.0 - self.cfg.val_fraction
            else:
                ours = sum(split_of_scene(s, self.cfg.val_fraction) == self.split for s in seeds)
                share = ours / len(seeds)
            self._weights[shard.id] = shard.n * share
        return self._weights[shard.id]

    # -- train ---------------------------------------------------------------------------------------------------
    def _train_records(self, rng: np.random.Generator) -> Iterator[dict[str, Any]]:
        cfg = self.cfg
        buffer: list[dict[str, Any]] = []
        shards: list[ShardMeta] = []
        listed_at, blocks_since, waiting_since = -math.inf, 0, None
        while True:
            now = time.monotonic()
            due = now - listed_at >= cfg.refresh_seconds if cfg.refresh_seconds > 0 else blocks_since >= len(shards)
            if due or not shards:
                shards, listed_at, blocks_since = self._listing(), now, 0
                plan = self._plan(shards) if shards else []
            if not shards:
                # The trainer waits for the first data; here an empty root only means "not yet", so poll, never end.
                waiting_since = now if waiting_since is None else waiting_since
                if now - waiting_since >= _WAIT_WARN_S:
                    log.warning("%s: still no %s shards after %.0f s", cfg.root, self.split, now - waiting_since)
                    waiting_since = now
                time.sleep(_EMPTY_POLL_S)
                continue
            waiting_since = None
            shard = self._pick_shard(plan, rng)
            blocks_since += 1
            n, length = shard.n, min(cfg.block, shard.n)
            start = int(rng.integers(n))
            # Wrap around the end so that every sample of a shard is equally likely to be read.
            try:
                block = self._read(shard, start, min(n, start + length))
                if start + length > n:
                    block += self._read(shard, 0, start + length - n)
            except DamagedShardError as e:
                self._quarantine(shard, e)
                shards = []  # list again, without it
                continue
            buffer += block
            while len(buffer) >= cfg.shuffle_buffer:
                i = int(rng.integers(len(buffer)))
                buffer[i], buffer[-1] = buffer[-1], buffer[i]
                yield buffer.pop()

    def _plan(self, shards: list[ShardMeta]) -> list[tuple[float, list[ShardMeta], np.ndarray]]:
        """Per producer with shards: (probability of drawing a block from it, its shards, their probabilities)."""
        pools = [[s for s in shards if s.key.producer == "dagger"], [s for s in shards if s.key.producer != "dagger"]]
        share = [self.cfg.dagger_fraction, 1.0 - self.cfg.dagger_fraction]
        plan = []
        for fraction, pool in zip(share, pools, strict=True):
            if not pool:
                continue
            # Weighted by expected samples of this split, so every sample of a producer is about equally likely.
            weights = np.array([self._weight(s) for s in pool])
            p_shard = weights / weights.sum()
            # dagger_fraction is a share of samples, and the split filter keeps a different share of a block per
            # producer (a DAgger shard is often one scene, all train or all val): divide by the expected yield.
            kept = sum(p * min(self.cfg.block, s.n) * self._weight(s) / s.n for p, s in zip(p_shard, pool, strict=True))
            plan.append((fraction / kept, pool, p_shard))
        if len(plan) == 1:  # only one producer has data: use it, whatever the fraction
            plan[0] = (1.0, *plan[0][1:])
        total = sum(p for p, _, _ in plan)
        return [(p / total, pool, p_shard) for p, pool, p_shard in plan]

    @staticmethod
    def _pick_shard(plan: list[tuple[float, list[ShardMeta], np.ndarray]], rng: np.random.Generator) -> ShardMeta:
        _, pool, p_shard = plan[0] if len(plan) == 1 or rng.random() < plan[0][0] else plan[1]
        return pool[int(rng.choice(len(pool), p=p_shard))]

    # -- val -----------------------------------------------------------------------------------------------------
    def _val_records(self, stream: int, streams: int) -> Iterator[dict[str, Any]]:
        # Every stream lists the same shards in the same order and deals the slices out the same way, each to the
        # least-loaded stream: disjoint, complete, and balanced to within one block (DDP ranks then run about the same
        # number of val batches). A shard published between two workers' listings can break this; it is rare.
        load = [0] * streams
        mine: list[tuple[ShardMeta, int, int]] = []
        for shard in self._listing():
            if shard.id not in self._val_units:
                try:
                    self._val_units[shard.id] = self._split_slices(shard)
                except DamagedShardError as e:
                    self._quarantine(shard, e)
                    continue
            for a, b in self._val_units[shard.id]:
                target = load.index(min(load))
                load[target] += b - a
                if target == stream:
                    mine.append((shard, a, b))
        gone: set[str] = set()  # quarantined during this pass: its other slices went with it
        for shard, a, b in mine:
            if shard.id in gone:
                continue
            try:
                records = self._read(shard, a, b)
            except DamagedShardError as e:
                self._quarantine(shard, e)
                gone.add(shard.id)
                continue
            yield from records

    def _quarantine(self, shard: ShardMeta, err: DamagedShardError) -> None:
        """Move a damaged shard aside (never train on it) and say so; the stream goes on with the others."""
        assert self._reader is not None
        where = self._reader.quarantine(shard, str(err))
        self.damaged.append(shard.id)
        self._weights.pop(shard.id, None)
        self._val_units.pop(shard.id, None)
        log.warning(
            "%s: skipped damaged shard %s, moved to %s (%d damaged so far): %s",
            self.cfg.root,
            shard.id,
            where,
            len(self.damaged),
            err,
        )

    def _split_slices(self, shard: ShardMeta) -> list[tuple[int, int]]:
        """Contiguous runs of this split's samples in a shard, cut into slices of at most `block`."""
        assert self._reader is not None
        seeds = self._reader.read(shard, names=["scene_seed"])["scene_seed"]
        mask = np.concatenate([[False], _split_mask(seeds, self.cfg.val_fraction, self.split), [False]])
        edges = np.flatnonzero(np.diff(mask.astype(np.int8)))
        return [
            (lo, min(hi, lo + self.cfg.block))
            for a, hi in zip(edges[::2].tolist(), edges[1::2].tolist(), strict=True)
            for lo in range(a, hi, self.cfg.block)
        ]

    # -- reading -------------------------------------------------------------------------------------------------
    def _read(self, shard: ShardMeta, start: int, stop: int) -> list[dict[str, Any]]:
        """Samples [start, stop) of a shard that belong to this split, as records of numpy arrays (uint8 images)."""
        reader = self._reader
        assert reader is not None
        names: Sequence[str] = _READ
        has_coarse = False
        if self.with_coarse:
            has_coarse = "coarse_match" in reader.arrays(shard)
            if not has_coarse and shard.key.producer != "dagger":
                raise ShardError(
                    f"shard {shard.id} ({shard.path}) has no coarse_match/coarse_valid, but the trainer asked for "
                    "them (with_coarse=True): regenerate with datagen.hemisphere.coarse_match=true",
                    array="coarse_match",
                    shard=shard.id,
                )
            names = (*_READ, *COARSE_FIELDS) if has_coarse else _READ
        # The poses give each pair its relative rotation (validation bins it) and, with rot90, its quarter turn.
        names = (*names, *_POSES)
        data = reader.read(shard, start, stop, names)
        keep = np.flatnonzero(_split_mask(data["scene_seed"], self.cfg.val_fraction, self.split))
        producer = PRODUCER_CODES[shard.key.producer]
        records = []
        for i in keep.tolist():
            # Copies, so a sample left in the shuffle buffer does not keep its whole block alive.
            record = {
                "cur": data["cur_rgb"][i].copy(),
                "des": data["des_rgb"][data["des_index"][i]].copy(),
                "vel": data["vel"][i].astype(np.float32),
                "scene_scale": float(data["scene_scale"][i]),
                "policy_version": int(data["policy_version"][i]),
                "beta": float(data["beta"][i]),
                "producer": producer,
                "step": int(data["step"][i]),
                "scene_seed": int(data["scene_seed"][i]),
            }
            if self.with_coarse:
                if has_coarse:
                    record["coarse_match"] = data["coarse_match"][i].astype(np.float32)
                    record["coarse_valid"] = data["coarse_valid"][i].copy()
                else:  # shards written before DAgger stored correspondences: all-invalid keeps batches collatable
                    h, w = self._coarse_grid()
                    record["coarse_match"] = np.zeros((h, w, 2), np.float32)
                    record["coarse_valid"] = np.zeros((h, w), np.bool_)
            dTc = relative_pose(data["wTd"][i], data["wTc"][i])
            record["rot_deg"] = float(np.degrees(rotation_angle(dTc[:3, :3])))
            record["turn"] = 0
            if self.rot90:
                # Validation turns are a function of the sample, so every validation pass scores the same pairs.
                rng = (
                    self._turn_rng
                    if self.split == "train"
                    else np.random.default_rng([record["scene_seed"], start + i])
                )
                _turn(record, dTc, self.cfg.rot90_max_deg, rng)
            records.append(record)
        return records

    def _coarse_grid(self) -> tuple[int, int]:
        if self._grid is None:
            reader = self._reader
            assert reader is not None
            for shard in reader.shards:
                try:
                    arrays = reader.arrays(shard) if shard.sidecar.get("coarse", True) else {}
                except DamagedShardError:  # quarantined when it is read, not in place of the shard being read now
                    continue
                if "coarse_valid" in arrays:
                    self._grid = tuple(int(d) for d in arrays["coarse_valid"].shape[1:3])  # type: ignore[assignment]
                    break
            else:
                try:  # only DAgger shards so far: size the grid from the datagen config the root was made with
                    patch = int(reader.info["config"]["datagen"]["hemisphere"]["coarse_patch"])
                except (KeyError, TypeError, ValueError):
                    raise ShardError(
                        f"{reader.root}: with_coarse=True, but no shard holds coarse_match and info.json names no "
                        "datagen.hemisphere.coarse_patch, so the coarse grid of DAgger samples is unknown"
                    ) from None
                self._grid = (reader.height // patch, reader.width // patch)
        return self._grid

    # -- tensors -------------------------------------------------------------------------------------------------
    def _tensors(self, record: dict[str, Any], rng: np.random.Generator, noise: _NoiseBank) -> dict[str, Tensor]:
        cur, des = _to_float(record["cur"]), _to_float(record["des"])
        if self.augment:
            # Drawn separately for the two images: the model must tolerate lighting changes between them.
            cur = _augment(cur, self.cfg.color_jitter, self.cfg.noise_std, rng, noise)
            des = _augment(des, self.cfg.color_jitter, self.cfg.noise_std, rng, noise)
        out = {
            "cur": cur,
            "des": des,
            "vel": torch.from_numpy(record["vel"]),
            "scene_scale": torch.tensor(record["scene_scale"], dtype=torch.float32),
            "policy_version": torch.tensor(record["policy_version"], dtype=torch.int64),
            "beta": torch.tensor(record["beta"], dtype=torch.float32),
            "producer": torch.tensor(record["producer"], dtype=torch.int64),
            "step": torch.tensor(record["step"], dtype=torch.int64),
            "scene_seed": torch.tensor(record["scene_seed"], dtype=torch.int64),
            "rot_deg": torch.tensor(record["rot_deg"], dtype=torch.float32),
            "turn": torch.tensor(record["turn"], dtype=torch.int64),
        }
        if self.with_coarse:
            out["coarse_match"] = torch.from_numpy(record["coarse_match"])
            out["coarse_valid"] = torch.from_numpy(record["coarse_valid"])
        return out

    def __repr__(self) -> str:
        return (
            f"ShardStream({self.cfg.root!r}, split={self.split!r}, rank={self.rank}/{self.world_size}, "
            f"with_coarse={self.with_coarse}, augment={self.augment})"
        )


def _turn(record: dict[str, Any], dTc: np.ndarray, max_deg: float, rng: np.random.Generator) -> None:
    """Turn the current image by a quarter turn near the desired view, with its label and matches (in place)."""
    k = draw_quarter_turn(dTc, max_deg, rng)
    if k == 0:
        return
    cur = record["cur"]
    record["cur"] = turn_image(cur, k)
    record["vel"] = rotate_label(dTc, k, record["scene_scale"]).astype(np.float32)
    record["turn"] = k
    if "coarse_match" in record:
        record["coarse_match"], record["coarse_valid"] = rotate_match_grid(
            record["coarse_match"], record["coarse_valid"], k
        )


class _NoiseBank:
    """Standard normal noise for images: windows at random offsets into a bank that is redrawn every `reuse` cuts."""

    # torch.randn was half of a worker's time per 256x256 sample (about 0.5 ms an image); a window costs nothing.
    # Windows of one bank overlap, but within a window the noise is i.i.d., which is all the augmentation needs.

    def __init__(self, gen: torch.Generator, reuse: int = 16) -> None:
        self.gen, self.reuse = gen, reuse
        self._bank = torch.empty(0)
        self._uses = 0

    def __call__(self, shape: torch.Size, rng: np.random.Generator) -> Tensor:
        numel = math.prod(shape)
        if self._bank.numel() < 2 * numel or self._uses >= self.reuse:
            self._bank, self._uses = torch.randn(2 * numel, generator=self.gen), 0
        self._uses += 1
        start = int(rng.integers(self._bank.numel() - numel + 1))
        return self._bank[start : start + numel].view(shape)


def _to_float(rgb: np.ndarray) -> Tensor:
    return torch.from_numpy(rgb).permute(2, 0, 1).contiguous().to(torch.float32).div_(255.0)


def _augment(img: Tensor, jitter: float, noise_std: float, rng: np.random.Generator, noise: _NoiseBank) -> Tensor:
    """Brightness, contrast and saturation factors from [1-jitter, 1+jitter], then Gaussian noise; stays in [0, 1]."""
    if jitter > 0:
        brightness, contrast, saturation = rng.uniform(1.0 - jitter, 1.0 + jitter, 3).tolist()
        # The three are linear in the colour, so one 3x3 matrix and an offset do them in a single pass (5-8x faster
        # than torchvision's three passes; unlike it, nothing is clamped between the steps).
        flat = img.reshape(3, -1)
        luma = torch.tensor(_LUMA)
        mean_gray = brightness * float(luma @ flat.mean(1))
        matrix = (contrast * brightness) * (saturation * torch.eye(3) + (1.0 - saturation) * luma.expand(3, 3))
        img = (matrix @ flat).add_((1.0 - contrast) * mean_gray).clamp_(0.0, 1.0).reshape(img.shape)
    if noise_std > 0:
        img = img.add_(noise(img.shape, rng), alpha=noise_std).clamp_(0.0, 1.0)
    return img


def collate(samples: list[dict]) -> dict[str, Tensor]:
    """Stack samples field by field into a batch (scalars become shape (B,))."""
    if not samples:
        raise ValueError("collate: an empty batch")
    keys = list(samples[0])
    for i, sample in enumerate(samples):
        if list(sample) != keys:
            raise ValueError(f"collate: sample {i} has fields {sorted(sample)}, sample 0 has {sorted(keys)}")
    # default_collate stacks into shared memory inside a loader worker. Stacking into private memory instead makes
    # the queue move every batch to shared memory again, and spawned workers then sometimes aborted at shutdown
    # ("terminate called without an active exception").
    return {key: default_collate([sample[key] for sample in samples]) for key in keys}


def _init_worker(threads: int, worker_id: int) -> None:
    set_torch_threads(threads)


def loader_threads(cfg: DataConfig) -> int:
    """Torch threads of each loader worker: `data.threads`, automatically 1 (each worker does one sample at a time,
    so more intra-op threads only contend: measured 2-3x slower)."""
    return resolve_threads(cfg.threads, default=1)


def make_loader(
    cfg: DataConfig,
    split: Split,
    seed: int,
    batch_size: int,
    *,
    rank: int = 0,
    world_size: int = 1,
    with_coarse: bool = False,
    rot90: bool = False,
) -> DataLoader:
    """A DataLoader over `ShardStream` with `cfg.workers` spawned, persistent workers (augmentation on for train)."""
    dataset = ShardStream(cfg, split, seed, rank=rank, world_size=world_size, with_coarse=with_coarse, rot90=rot90)
    extra: dict[str, Any] = {}
    if cfg.workers > 0:
        # spawn: a forked child would inherit zarr's asyncio I/O thread in whatever state it was, and can deadlock.
        init = functools.partial(_init_worker, loader_threads(cfg))
        extra = {"multiprocessing_context": "spawn", "persistent_workers": True, "worker_init_fn": init}
    return DataLoader(
        dataset, batch_size=batch_size, num_workers=cfg.workers, collate_fn=collate, pin_memory=False, **extra
    )


__all__ = [
    "COARSE_FIELDS",
    "PRODUCER_CODES",
    "SAMPLE_FIELDS",
    "ShardStream",
    "collate",
    "count_shards",
    "loader_threads",
    "make_loader",
    "split_of_scene",
    "wait_for_shards",
]
