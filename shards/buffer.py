"""One shard buffered in memory, checked field by field as samples are added; the writer publishes it whole."""

from __future__ import annotations

import operator
from typing import Any

import numpy as np

from shards.format import COARSE_ARRAYS, DESIRED_ARRAY, SAMPLE_ARRAYS, ShardError, dtype_of


class ShardBuffer:
    """One shard buffered in memory; `DatasetWriter.publish` writes it in one go.

    Each field is checked for shape and kind as it is added (the error names the field); values (finite, range) are
    checked once for the whole shard by `validate_arrays`. Images are copied, so a renderer may reuse its buffers.
    """

    def __init__(self, height: int, width: int, coarse_grid: tuple[int, int] | None = None) -> None:
        if height < 1 or width < 1:
            raise ValueError(f"image size must be positive, got {height}x{width}")
        if coarse_grid is not None:
            coarse_grid = (int(coarse_grid[0]), int(coarse_grid[1]))
            if min(coarse_grid) < 1:
                raise ValueError(f"coarse_grid must be positive, got {coarse_grid}")
        self.height, self.width, self.coarse_grid = int(height), int(width), coarse_grid
        self._desired: list[np.ndarray] = []
        self._samples: dict[str, list] = {name: [] for name in SAMPLE_ARRAYS}
        if coarse_grid is not None:
            self._samples.update({name: [] for name in COARSE_ARRAYS})
        self._nbytes = 0

    def __len__(self) -> int:
        return len(self._samples["cur_rgb"])

    @property
    def m(self) -> int:
        """The number of desired images."""
        return len(self._desired)

    @property
    def nbytes(self) -> int:
        """Raw bytes buffered (what the arrays will take uncompressed)."""
        return self._nbytes

    def add_desired(self, rgb: np.ndarray) -> int:
        """Add a desired image (uint8 HxWx3); returns the des_index that samples of it use."""
        self._desired.append(self._image(DESIRED_ARRAY, rgb))
        self._nbytes += self._desired[-1].nbytes
        return len(self._desired) - 1

    def add_sample(
        self,
        *,
        cur_rgb: np.ndarray,
        des_index: int,
        vel: Any,
        wTc: Any,
        wTd: Any,
        K: Any,
        scene_scale: float,
        episode: int,
        step: int,
        scene_seed: int,
        policy_version: int = -1,
        beta: float = 1.0,
        coarse_match: Any = None,
        coarse_valid: Any = None,
    ) -> None:
        """Add one sample; `des_index` must come from `add_desired`, `vel` is the normalised expert label."""
        index = self._int("des_index", des_index, np.int32)
        if not 0 <= index < len(self._desired):
            raise ShardError(
                f"des_index: {index} is not a desired image of this buffer (M = {self.m})", array="des_index"
            )
        row: dict[str, Any] = {
            "cur_rgb": self._image("cur_rgb", cur_rgb),
            "des_index": index,
            "vel": self._floats("vel", vel, (6,)),
            "wTc": self._floats("wTc", wTc, (4, 4)),
            "wTd": self._floats("wTd", wTd, (4, 4)),
            "K": self._floats("K", K, (3, 3)),
            "scene_scale": self._floats("scene_scale", scene_scale, ()),
            "episode": self._int("episode", episode, np.int64),
            "step": self._int("step", step, np.int32),
            "scene_seed": self._int("scene_seed", scene_seed, np.int64),
            "policy_version": self._int("policy_version", policy_version, np.int32),
            "beta": self._floats("beta", beta, ()),
        }
        if self.coarse_grid is None:
            if coarse_match is not None or coarse_valid is not None:
                raise ShardError(
                    "coarse_match: this buffer has no coarse grid (coarse_grid=None)", array="coarse_match"
                )
        else:
            if coarse_match is None or coarse_valid is None:
                missing = "coarse_match" if coarse_match is None else "coarse_valid"
                raise ShardError(f"{missing}: required, this buffer has coarse_grid={self.coarse_grid}", array=missing)
            row["coarse_match"] = self._floats("coarse_match", coarse_match, (*self.coarse_grid, 2))
            valid = np.asarray(coarse_valid)
            if valid.dtype != np.bool_ or valid.shape != self.coarse_grid:
                raise ShardError(
                    f"coarse_valid: {valid.dtype} {valid.shape}, expected bool {self.coarse_grid}", array="coarse_valid"
                )
            row["coarse_valid"] = valid.copy()
        for name, value in row.items():
            self._samples[name].append(value)
            self._nbytes += dtype_of(name).itemsize * int(np.prod(np.shape(value), dtype=np.int64))

    def arrays(self) -> dict[str, np.ndarray]:
        """The buffered shard as arrays of the contract's dtypes (stacked copies)."""
        if not self._desired or not len(self):
            raise ShardError(f"cur_rgb: an empty shard (N = {len(self)}, M = {self.m})", array="cur_rgb")
        out = {DESIRED_ARRAY: np.stack(self._desired)}
        for name, values in self._samples.items():
            dtype = dtype_of(name)
            out[name] = np.stack(values).astype(dtype, copy=False) if np.ndim(values[0]) else np.array(values, dtype)
        return out

    def _image(self, name: str, rgb: np.ndarray) -> np.ndarray:
        rgb = np.asarray(rgb)
        if rgb.dtype != np.uint8:
            raise ShardError(f"{name}: dtype {rgb.dtype}, expected uint8", array=name)
        if rgb.shape != (self.height, self.width, 3):
            raise ShardError(f"{name}: shape {rgb.shape}, expected ({self.height}, {self.width}, 3)", array=name)
        return np.array(rgb, copy=True, order="C")

    @staticmethod
    def _floats(name: str, value: Any, shape: tuple) -> np.ndarray:
        a = np.asarray(value)
        if a.dtype.kind not in "fiu" or a.shape != shape:
            raise ShardError(f"{name}: {a.dtype} {a.shape}, expected a real array of shape {shape}", array=name)
        return a.astype(dtype_of(name), copy=True)

    @staticmethod
    def _int(name: str, value: Any, dtype: type) -> int:
        try:
            i = operator.index(value)
        except TypeError:
            raise ShardError(f"{name}: expected an integer, got {value!r}", array=name) from None
        info = np.iinfo(dtype)
        if not info.min <= i <= info.max:
            raise ShardError(f"{name}: {i} does not fit {np.dtype(dtype)}", array=name)
        return i
