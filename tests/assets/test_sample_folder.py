"""assets.sample_folder: the downloaded-style folders load through the same loaders as GSO and texture folders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from assets.loaders import ImageFolder, MeshFolder
from assets.sample_folder import write_sample_folder

pytestmark = pytest.mark.unit


def test_sample_folder_is_a_gso_layout_with_photo_textures(tmp_path: Path) -> None:
    meshes, textures = write_sample_folder(tmp_path, models=3, textures=2, seed=1)
    folder = MeshFolder(meshes)
    assert len(folder) == 3 and {folder[name].layout for name in folder.names} == {"gso"}
    mesh = folder.load(0, size=0.1)
    assert mesh.uv is not None and mesh.texture is not None and mesh.texture.std() > 10  # a photo, not a flat colour
    assert np.ptp(mesh.vertices, axis=0).max() == pytest.approx(0.1, rel=1e-3)
    assert len(ImageFolder(textures)) == 2
    again, _ = write_sample_folder(tmp_path / "again", models=3, textures=2, seed=1)
    assert (again / "sample_000/meshes/model.obj").read_bytes() == (meshes / "sample_000/meshes/model.obj").read_bytes()
