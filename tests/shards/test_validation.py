"""validate_arrays: every kind of bad shard is refused with an error that names the array and the problem."""

from __future__ import annotations

import numpy as np
import pytest

from shards import ShardError, validate_arrays
from tests.fixtures.factories import H, W

pytestmark = pytest.mark.unit


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
def test_validation_names_the_array_and_the_problem(name: str, how: str, match: str, shard_buffer) -> None:
    arrays = shard_buffer(n=12, per_desired=3, coarse=(3, 4)).arrays()
    _corrupt(arrays, name, how)
    with pytest.raises(ShardError, match=match) as err:
        validate_arrays(arrays, height=H, width=W)
    assert err.value.array == name


def test_validation_rejects_another_image_size_and_unknown_arrays(shard_buffer) -> None:
    arrays = shard_buffer().arrays()
    with pytest.raises(ShardError, match="cur_rgb: shape"):
        validate_arrays(arrays, height=W, width=H)
    with pytest.raises(ShardError, match="depth: unknown array"):
        validate_arrays({**arrays, "depth": np.zeros(3)}, height=H, width=W)
