"""The dataset over published shards: split by scene, producer mixing, refresh, augmentation, coarse masks, workers.

Every sample of the synthetic roots carries its id three ways: `step` = uid, vel[0] = uid / 1000 and the first pixel
of its current image; the first pixel of each desired image holds the desired image's id. A sample whose image,
desired image and labels agree has been read, shuffled and collated intact.
"""

from __future__ import annotations

import threading
from collections import Counter
from itertools import islice
from pathlib import Path

import numpy as np
import pytest
import torch

from configs.schema import DataConfig
from shards import DatasetWriter, ShardBuffer, ShardError, ShardKey
from tests.fixtures.factories import make_writer
from training.dataset import ShardStream, collate, make_loader, split_of_scene, wait_for_shards

H = W = 32
GRID = (2, 2)
K = np.array([[W, 0.0, W / 2], [0.0, W, H / 2], [0.0, 0.0, 1.0]])
VAL_FRACTION = 0.3
# (producer, shard index, samples, samples per desired image, samples per scene, coarse)
LAYOUT = [
    ("hemisphere", 0, 40, 4, 8, True),
    ("hemisphere", 1, 40, 4, 8, True),
    ("hemisphere", 2, 40, 4, 8, True),
    ("dagger", 0, 40, 10, 10, False),
    ("dagger", 1, 40, 10, 10, False),
]


def _writer(root: Path) -> DatasetWriter:
    """The shared shard writer (tests/fixtures/factories.py) at this module's image size and camera."""
    return make_writer(root, height=H, width=W, K=K)


def _coded(rng: np.random.Generator, code: int, marker: int) -> np.ndarray:
    img = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    img[0, 0] = (code // 256, code % 256, marker)
    return img


def _decode(images: torch.Tensor) -> np.ndarray:
    """The id in the first pixel of a batch of (B, 3, H, W) images in [0, 1]."""
    px = torch.round(images[:, :, 0, 0] * 255).to(torch.int64).numpy()
    return px[:, 0] * 256 + px[:, 1]


def publish(root: Path, producer: str, index: int, n: int, per_des: int, per_scene: int, coarse: bool, table: dict):
    """Publish one shard with uids continuing from len(table); record every sample's expected fields in `table`."""
    rng = np.random.default_rng(len(table))
    buf = ShardBuffer(H, W, coarse_grid=GRID if coarse else None)
    dagger = producer == "dagger"
    d = -1
    for i in range(n):
        uid = len(table)
        if i % per_des == 0:
            des_id = 10_000 + uid
            des_img = _coded(rng, des_id, 255)
            d = buf.add_desired(des_img)
        cur = _coded(rng, uid, 0)
        scene = (5_000 if dagger else 1_000) + (uid // per_scene)
        extra = {}
        if coarse:
            extra = {
                "coarse_match": np.full((*GRID, 2), uid % 16, np.float32),
                "coarse_valid": np.array([[True, False], [uid % 2 == 0, True]]),
            }
        fields = {
            "vel": np.array([uid / 1000, 0.1, -0.2, 0.3, index, 0.5], np.float32),
            "scene_scale": 1.0 + uid / 1000,
            "policy_version": 3 if dagger else -1,
            "beta": 0.5 if dagger else 1.0,
            "scene_seed": scene,
        }
        buf.add_sample(
            cur_rgb=cur, des_index=d, wTc=np.eye(4), wTd=np.eye(4), K=K, episode=uid // per_des, step=uid,
            **fields, **extra,
        )  # fmt: skip
        table[uid] = {
            **fields,
            "producer": int(dagger),
            "des_id": des_id,
            "cur_img": cur,
            "des_img": des_img,
            "split": split_of_scene(scene, VAL_FRACTION),
            **{k: v.astype(np.float32) if k == "coarse_match" else v for k, v in extra.items()},
        }
    _writer(root).publish(ShardKey(producer, 0, index), buf)


def data_cfg(root: Path, **kw) -> DataConfig:
    base = {
        "root": str(root),
        "dagger_fraction": 0.3,
        "val_fraction": VAL_FRACTION,
        "block": 8,
        "shuffle_buffer": 32,
        "refresh_seconds": 0.0,
        "workers": 0,
        "color_jitter": 0.0,
        "noise_std": 0.0,
        "rot90_max_deg": 45.0,
    }
    return DataConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("ds") / "data"
    table: dict[int, dict] = {}
    for layout in LAYOUT:
        publish(root, *layout, table)
    splits = Counter((t["producer"], t["split"]) for t in table.values())
    assert all(splits[(p, s)] > 0 for p in (0, 1) for s in ("train", "val")), splits  # the fixture covers each case
    return root, table


def take(stream: ShardStream, n: int) -> dict[str, torch.Tensor]:
    return collate(list(islice(iter(stream), n)))


def check_identity(batch: dict[str, torch.Tensor], table: dict, *, images: bool = True) -> None:
    """Images, desired images and labels of every sample are those of the sample its `step` names."""
    uids = batch["step"].tolist()
    if images:
        assert _decode(batch["cur"]).tolist() == uids
        assert _decode(batch["des"]).tolist() == [table[u]["des_id"] for u in uids]
    for i, u in enumerate(uids):
        t = table[u]
        np.testing.assert_array_equal(batch["vel"][i].numpy(), t["vel"])
        assert batch["scene_scale"][i].item() == pytest.approx(t["scene_scale"], rel=1e-6)
        assert batch["policy_version"][i].item() == t["policy_version"]
        assert batch["beta"][i].item() == t["beta"]
        assert batch["producer"][i].item() == t["producer"]
        assert batch["scene_seed"][i].item() == t["scene_seed"]


@pytest.mark.unit
def test_split_of_scene_is_stable_and_proportional() -> None:
    seeds = range(20_000)
    val = {s for s in seeds if split_of_scene(s, 0.3) == "val"}
    assert abs(len(val) / 20_000 - 0.3) < 0.02
    assert val == {s for s in seeds if split_of_scene(s, 0.3) == "val"}
    assert {s for s in seeds if split_of_scene(s, 0.1) == "val"} <= val  # a larger fraction only adds val scenes
    assert all(split_of_scene(s, 0.0) == "train" for s in range(1000))
    assert split_of_scene(2**63 - 1, 0.5) in ("train", "val")


@pytest.mark.unit
def test_batch_shapes_dtypes_and_ranges(dataset) -> None:
    root, table = dataset
    loader = make_loader(data_cfg(root, color_jitter=0.3, noise_std=0.05), "train", seed=0, batch_size=8)
    batch = next(iter(loader))
    expected = {
        "cur": ((8, 3, H, W), torch.float32),
        "des": ((8, 3, H, W), torch.float32),
        "vel": ((8, 6), torch.float32),
        "scene_scale": ((8,), torch.float32),
        "policy_version": ((8,), torch.int64),
        "beta": ((8,), torch.float32),
        "producer": ((8,), torch.int64),
        "step": ((8,), torch.int64),
        "scene_seed": ((8,), torch.int64),
        "rot_deg": ((8,), torch.float32),
        "turn": ((8,), torch.int64),
    }
    assert {k: (tuple(v.shape), v.dtype) for k, v in batch.items()} == expected
    for key in ("cur", "des"):
        assert 0.0 <= batch[key].min() and batch[key].max() <= 1.0
    check_identity(batch, table, images=False)


@pytest.mark.unit
def test_samples_keep_their_desired_images_and_labels(dataset) -> None:
    root, table = dataset
    stream = ShardStream(data_cfg(root, dagger_fraction=0.5), "train", seed=1, augment=False)
    batch = take(stream, 300)
    check_identity(batch, table)
    assert len(set(batch["step"].tolist())) > 100  # shuffled over many samples, not one block repeated
    val = take(ShardStream(data_cfg(root), "val", seed=1), 10_000)
    check_identity(val, table)


@pytest.mark.unit
@pytest.mark.slow
def test_split_by_scene_and_val_covers_each_sample_once(dataset) -> None:
    root, table = dataset
    cfg = data_cfg(root, dagger_fraction=0.5)
    train = take(ShardStream(cfg, "train", seed=2), 2000)
    train_scenes = set(train["scene_seed"].tolist())
    assert all(table[u]["split"] == "train" for u in train["step"].tolist())
    expected_val = sorted(u for u, t in table.items() if t["split"] == "val")
    val_stream = ShardStream(cfg, "val", seed=2)
    for _ in range(2):  # a second pass is the same pass
        val = take(val_stream, 10_000)
        assert sorted(val["step"].tolist()) == expected_val
    assert not train_scenes & set(val["scene_seed"].tolist())
    # Every train sample turns up in an endless stream (block wrap-around reaches the shard ends too).
    assert set(train["step"].tolist()) == {u for u, t in table.items() if t["split"] == "train"}

    ranks = [take(ShardStream(cfg, "val", seed=2, rank=r, world_size=2), 10_000)["step"].tolist() for r in (0, 1)]
    assert sorted(ranks[0] + ranks[1]) == expected_val
    assert abs(len(ranks[0]) - len(ranks[1])) <= cfg.block  # balanced to a block, not to a shard


@pytest.mark.unit
@pytest.mark.slow
@pytest.mark.parametrize("fraction", [0.25, 0.75])
def test_mixing_ratio_follows_dagger_fraction(dataset, fraction: float) -> None:
    root, _ = dataset
    batch = take(ShardStream(data_cfg(root, dagger_fraction=fraction), "train", seed=3, augment=False), 2000)
    share = batch["producer"].float().mean().item()
    print(f"dagger_fraction {fraction}: {share:.3f} of 2000 samples from DAgger")
    assert abs(share - fraction) < 0.07


@pytest.mark.unit
def test_only_one_producer_is_used_whatever_the_fraction(tmp_path) -> None:
    table: dict[int, dict] = {}
    publish(tmp_path, "hemisphere", 0, 40, 4, 8, False, table)
    batch = take(ShardStream(data_cfg(tmp_path, dagger_fraction=1.0), "train", seed=0), 50)
    assert batch["producer"].eq(0).all()


@pytest.mark.unit
@pytest.mark.parametrize("refresh_seconds", [0.0, 0.2])
def test_stream_waits_for_data_and_picks_up_new_shards(tmp_path, refresh_seconds: float) -> None:
    root, table = tmp_path / "data", {}
    cfg = data_cfg(root, dagger_fraction=0.5, refresh_seconds=refresh_seconds, shuffle_buffer=8, val_fraction=0.0)
    it = iter(ShardStream(cfg, "train", seed=0))
    # The root does not even exist yet: the stream must wait for it, not end or raise.
    timer = threading.Timer(0.5, publish, (root, "hemisphere", 0, 40, 4, 8, False, table))
    timer.start()
    first = collate(list(islice(it, 40)))
    timer.join()
    assert first["producer"].eq(0).all()
    publish(root, "dagger", 0, 40, 10, 10, False, table)
    if refresh_seconds:
        threading.Event().wait(refresh_seconds + 0.05)
    later = collate(list(islice(it, 200)))
    assert later["producer"].eq(1).any()
    check_identity(later, table)


@pytest.mark.unit
@pytest.mark.parametrize("split", ["train", "val"])
def test_a_damaged_shard_is_quarantined_and_skipped_never_read_as_zeros(tmp_path, split, caplog) -> None:
    root, table = tmp_path / "data", {}
    for layout in LAYOUT[:3]:
        publish(root, *layout, table)
    # One chunk file of cur_rgb gone: zarr alone would hand back black images for its samples.
    victim = root / "shards" / "hemisphere-r0000-000001.zarr"
    next(p for p in (victim / "cur_rgb").rglob("*") if p.is_file() and p.name != "zarr.json").unlink()
    bad = {u for u in range(40, 80)}  # the uids publish() gave that shard
    stream = ShardStream(data_cfg(root, val_fraction=0.5), split, seed=0, augment=False)
    with caplog.at_level("WARNING", logger="training.dataset"):
        batch = take(stream, 300 if split == "train" else 10_000)
    check_identity(batch, table)  # every image is the one its labels belong to: nothing black slipped through
    assert not bad & set(batch["step"].tolist())
    assert stream.damaged == ["hemisphere-r0000-000001"]
    assert "skipped damaged shard hemisphere-r0000-000001" in caplog.text and "cur_rgb" in caplog.text
    assert (root / "quarantine" / "hemisphere-r0000-000001.zarr").is_dir() and not victim.exists()
    assert "cur_rgb" in (root / "quarantine" / "hemisphere-r0000-000001.reason.txt").read_text()


@pytest.mark.unit
def test_wait_for_shards(tmp_path) -> None:
    root = tmp_path / "nothing-here"
    with pytest.raises(TimeoutError, match="nothing-here"):
        wait_for_shards(str(root), 0.3)
    stream = ShardStream(data_cfg(root), "train", seed=0)
    with pytest.raises(TimeoutError, match="nothing-here"):
        stream.wait_for_shards(0.2)
    _writer(root)  # an info.json but no shards yet
    with pytest.raises(TimeoutError, match="nothing-here"):
        stream.wait_for_shards(0.2)
    publish(root, "hemisphere", 0, 8, 4, 8, False, {})
    publish(root, "dagger", 0, 10, 10, 10, False, {i: None for i in range(8)})
    assert stream.wait_for_shards(5.0) == 2


@pytest.mark.unit
def test_augmentation_changes_images_not_labels_and_is_off_for_val(dataset) -> None:
    root, table = dataset
    cfg = data_cfg(root, color_jitter=0.4, noise_std=0.0)
    batch = take(ShardStream(cfg, "train", seed=4), 200)
    check_identity(batch, table, images=False)
    uids = batch["step"].tolist()
    orig_cur = torch.stack([torch.from_numpy(table[u]["cur_img"]).permute(2, 0, 1) for u in uids]).float() / 255
    orig_des = torch.stack([torch.from_numpy(table[u]["des_img"]).permute(2, 0, 1) for u in uids]).float() / 255
    cur_diff = (batch["cur"] - orig_cur).abs().flatten(1).amax(1)
    des_diff = (batch["des"] - orig_des).abs().flatten(1).amax(1)
    assert (cur_diff > 0.02).float().mean() > 0.9 and (des_diff > 0.02).float().mean() > 0.9
    # Independent draws for the two images: the brightness ratio differs between them.
    ratio_cur = batch["cur"].mean((1, 2, 3)) / orig_cur.mean((1, 2, 3))
    ratio_des = batch["des"].mean((1, 2, 3)) / orig_des.mean((1, 2, 3))
    assert ((ratio_cur - ratio_des).abs() > 1e-3).float().mean() > 0.9

    noisy = take(ShardStream(data_cfg(root, noise_std=0.05), "train", seed=4), 50)
    orig = torch.stack([torch.from_numpy(table[u]["cur_img"]).permute(2, 0, 1) for u in noisy["step"].tolist()])
    assert 0.02 < (noisy["cur"] - orig.float() / 255).std() < 0.08

    val = take(ShardStream(cfg, "val", seed=4), 10_000)
    orig_val = torch.stack([torch.from_numpy(table[u]["cur_img"]).permute(2, 0, 1) for u in val["step"].tolist()])
    assert torch.equal(val["cur"], orig_val.float() / 255)
    forced = take(ShardStream(cfg, "val", seed=4, augment=True), 10_000)
    assert not torch.equal(forced["cur"], orig_val.float() / 255)
    check_identity(forced, table, images=False)


@pytest.mark.unit
def test_with_coarse_returns_the_arrays_and_masks_dagger_samples(dataset) -> None:
    root, table = dataset
    batch = take(ShardStream(data_cfg(root, dagger_fraction=0.5), "train", seed=5, with_coarse=True), 200)
    assert batch["coarse_match"].shape == (200, *GRID, 2) and batch["coarse_match"].dtype == torch.float32
    assert batch["coarse_valid"].shape == (200, *GRID) and batch["coarse_valid"].dtype == torch.bool
    dagger = batch["producer"].eq(1)
    assert dagger.any() and (~dagger).any()
    assert not batch["coarse_valid"][dagger].any() and not batch["coarse_match"][dagger].any()
    for i in torch.nonzero(~dagger).flatten().tolist():
        t = table[batch["step"][i].item()]
        np.testing.assert_array_equal(batch["coarse_match"][i].numpy(), t["coarse_match"])
        np.testing.assert_array_equal(batch["coarse_valid"][i].numpy(), t["coarse_valid"])
    check_identity(batch, table)


@pytest.mark.unit
def test_with_coarse_on_shards_without_them_is_a_clear_error(tmp_path) -> None:
    publish(tmp_path, "hemisphere", 0, 40, 4, 8, False, {})
    with pytest.raises(ShardError, match=r"hemisphere-r0000-000000.*coarse_match"):
        next(iter(ShardStream(data_cfg(tmp_path), "train", seed=0, with_coarse=True)))


@pytest.mark.unit
def test_arguments_and_collate_errors(dataset) -> None:
    root, _ = dataset
    with pytest.raises(ValueError, match="split"):
        ShardStream(data_cfg(root), "test", seed=0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="rank"):
        ShardStream(data_cfg(root), "train", seed=0, rank=2, world_size=2)
    with pytest.raises(ValueError, match="empty"):
        collate([])
    with pytest.raises(ValueError, match="fields"):
        collate([{"a": torch.zeros(1)}, {"b": torch.zeros(1)}])


@pytest.mark.integration
@pytest.mark.slow
def test_loader_with_spawned_workers(dataset) -> None:
    root, table = dataset
    cfg = data_cfg(root, workers=2, dagger_fraction=0.5, color_jitter=0.2, noise_std=0.01)
    loader = make_loader(cfg, "train", seed=6, batch_size=8)
    assert loader.multiprocessing_context.get_start_method() == "spawn" and loader.persistent_workers
    batches = list(islice(iter(loader), 4))
    for batch in batches:
        assert batch["cur"].shape == (8, 3, H, W) and 0 <= batch["cur"].min() and batch["cur"].max() <= 1
        check_identity(batch, table, images=False)
    # Batches alternate between the two workers: equal seeds per worker would make batches 0 and 1 identical.
    assert batches[0]["step"].tolist() != batches[1]["step"].tolist()
    assert batches[2]["step"].tolist() != batches[3]["step"].tolist()

    val = make_loader(cfg, "val", seed=6, batch_size=8, world_size=2, rank=1)
    other = make_loader(cfg, "val", seed=6, batch_size=8, world_size=2, rank=0)
    steps = [u for loader in (val, other) for b in loader for u in b["step"].tolist()]
    assert sorted(steps) == sorted(u for u, t in table.items() if t["split"] == "val")


@pytest.mark.unit
def test_colour_jitter_matches_torchvision_where_nothing_clips() -> None:
    from torchvision.transforms import functional as F

    from training.dataset import _augment, _NoiseBank

    img = torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(0)) * 0.4 + 0.3
    out = _augment(img.clone(), 0.1, 0.0, np.random.default_rng(7), _NoiseBank(torch.Generator()))
    b, c, s = np.random.default_rng(7).uniform(0.9, 1.1, 3).tolist()
    ref = F.adjust_saturation(F.adjust_contrast(F.adjust_brightness(img, b), c), s)
    torch.testing.assert_close(out, ref, atol=1e-3, rtol=0)


@pytest.mark.unit
def test_rot90_turns_image_label_and_matches_to_the_nearest_quarter_turn(tmp_path: Path) -> None:
    from policy.control import normalize_velocity, pbvs
    from policy.rotation import rotate_label, turn_image
    from sim.geometry import make_pose, rot_z

    rng = np.random.default_rng(0)
    scene = next(s for s in range(100) if split_of_scene(s, 0.5) == "val")  # one deterministic pass, in order
    buf = ShardBuffer(H, W, coarse_grid=GRID)
    d = buf.add_desired(rng.integers(0, 256, (H, W, 3), dtype=np.uint8))
    # Radians. The turned camera is c Rz(k pi/2), so k cancels the yaw: 1.7 rad needs 3 turns, -1.5 rad one.
    yaws = [0.1, 1.7, 3.0, -1.5]
    curs, poses = [], []
    for i, yaw in enumerate(yaws):
        cur = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
        wTc = make_pose(rot_z(yaw), [0.1 * i, 0.0, 0.05])
        match = np.arange(8, dtype=np.float32).reshape(*GRID, 2)
        valid = np.array([[True, False], [False, False]])
        buf.add_sample(
            cur_rgb=cur, des_index=d, vel=normalize_velocity(pbvs(wTc), 1.0), wTc=wTc, wTd=np.eye(4), K=K,
            scene_scale=1.0, episode=i, step=0, scene_seed=scene, coarse_match=match, coarse_valid=valid,
        )  # fmt: skip
        curs.append(cur)
        poses.append(wTc)
    _writer(tmp_path).publish(ShardKey("hemisphere", 0, 0), buf)
    cfg = data_cfg(tmp_path, val_fraction=0.5)
    batch = take(ShardStream(cfg, "val", seed=0, with_coarse=True, rot90=True), 4)
    for i, k in enumerate([0, 3, 2, 1]):
        j = i
        assert int(batch["turn"][j]) == k
        assert np.degrees(abs(yaws[i])) == pytest.approx(float(batch["rot_deg"][j]), abs=1e-3)
        got = np.round(batch["cur"][j].permute(1, 2, 0).numpy() * 255).astype(np.uint8)
        assert np.array_equal(got, turn_image(curs[i], k))
        assert np.allclose(batch["vel"][j].numpy(), rotate_label(poses[i], k, 1.0), atol=1e-6)
        assert np.array_equal(batch["coarse_valid"][j].numpy(), np.rot90(np.array([[1, 0], [0, 0]]), k).astype(bool))


@pytest.mark.unit
def test_rot90_relabels_from_the_relative_pose_and_the_stored_d_star_when_the_goal_is_not_the_origin(
    tmp_path: Path,
) -> None:
    from scipy.spatial.transform import Rotation

    from policy.rotation import rot90_pose
    from sim.geometry import make_pose, rot_x, rot_z

    rng = np.random.default_rng(1)
    scene = next(s for s in range(100) if split_of_scene(s, 0.5) == "val")
    d_star = 2.0
    wTd = make_pose(rot_x(2.6), [0.0, 0.8, 0.0])
    wTd[:3, 3] *= d_star / np.linalg.norm(wTd[:3, 3])  # the desired camera at d* = 2 from the scene centre
    buf = ShardBuffer(H, W)
    d = buf.add_desired(rng.integers(0, 256, (H, W, 3), dtype=np.uint8))
    yaws = [1.7, -1.5, 3.0, 0.2]  # radians about the optical axis: nearest quarter turns 3, 1, 2, 0
    poses = []
    for i, yaw in enumerate(yaws):
        wTc = wTd @ make_pose(rot_z(yaw), [0.05 * (i + 1), -0.03, 0.1])
        buf.add_sample(
            cur_rgb=rng.integers(0, 256, (H, W, 3), dtype=np.uint8), des_index=d, vel=np.zeros(6), wTc=wTc, wTd=wTd,
            K=K, scene_scale=d_star, episode=i, step=0, scene_seed=scene,
        )  # fmt: skip
        poses.append(wTc)
    _writer(tmp_path).publish(ShardKey("hemisphere", 0, 0), buf)
    batch = take(ShardStream(data_cfg(tmp_path, val_fraction=0.5), "val", seed=0, rot90=True), 4)
    for j, (k, wTc) in enumerate(zip([3, 1, 2, 0], poses, strict=True)):
        assert int(batch["turn"][j]) == k
        assert float(batch["rot_deg"][j]) == pytest.approx(np.degrees(abs(yaws[j])), abs=1e-3)
        if k == 0:
            assert not batch["vel"][j].any()  # an unturned sample keeps its stored label
            continue
        # The turned current camera is c Rz(k pi/2); its label is the PBVS of (that camera, wTd) over d*, by hand.
        dTc = np.linalg.inv(wTd) @ wTc @ rot90_pose(k)
        R, t = dTc[:3, :3], dTc[:3, 3]
        expected = np.concatenate([-R.T @ t / d_star, -Rotation.from_matrix(R).as_rotvec()])
        np.testing.assert_allclose(batch["vel"][j].numpy(), expected, atol=1e-6)
