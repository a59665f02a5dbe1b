"""Evaluation follows the run's dataset (its assets and scenes; suites and the command line still win) and results.md
says which assets each suite drew and how many."""

from __future__ import annotations

from pathlib import Path

import pytest

from configs import save_config
from evaluation.plan import check_plan_assets, make_plan
from evaluation.report import markdown
from sim.asset_catalogue import AssetFolderError
from tests.fixtures.factories import block_ray, small_config, small_overrides, write_asset_folders

pytestmark = pytest.mark.unit

ONLY_ORACLE = ("eval.controllers=[oracle]", "eval.suites=[canonical]")


def test_evaluation_draws_the_held_out_assets_of_the_datasets_folders_and_says_so(tmp_path: Path) -> None:
    meshes, textures = write_asset_folders(tmp_path / "assets")
    made = small_config(f"sim.assets.mesh_dirs=[{meshes}]", f"sim.assets.texture_dirs=[{textures}]", root=tmp_path)
    save_config(made, made.datagen.root)
    cfg, plan = make_plan("smoke", small_overrides(*ONLY_ORACLE, root=tmp_path))
    suite = plan.configs["canonical"]
    assert suite.sim.assets.mesh_dirs == [str(meshes)] and suite.sim.assets.split == "heldout"  # the suite's split
    assert plan.followed is not None and "sim.assets.texture_dirs" in plan.followed.taken
    check_plan_assets(plan)
    assert plan.assets["canonical"]["meshes"]["heldout"] == 1
    text = markdown(cfg, plan, [])
    assert f"Scene settings follow the run's dataset {made.datagen.root}: following the dataset" in text
    assert (
        f"held-out assets (meshes: 1 from {meshes} + procedural; textures: 1 from {textures} + procedural; "
        "skies: procedural)" in text
    )


def test_without_a_dataset_the_report_says_the_config_file_decided(tmp_path: Path) -> None:
    cfg, plan = make_plan("smoke", small_overrides(*ONLY_ORACLE, root=tmp_path))
    assert plan.followed is None
    check_plan_assets(plan)
    text = markdown(cfg, plan, [])
    assert "Scene settings: the config file's (no dataset recorded at data.root)." in text
    assert "held-out assets (meshes: procedural; textures: procedural; skies: procedural)" in text


def test_a_missing_asset_folder_stops_the_plan_before_any_episode(tmp_path: Path) -> None:
    _, plan = make_plan(
        "smoke", small_overrides(*ONLY_ORACLE, f"sim.assets.mesh_dirs=[{tmp_path / 'x'}]", root=tmp_path)
    )
    with pytest.raises(AssetFolderError, match=r"sim\.assets\.mesh_dirs"):
        check_plan_assets(plan)


def test_the_cli_exits_2_naming_the_folder_before_ray(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    from evaluation.runner import main

    block_ray(monkeypatch)
    with pytest.raises(SystemExit) as exit_:
        main(small_overrides(*ONLY_ORACLE, f"sim.assets.texture_dirs=[{tmp_path / 'typo'}]", root=tmp_path))
    assert exit_.value.code == 2
    assert f"error: sim.assets.texture_dirs: {tmp_path / 'typo'}: image folder" in capsys.readouterr().err
