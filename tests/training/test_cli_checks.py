"""`python -m training` and `python -m datagen` check everything before Ray starts, stop at once when there is nothing
to do, follow the dataset's config, and record the assets in every output."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from configs import load_config, load_following_data, save_config
from policy.checkpoint import read_meta
from tests.fixtures.factories import block_ray, small_config, small_overrides, write_asset_folders


def _exit_2(main, argv: list[str], capsys: pytest.CaptureFixture) -> str:  # type: ignore[no-untyped-def]
    """Run a CLI's main that must refuse `argv` with exit status 2; returns what it printed to stderr."""
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    return capsys.readouterr().err


def _saved_at(cfg, step: int, data: dict | None = None) -> Path:  # type: ignore[no-untyped-def]
    from training.trainer import TrainState

    state = TrainState(cfg, torch.device("cpu"))
    state.step = step
    state.data = data or {}
    return state.save()


@pytest.mark.unit
def test_training_at_its_target_says_so_and_starts_no_ray(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    from training.__main__ import main

    args = small_overrides("train.steps=3", root=tmp_path)
    saved = _saved_at(small_config("train.steps=3", root=tmp_path), 3)
    block_ray(monkeypatch)
    assert main(args) == 0
    out = capsys.readouterr().out
    assert out.strip() == (
        f"training: already at step 3 of 3 (checkpoint {saved}); nothing to do — raise train.steps to continue"
    )
    # Below the target the same command goes on to train.
    calls = []
    monkeypatch.setattr("training.trainer.run_training", lambda cfg, followed, **_: calls.append(cfg.train.steps))
    monkeypatch.setattr("training.__main__.summary_line", lambda cfg, s: "trained")
    assert main(small_overrides("train.steps=5", root=tmp_path)) == 0
    assert calls == [5]


@pytest.mark.unit
def test_a_checkpoint_for_another_network_exits_2_before_ray(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    from training.__main__ import main

    _saved_at(small_config(root=tmp_path), 1)
    block_ray(monkeypatch)
    err = _exit_2(main, small_overrides("policy.transformer.depth=1", root=tmp_path), capsys)
    assert "checkpoint does not fit the configured network" in err


@pytest.mark.unit
def test_an_init_from_that_cannot_be_used_exits_2_before_ray(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    from training.__main__ import main

    block_ray(monkeypatch)
    err = _exit_2(main, small_overrides(f"train.init_from={tmp_path / 'nowhere'}", root=tmp_path), capsys)
    assert "error: train.init_from" in err and "nowhere" in err and "Traceback" not in err
    # The shipped policy is another network than the smoke config's (a shallower transformer would be allowed).
    err = _exit_2(main, small_overrides("train.init_from=pretrained:cnsv2-cpu", root=tmp_path), capsys)
    assert "policy.backbone.model: checkpoint 'xfeat' != config 'cnn'" in err and "transformer.depth" not in err


@pytest.mark.unit
def test_training_follows_the_datasets_assets_and_its_checkpoints_name_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    from training.__main__ import main
    from training.trainer import data_record

    meshes, textures = write_asset_folders(tmp_path / "assets")
    made = small_config(f"sim.assets.mesh_dirs=[{meshes}]", f"sim.assets.texture_dirs=[{textures}]", root=tmp_path)
    save_config(made, made.datagen.root)  # what datagen records when it creates the root
    seen = []
    monkeypatch.setattr("training.trainer.run_training", lambda cfg, followed, **_: seen.append((cfg, followed)))
    monkeypatch.setattr("training.__main__.summary_line", lambda cfg, s: "trained")
    assert main(small_overrides(root=tmp_path)) == 0
    ((cfg, followed),) = seen
    assert cfg.sim.assets == made.sim.assets
    assert "following the dataset" in capsys.readouterr().err

    record = data_record(cfg, followed)
    assert record["taken_from_dataset"]["sim.assets.mesh_dirs"] == [str(meshes)]
    assert record["assets"]["meshes"] == {"folders": [str(meshes)], "procedural": True, "train": 2, "heldout": 1}
    meta = read_meta(_saved_at(cfg, 1, record))
    assert meta["extra"]["data"]["assets"]["textures"]["train"] == 2
    # A trainer node without the folders still trains and says why the counts are missing.
    elsewhere = data_record(load_config("smoke", ["sim.assets.mesh_dirs=[/no/such/meshes]"]))
    assert "sim.assets.mesh_dirs" in elsewhere["assets"]["unavailable"]


@pytest.mark.unit
def test_datagen_names_a_bad_asset_folder_and_exits_2_before_ray(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    from datagen.__main__ import main

    block_ray(monkeypatch)
    err = _exit_2(
        main, ["--quiet", *small_overrides(f"sim.assets.mesh_dirs=[{tmp_path / 'typo'}]", root=tmp_path)], capsys
    )
    assert f"error: sim.assets.mesh_dirs: {tmp_path / 'typo'}: mesh folder" in err and "does not exist" in err
    assert not (tmp_path / "smoke").exists()  # nothing written


@pytest.mark.integration
def test_datagen_with_every_shard_made_says_so_without_ray_and_sidecars_name_the_assets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    from datagen.__main__ import main
    from datagen.hemisphere import HemisphereProducer

    meshes, _ = write_asset_folders(tmp_path / "assets", textures=0)
    args = small_overrides(
        f"sim.assets.mesh_dirs=[{meshes}]",
        "datagen.hemisphere.samples=4",
        "datagen.hemisphere.shard_samples=4",
        "datagen.hemisphere.desired_per_scene=1",
        "datagen.hemisphere.currents_per_desired=2",
        "datagen.dagger.samples=0",
        "sim.scene.settle_seconds=0.0",
        root=tmp_path,
    )
    cfg = load_following_data("smoke", args).cfg
    producer = HemisphereProducer(cfg)
    try:
        producer.run()
    finally:
        producer.close()
    sidecar = json.loads(next((Path(cfg.datagen.root) / "shards").glob("*.json")).read_text())
    assert sidecar["assets"]["meshes"] == {"folders": [str(meshes)], "procedural": True, "train": 2, "heldout": 1}

    block_ray(monkeypatch)
    assert main(["--quiet", *args]) == 0
    out = capsys.readouterr().out
    assert f"meshes: 2 train / 1 held out from {meshes} + procedural" in out
    assert "warning: sim.assets.mesh_dirs: few meshes per split" in out
    assert out.strip().endswith(
        f"in {Path(cfg.datagen.root).resolve()}; nothing to do — raise datagen.hemisphere.samples or "
        "datagen.dagger.samples to make more"
    )
    assert "datagen: already at the target, 4 samples (hemisphere 4, dagger 0) in 1 shards" in out


@pytest.mark.unit
def test_the_pipeline_at_its_target_says_so_and_a_bad_config_exits_2_before_ray(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    from training.pipeline import main

    saved = _saved_at(small_config("train.steps=3", root=tmp_path), 3)
    block_ray(monkeypatch)
    assert main(small_overrides("train.steps=3", root=tmp_path)) == 0
    assert capsys.readouterr().out.strip() == (
        f"pipeline: already at step 3 of 3 (checkpoint {saved}); nothing to do — raise train.steps to continue"
    )
    # The network would train on one patch grid and servo on another.
    err = _exit_2(main, small_overrides("train.steps=5", "policy.input_size=[96,96]", root=tmp_path), capsys)
    assert "policy.input_size [96, 96] differs from sim.camera" in err
