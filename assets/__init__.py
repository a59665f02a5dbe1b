"""Asset catalogue: procedural meshes and textures, loaders for downloaded datasets, and train / held-out splits.

The names below are imported on first use (PEP 562), so `import assets` stays cheap and does not pull in trimesh or
OpenCV until a loader is needed.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "Mesh": "assets.mesh",
    "MESH_FAMILIES": "assets.procedural_meshes",
    "make_mesh": "assets.procedural_meshes",
    "TEXTURE_FAMILIES": "assets.procedural_textures",
    "make_texture": "assets.procedural_textures",
    "make_sky": "assets.procedural_textures",
    "random_color": "assets.procedural_textures",
    "random_palette": "assets.procedural_textures",
    "decimate": "assets.decimation",
    "MeshFolder": "assets.loaders",
    "MeshEntry": "assets.loaders",
    "ImageFolder": "assets.loaders",
    "ImageEntry": "assets.loaders",
    "load_mesh": "assets.loaders",
    "load_image": "assets.loaders",
    "tonemap": "assets.loaders",
    "MESH_LAYOUTS": "assets.loaders",
    "split_of": "assets.splits",
    "filter_split": "assets.splits",
    "folder_split": "assets.splits",
    "heldout_count": "assets.splits",
    "procedural_name": "assets.splits",
    "procedural_seed": "assets.splits",
}

__all__ = [
    "MESH_FAMILIES",
    "MESH_LAYOUTS",
    "TEXTURE_FAMILIES",
    "ImageEntry",
    "ImageFolder",
    "Mesh",
    "MeshEntry",
    "MeshFolder",
    "decimate",
    "filter_split",
    "folder_split",
    "heldout_count",
    "load_image",
    "load_mesh",
    "make_mesh",
    "make_sky",
    "make_texture",
    "procedural_name",
    "procedural_seed",
    "random_color",
    "random_palette",
    "split_of",
    "tonemap",
]
assert set(__all__) == set(_EXPORTS)

if TYPE_CHECKING:
    from assets.decimation import decimate
    from assets.loaders import (
        MESH_LAYOUTS,
        ImageEntry,
        ImageFolder,
        MeshEntry,
        MeshFolder,
        load_image,
        load_mesh,
        tonemap,
    )
    from assets.mesh import Mesh
    from assets.procedural_meshes import MESH_FAMILIES, make_mesh
    from assets.procedural_textures import TEXTURE_FAMILIES, make_sky, make_texture, random_color, random_palette
    from assets.splits import filter_split, folder_split, heldout_count, procedural_name, procedural_seed, split_of


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'assets' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
