"""ShardBuffer: exact dtypes, copies of the images, and each bad field refused by name as it is added."""

from __future__ import annotations

import numpy as np
import pytest

from shards import ARRAY_NAMES, ShardBuffer, ShardError, dtype_of, validate_arrays
from tests.fixtures.factories import K_CANON, H, W

pytestmark = pytest.mark.unit


def test_buffer_stacks_exact_dtypes_and_counts_bytes(shard_buffer) -> None:
    buf = shard_buffer(n=7, per_desired=3, coarse=(3, 4))
    arrays = buf.arrays()
    assert len(buf) == 7 and buf.m == 3
    assert set(arrays) == set(ARRAY_NAMES)
    for name, a in arrays.items():
        assert a.dtype == dtype_of(name), name
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
