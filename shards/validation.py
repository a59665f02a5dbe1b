"""Checks a shard's arrays against the format (`shards.format`) before it is written; errors name the array."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np

from shards.format import (
    ARRAY_NAMES,
    COARSE_ARRAYS,
    DESIRED_ARRAY,
    IMAGE_ARRAYS,
    POSE_TOLERANCE,
    REQUIRED_ARRAYS,
    SAMPLE_ARRAYS,
    VEL_LIMIT,
    ShardError,
    dtype_of,
)


def validate_arrays(arrays: Mapping[str, np.ndarray], *, height: int, width: int, offset: int = 0) -> None:
    """Check a shard's arrays against the contract; a ShardError names the first bad array and what is wrong.

    Checks names, dtypes, shapes, that floats are finite, label range (|vel| components <= VEL_LIMIT), des_index in
    [0, M), non-constant images (a constant image is a broken render), poses rigid, K a pinhole matrix with positive
    focal lengths, scene_scale > 0, beta in [0, 1], policy_version >= -1 and episode, step, scene_seed >= 0.
    `offset` is added to the sample indices in messages (for arrays that are a slice of a shard).
    """
    # In this order: each step relies on what the ones before it established (names, then dtypes, then shapes).
    _check_names(arrays)
    _check_dtypes(arrays)
    n = _check_shapes(arrays, height, width)
    _check_finite_labels(arrays, n, offset)
    _check_images(arrays, offset)
    for name in ("wTc", "wTd"):
        _check_poses(name, arrays[name], offset)
    _check_intrinsics(arrays["K"], offset)
    _check_range(arrays, "scene_scale", lambda a: a > 0, "must be > 0", offset)
    _check_range(arrays, "beta", lambda a: (a >= 0) & (a <= 1), "must be in [0, 1]", offset)
    _check_range(arrays, "policy_version", lambda a: a >= -1, "must be >= -1 (-1 = expert)", offset)
    for name in ("episode", "step", "scene_seed"):
        _check_range(arrays, name, lambda a: a >= 0, "must be >= 0", offset)


def _check_names(arrays: Mapping[str, np.ndarray]) -> None:
    """No unknown array, every required one, and both coarse arrays or neither."""
    unknown = sorted(set(arrays) - set(ARRAY_NAMES))
    if unknown:
        raise ShardError(f"{unknown[0]}: unknown array; a shard holds {', '.join(ARRAY_NAMES)}", array=unknown[0])
    for name in REQUIRED_ARRAYS:
        if name not in arrays:
            raise ShardError(f"{name}: missing", array=name)
    coarse = [name for name in COARSE_ARRAYS if name in arrays]
    if len(coarse) == 1:
        other = next(name for name in COARSE_ARRAYS if name not in arrays)
        raise ShardError(f"{other}: missing ({coarse[0]} is present; the coarse arrays come together)", array=other)


def _check_dtypes(arrays: Mapping[str, np.ndarray]) -> None:
    for name, value in arrays.items():
        if not isinstance(value, np.ndarray):
            raise ShardError(f"{name}: expected a numpy array, got {type(value).__name__}", array=name)
        expected = dtype_of(name)
        if value.dtype != expected:
            raise ShardError(f"{name}: dtype {value.dtype}, expected {expected}", array=name)


def _check_shapes(arrays: Mapping[str, np.ndarray], height: int, width: int) -> int:
    """Every array's shape against N samples of height x width, the coarse grid and M >= 1 desired images; returns N."""
    n = arrays["cur_rgb"].shape[0] if arrays["cur_rgb"].ndim else 0
    if n == 0:
        raise ShardError("cur_rgb: an empty shard (N = 0)", array="cur_rgb")
    grid = arrays["coarse_valid"].shape[1:3] if "coarse_valid" in arrays else None
    if grid is not None and len(grid) != 2:
        raise ShardError(
            f"coarse_valid: shape {arrays['coarse_valid'].shape}, expected (N, h, w)", array="coarse_valid"
        )
    sizes = {"H": height, "W": width, "h": grid[0] if grid else 0, "w": grid[1] if grid else 0}
    for name, (_, sample_shape) in {**SAMPLE_ARRAYS, **COARSE_ARRAYS}.items():
        if name in arrays:
            expected_shape = (n, *(sizes.get(d, d) for d in sample_shape))
            if arrays[name].shape != expected_shape:
                raise ShardError(f"{name}: shape {arrays[name].shape}, expected {expected_shape}", array=name)
    des = arrays[DESIRED_ARRAY]
    if des.ndim != 4 or des.shape[1:] != (height, width, 3) or des.shape[0] == 0:
        raise ShardError(
            f"{DESIRED_ARRAY}: shape {des.shape}, expected (M >= 1, {height}, {width}, 3)", array="des_rgb"
        )
    return n


def _check_finite_labels(arrays: Mapping[str, np.ndarray], n: int, offset: int) -> None:
    """Float arrays finite, and every label component within VEL_LIMIT."""
    for name in ("vel", "wTc", "wTd", "K", "scene_scale", "beta", "coarse_match"):
        if name in arrays:
            bad = ~np.isfinite(arrays[name].reshape(n, -1)).all(axis=1)
            if bad.any():
                i = int(np.argmax(bad))
                raise ShardError(f"{name}[{i + offset}]: not finite ({_short(arrays[name][i])})", array=name)
    vel = arrays["vel"]
    bad = (np.abs(vel) > VEL_LIMIT).any(axis=1)
    if bad.any():
        i = int(np.argmax(bad))
        raise ShardError(
            f"vel[{i + offset}]: label out of range, |component| > {VEL_LIMIT} ({_short(vel[i])})", array="vel"
        )


def _check_images(arrays: Mapping[str, np.ndarray], offset: int) -> None:
    """des_index within the M desired images, and no constant image."""
    m = arrays[DESIRED_ARRAY].shape[0]
    des_index = arrays["des_index"]
    bad = (des_index < 0) | (des_index >= m)
    if bad.any():
        i = int(np.argmax(bad))
        raise ShardError(f"des_index[{i + offset}]: {int(des_index[i])} is outside [0, M={m})", array="des_index")
    for name in IMAGE_ARRAYS:
        flat = arrays[name].reshape(arrays[name].shape[0], -1)
        constant = flat.min(axis=1) == flat.max(axis=1)
        if constant.any():
            i = int(np.argmax(constant))
            at = i if name == DESIRED_ARRAY else i + offset  # desired images are indexed within the shard
            raise ShardError(
                f"{name}[{at}]: constant image (every pixel {int(flat[i, 0])}): a broken render", array=name
            )


def _check_intrinsics(K: np.ndarray, offset: int) -> None:
    K = K.astype(np.float64)
    bad = (K[:, 0, 0] <= 0) | (K[:, 1, 1] <= 0)
    if bad.any():
        i = int(np.argmax(bad))
        raise ShardError(f"K[{i + offset}]: focal lengths must be positive ({_short(K[i])})", array="K")
    bad = (K[:, 1, 0] != 0) | (K[:, 2, 0] != 0) | (K[:, 2, 1] != 0) | (K[:, 2, 2] != 1)
    if bad.any():
        i = int(np.argmax(bad))
        raise ShardError(
            f"K[{i + offset}]: not a pinhole matrix [[fx, s, cx], [0, fy, cy], [0, 0, 1]] ({_short(K[i])})", array="K"
        )


def _check_poses(name: str, T: np.ndarray, offset: int) -> None:
    bottom = np.abs(T[:, 3] - np.array([0.0, 0.0, 0.0, 1.0])).max(axis=1) > 0
    R = T[:, :3, :3]
    ortho = np.abs(np.einsum("nji,njk->nik", R, R) - np.eye(3)).max(axis=(1, 2)) > POSE_TOLERANCE
    det = np.abs(np.linalg.det(R) - 1.0) > POSE_TOLERANCE
    bad = bottom | ortho | det
    if bad.any():
        i = int(np.argmax(bad))
        raise ShardError(
            f"{name}[{i + offset}]: not a rigid transform (R orthonormal, det 1, last row 0 0 0 1)", array=name
        )


def _check_range(
    arrays: Mapping[str, np.ndarray], name: str, ok: Callable[[np.ndarray], np.ndarray], what: str, offset: int
) -> None:
    bad = ~ok(arrays[name])
    if bad.any():
        i = int(np.argmax(bad))
        raise ShardError(f"{name}[{i + offset}]: {arrays[name][i].item()} {what}", array=name)


def _short(a: np.ndarray) -> str:
    return np.array2string(np.asarray(a).ravel(), precision=4, threshold=12, separator=", ")
