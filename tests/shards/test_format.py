"""The format: shard ids, the dtype of every array (as its docstring documents them), checksums, a light import."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from shards import ARRAY_NAMES, ShardKey, array_sha256, dtype_of, format

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


@pytest.mark.unit
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


@pytest.mark.unit
def test_every_array_has_the_dtype_its_docstring_gives() -> None:
    assert set(ARRAY_NAMES) == set(DTYPES)
    for name, dtype in DTYPES.items():
        assert dtype_of(name) == np.dtype(dtype), name
        row = re.search(rf"^{name}\s+(\w+)\s", format.__doc__, re.MULTILINE)
        assert row is not None, f"{name} is not in shards.format's table"
        assert np.dtype(row[1]) == np.dtype(dtype), name


@pytest.mark.unit
def test_the_checksum_does_not_depend_on_byte_order_or_memory_layout() -> None:
    a = np.arange(12, dtype="<f4").reshape(3, 4)
    assert array_sha256(a) == array_sha256(a.astype(">f4")) == array_sha256(np.asfortranarray(a))
    assert array_sha256(a) != array_sha256(a.T)
    assert array_sha256(a).startswith("sha256:")


@pytest.mark.integration
def test_import_is_light() -> None:
    code = "import sys, shards; print(sorted({'torch', 'mujoco', 'ray', 'wandb', 'zarr'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "[]"
