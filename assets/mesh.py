"""The triangle mesh every asset source produces and every render backend consumes."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True, eq=False)
class Mesh:
    """A triangle mesh in metres in its own object frame, with optional per-vertex UVs and its own texture.

    `uv` follows the OBJ/OpenGL convention (v = 0 at the bottom row of the texture). Vertices on a UV seam are
    duplicated, so one UV per vertex is enough. `texture` is the mesh's own RGB image (scanned objects), or None
    when the scene sampler chooses the material.
    """

    name: str
    vertices: np.ndarray  # (V, 3) float64
    faces: np.ndarray  # (F, 3) int32, counter-clockwise seen from outside
    uv: np.ndarray | None = None  # (V, 2) float32
    texture: np.ndarray | None = field(default=None, repr=False)  # (H, W, 3) uint8

    def __post_init__(self) -> None:
        v = np.ascontiguousarray(self.vertices, dtype=np.float64)
        f = np.ascontiguousarray(self.faces, dtype=np.int32)
        if v.ndim != 2 or v.shape[1] != 3 or len(v) < 4:
            raise ValueError(f"mesh {self.name!r}: vertices must be (V>=4, 3), got {v.shape}")
        if not np.all(np.isfinite(v)):
            raise ValueError(f"mesh {self.name!r}: vertices contain NaN or inf")
        if f.ndim != 2 or f.shape[1] != 3 or len(f) < 4:
            raise ValueError(f"mesh {self.name!r}: faces must be (F>=4, 3), got {f.shape}")
        if f.min() < 0 or f.max() >= len(v):
            raise ValueError(f"mesh {self.name!r}: face indices out of range [0, {len(v)})")
        object.__setattr__(self, "vertices", v)
        object.__setattr__(self, "faces", f)
        if self.uv is not None:
            uv = np.ascontiguousarray(self.uv, dtype=np.float32)
            if uv.shape != (len(v), 2) or not np.all(np.isfinite(uv)):
                raise ValueError(f"mesh {self.name!r}: uv must be finite (V, 2) = ({len(v)}, 2), got {uv.shape}")
            object.__setattr__(self, "uv", uv)
        if self.texture is not None:
            t = np.asarray(self.texture)
            if t.dtype != np.uint8 or t.ndim != 3 or t.shape[2] != 3:
                raise ValueError(f"mesh {self.name!r}: texture must be uint8 (H, W, 3), got {t.dtype} {t.shape}")
            if self.uv is None:
                raise ValueError(f"mesh {self.name!r}: a texture needs uv coordinates")

    @property
    def extent(self) -> np.ndarray:
        """Axis-aligned bounding-box size (3,)."""
        return self.vertices.max(axis=0) - self.vertices.min(axis=0)

    def scaled(self, factor: float) -> Mesh:
        """Return the same mesh scaled uniformly about its object-frame origin."""
        return Mesh(self.name, self.vertices * float(factor), self.faces, self.uv, self.texture)
