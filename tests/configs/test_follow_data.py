"""Jobs that read a dataset follow the config it was made with; the command line wins, and both are said."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from configs import (
    add_config_arguments,
    config_following_data,
    config_to_yaml,
    load_config,
    load_following_data,
    recorded_config,
    save_config,
)

pytestmark = pytest.mark.unit


def _record(tmp_path: Path, *overrides: str, name: str = "run") -> Path:
    """A dataset root of run `name` under tmp_path whose config.yaml records smoke with `overrides`."""
    cfg = load_config("smoke", [f"run.root={tmp_path}", f"run.name={name}", *overrides])
    save_config(cfg, cfg.datagen.root)
    return Path(cfg.datagen.root)


def test_without_a_recorded_dataset_nothing_changes(tmp_path: Path) -> None:
    followed = load_following_data("smoke", [f"run.root={tmp_path}", "run.name=run"])
    assert followed.cfg == load_config("smoke", [f"run.root={tmp_path}", "run.name=run"])
    assert followed.root is None and followed.notes() == []


def test_training_takes_the_datasets_assets_and_scene_but_not_its_policy_or_targets(tmp_path: Path) -> None:
    root = _record(
        tmp_path,
        "sim.assets.mesh_dirs=[my/meshes]",
        "sim.assets.procedural_meshes=false",
        "sim.scene.objects=[2,3]",
        "policy.transformer.depth=1",  # the network a run trains is its own choice
        "datagen.hemisphere.samples=7",  # how much data was made does not change what it shows
        "datagen.hemisphere.near_goal=0.5",
    )
    followed = load_following_data("smoke", [f"run.root={tmp_path}", "run.name=run"])
    cfg, smoke = followed.cfg, load_config("smoke")
    assert cfg.sim.assets.mesh_dirs == ["my/meshes"] and not cfg.sim.assets.procedural_meshes
    assert cfg.sim.scene.objects == (2, 3) and cfg.datagen.hemisphere.near_goal == 0.5
    assert cfg.policy == smoke.policy and cfg.datagen.hemisphere.samples == smoke.datagen.hemisphere.samples
    assert followed.root == str(root)
    assert set(followed.taken) == {
        "sim.assets.mesh_dirs",
        "sim.assets.procedural_meshes",
        "sim.scene.objects",
        "datagen.hemisphere.near_goal",
    }
    (note,) = followed.notes()
    assert note.startswith(f"following the dataset {root}") and "sim.assets.mesh_dirs" in note


def test_the_command_line_wins_over_the_dataset_and_is_recorded(tmp_path: Path) -> None:
    _record(tmp_path, "sim.assets.mesh_dirs=[my/meshes]", "sim.scene.objects=[2,3]")
    followed = load_following_data(
        "smoke", [f"run.root={tmp_path}", "run.name=run", "sim.assets.mesh_dirs=[other/meshes]"]
    )
    assert followed.cfg.sim.assets.mesh_dirs == ["other/meshes"]
    assert followed.cfg.sim.scene.objects == (2, 3)  # not overridden: still the dataset's
    assert followed.overridden == {"sim.assets.mesh_dirs": (["my/meshes"], ["other/meshes"])}
    assert "sim.assets.mesh_dirs=['other/meshes'] (dataset: ['my/meshes'])" in followed.notes()[1]
    assert followed.record()["overridden"]["sim.assets.mesh_dirs"] == {
        "dataset": ["my/meshes"],
        "used": ["other/meshes"],
    }


def test_a_section_override_covers_every_key_below_it(tmp_path: Path) -> None:
    _record(tmp_path, "sim.assets.mesh_dirs=[my/meshes]")
    followed = load_following_data(
        "smoke", [f"run.root={tmp_path}", "run.name=run", "sim.assets={mesh_dirs: [], texture_dirs: []}"]
    )
    assert followed.cfg.sim.assets.mesh_dirs == [] and not followed.taken


def test_a_config_that_agrees_with_the_dataset_has_no_notes(tmp_path: Path) -> None:
    _record(tmp_path, "sim.assets.mesh_dirs=[my/meshes]")
    followed = load_following_data(
        "smoke", [f"run.root={tmp_path}", "run.name=run", "sim.assets.mesh_dirs=[my/meshes]"]
    )
    assert followed.root is not None and followed.notes() == []


def test_info_json_is_read_when_config_yaml_is_missing_and_a_bad_record_is_an_error(tmp_path: Path) -> None:
    cfg = load_config("smoke", ["sim.camera.width=320"])
    (tmp_path / "info.json").write_text(json.dumps({"schema": 1, "config": cfg.model_dump(mode="json")}))
    assert recorded_config(tmp_path)["sim"]["camera"]["width"] == 320
    (tmp_path / "config.yaml").write_text("[not, a, mapping]\n")
    with pytest.raises(ValueError, match=r"config\.yaml: the dataset config is not a mapping"):
        recorded_config(tmp_path)
    assert recorded_config(tmp_path / "absent") is None


def test_the_cli_prints_each_note_once_and_notes_are_kept_as_comments(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    _record(tmp_path, "sim.assets.mesh_dirs=[my/meshes]")
    parser = add_config_arguments(argparse.ArgumentParser(prog="python -m training"))
    followed = config_following_data(parser, parser.parse_args([f"run.root={tmp_path}", "run.name=run"]))
    err = capsys.readouterr().err
    assert err.count("python -m training: note: following the dataset") == 1 and "sim.assets.mesh_dirs" in err
    path = save_config(followed.cfg, tmp_path / "out", "train_config.yaml", notes=followed.notes())
    assert path.read_text().startswith("# following the dataset")
    assert load_config(path) == followed.cfg
    assert config_to_yaml(load_config(path)) == config_to_yaml(followed.cfg)
