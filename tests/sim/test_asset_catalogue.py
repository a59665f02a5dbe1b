"""The asset catalogue: folders checked before any work, split counts per kind, and warnings for small splits."""

from __future__ import annotations

from pathlib import Path

import pytest

from configs import load_config
from sim.asset_catalogue import AssetCatalogue, AssetFolderError, check_assets, describe, report_lines
from tests.fixtures.factories import write_asset_folders

pytestmark = pytest.mark.unit


def _assets(*overrides: str):  # type: ignore[no-untyped-def]
    return load_config("smoke", list(overrides)).sim.assets


def test_three_meshes_and_textures_split_two_and_one_with_a_warning_that_says_what_to_change(tmp_path: Path) -> None:
    meshes, textures = write_asset_folders(tmp_path)
    cat = check_assets(_assets(f"sim.assets.mesh_dirs=[{meshes}]", f"sim.assets.texture_dirs=[{textures}]"))
    summary = cat.summary()
    assert summary["meshes"] == {"folders": [str(meshes.resolve())], "procedural": True, "train": 2, "heldout": 1}
    assert (summary["textures"]["train"], summary["textures"]["heldout"]) == (2, 1)
    assert summary["skies"] == {"folders": [], "procedural": True, "train": 0, "heldout": 0}
    assert len(cat.in_split("meshes")) == 2
    lines = report_lines(cat)
    assert f"meshes: 2 train / 1 held out from {meshes.resolve()} + procedural" in lines[1]
    warnings = [w for w in lines if w.startswith("warning:")]
    assert len(warnings) == 2 and all("sim.assets.heldout_fraction=0.2" in w for w in warnings)
    assert "2 train / 1 held out" in describe(summary)


def test_a_fraction_of_zero_trains_on_every_asset_and_five_assets_hold_one_out(tmp_path: Path) -> None:
    meshes, _ = write_asset_folders(tmp_path, meshes=5, textures=0)
    all_train = AssetCatalogue(_assets(f"sim.assets.mesh_dirs=[{meshes}]", "sim.assets.heldout_fraction=0"))
    assert (all_train.kinds["meshes"].count("train"), all_train.kinds["meshes"].count("heldout")) == (5, 0)
    five = AssetCatalogue(_assets(f"sim.assets.mesh_dirs=[{meshes}]"))
    assert (five.kinds["meshes"].count("train"), five.kinds["meshes"].count("heldout")) == (4, 1)


def test_procedural_only_gives_no_warning() -> None:
    cat = check_assets(_assets())
    assert cat.warnings() == []
    assert cat.lines() == ["meshes: procedural", "textures: procedural", "skies: procedural"]


def test_a_missing_folder_is_named_with_its_key(tmp_path: Path) -> None:
    with pytest.raises(AssetFolderError, match=r"sim\.assets\.mesh_dirs: .*nope.*does not exist"):
        check_assets(_assets(f"sim.assets.mesh_dirs=[{tmp_path / 'nope'}]"))


def test_a_folder_without_files_of_its_kind_is_named(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("no images here")
    with pytest.raises(AssetFolderError, match=r"sim\.assets\.texture_dirs: .*no images found"):
        check_assets(_assets(f"sim.assets.texture_dirs=[{tmp_path}]"))


def test_a_folder_whose_files_do_not_load_is_named(tmp_path: Path) -> None:
    for i in range(2):
        (tmp_path / f"broken_{i}.obj").write_text("this is not a mesh\n")
    with pytest.raises(AssetFolderError, match=r"sim\.assets\.mesh_dirs: .*none of its 2 smallest meshes loads"):
        check_assets(_assets(f"sim.assets.mesh_dirs=[{tmp_path}]"))


def test_a_split_with_nothing_to_draw_says_how_to_fix_it(tmp_path: Path) -> None:
    meshes, _ = write_asset_folders(tmp_path, meshes=2, textures=0)
    # Two meshes at 0.2: both train, so the held-out split has none, and procedural meshes are off.
    assets = _assets(
        f"sim.assets.mesh_dirs=[{meshes}]", "sim.assets.procedural_meshes=false", "sim.assets.split=heldout"
    )
    with pytest.raises(AssetFolderError, match=r"heldout split holds no meshes \(2 train, 0 held out.*heldout_fracti"):
        check_assets(assets)
