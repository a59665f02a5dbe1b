"""Input checks shared by the geometry, camera and control code: shapes, finiteness, rotations."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

ROTATION_TOL = 1e-6


def as_array(x: ArrayLike, shape: tuple[int | None, ...], name: str) -> np.ndarray:
    """Return `x` as a finite float64 array of `shape` (None matches any size), or raise ValueError."""
    try:
        a = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name}: expected a numeric array of shape {_fmt(shape)}, got {type(x).__name__}") from err
    if a.ndim != len(shape) or any(s is not None and s != d for s, d in zip(shape, a.shape, strict=True)):
        raise ValueError(f"{name}: expected shape {_fmt(shape)}, got {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name}: contains NaN or inf")
    return a


def as_rotation(R: ArrayLike, name: str = "R", tol: float = ROTATION_TOL) -> np.ndarray:
    """Return `R` as a 3x3 rotation matrix, or raise ValueError if it is not orthonormal with det +1."""
    R = as_array(R, (3, 3), name)
    err = float(np.abs(R.T @ R - np.eye(3)).max())
    if err > tol:
        raise ValueError(f"{name}: not a rotation matrix (|R^T R - I| = {err:.2e} > {tol:.0e})")
    if np.linalg.det(R) < 0:
        raise ValueError(f"{name}: not a rotation matrix (det = -1, a reflection)")
    return R


def as_pose(T: ArrayLike, name: str = "T") -> np.ndarray:
    """Return `T` as a 4x4 rigid transform, or raise ValueError naming what is wrong."""
    T = as_array(T, (4, 4), name)
    if not np.allclose(T[3], [0.0, 0.0, 0.0, 1.0], atol=1e-9):
        raise ValueError(f"{name}: last row must be [0, 0, 0, 1], got {T[3].tolist()}")
    as_rotation(T[:3, :3], f"{name}[:3, :3]")
    return T


def as_positive(x: float, name: str) -> float:
    """Return `x` as a finite float > 0, or raise ValueError."""
    try:
        v = float(x)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name}: expected a number, got {x!r}") from err
    if not np.isfinite(v) or v <= 0:
        raise ValueError(f"{name}: must be finite and > 0, got {v}")
    return v


def _fmt(shape: tuple[int | None, ...]) -> str:
    return "(" + ", ".join("N" if s is None else str(s) for s in shape) + ("," if len(shape) == 1 else "") + ")"
