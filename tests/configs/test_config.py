"""Loading, overriding, validating and saving configurations."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from configs import ConfigError, available_configs, load_config, save_config, validate_config

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.unit
def test_every_shipped_config_is_valid() -> None:
    assert {"smoke", "default"} <= set(available_configs())
    for name in available_configs():
        load_config(name)


@pytest.mark.unit
def test_smoke_is_the_cpu_default() -> None:
    cfg = load_config()
    assert cfg.run.name == "smoke" and cfg.sim.camera.width == 256 and cfg.sim.camera.focal_scale == 1.0
    assert cfg.sim.poses.desired.radius == (0.5, 0.9)


@pytest.mark.unit
def test_default_extends_smoke() -> None:
    cfg = load_config("default")
    assert cfg.run.name == "default" and cfg.sim.camera.width == 512
    assert cfg.sim.poses == load_config("smoke").sim.poses


@pytest.mark.unit
def test_overrides_are_typed() -> None:
    cfg = load_config("smoke", ["sim.camera.width=320", "run.name=try1", "sim.poses.desired.radius=[0.6, 0.8]"])
    assert cfg.sim.camera.width == 320 and isinstance(cfg.sim.camera.width, int)
    assert cfg.run.name == "try1"
    assert cfg.sim.poses.desired.radius == (0.6, 0.8)
    assert cfg.sim.poses.initial.radius == (0.5, 0.9)


@pytest.mark.unit
@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("sim.camra.width=3", "sim.camra: unknown key; allowed here: camera, poses"),
        ("sim.camera.widht=3", "sim.camera.widht: unknown key; allowed here: width, height, focal_scale"),
        ("bogus=1", "bogus: unknown key; allowed here: run, sim"),
        ("sim.camera.width=abc", "sim.camera.width: Input should be a valid integer"),
        ("sim.camera.width=8", "sim.camera.width: Input should be greater than or equal to 16"),
        ("sim.camera.focal_scale=0", "sim.camera.focal_scale: Input should be greater than 0.05"),
        ("sim.poses.desired.radius=[0.9, 0.5]", "sim.poses.desired.radius: range must be [low, high]"),
        ("sim.poses.desired.radius=[0.0, 0.5]", "sim.poses.desired.radius: radius must be > 0"),
        (
            "sim.poses.initial.elevation_deg=[10, 95]",
            "sim.poses.initial.elevation_deg: elevation must lie in [0, 90]",
        ),
        (
            "sim.poses.desired.extra_rotation_deg.z=200",
            "extra_rotation_deg.z: Input should be less than or equal to 180",
        ),
        ("run.name=a/b", "run.name: String should match pattern"),
        ("sim.poses.max_tries=0", "sim.poses.max_tries: Input should be greater than or equal to 1"),
        ("novalue", "override 'novalue': expected key.sub=value"),
    ],
)
def test_bad_values_name_the_key_and_what_is_allowed(override: str, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config("smoke", [override])
    assert expected in str(info.value)


@pytest.mark.unit
def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(ConfigError) as info:
        load_config("smoke", ["sim.camera.width=1", "sim.camera.height=1"])
    assert len(info.value.problems) == 2


@pytest.mark.unit
def test_missing_keys_are_named(tmp_path: Path) -> None:
    data = yaml.safe_load((ROOT / "configs" / "smoke.yaml").read_text())
    del data["sim"]["camera"]["height"]
    with pytest.raises(ConfigError, match=r"sim\.camera\.height: missing required key"):
        validate_config(data)


@pytest.mark.unit
def test_unknown_config_and_extends_cycle(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="shipped configs: "):
        load_config("no_such_config")
    (tmp_path / "a.yaml").write_text("extends: b\n")
    (tmp_path / "b.yaml").write_text("extends: a.yaml\n")
    with pytest.raises(ConfigError, match="cycle"):
        load_config(tmp_path / "a.yaml")


@pytest.mark.unit
def test_a_user_file_can_extend_a_shipped_or_a_sibling_config(tmp_path: Path) -> None:
    (tmp_path / "mine.yaml").write_text("extends: default\nrun:\n  name: mine\n  root: ${run.name}_out\n")
    cfg = load_config(tmp_path / "mine.yaml")
    assert cfg.run.name == "mine" and cfg.run.root == "mine_out"  # interpolation resolves after merging
    assert cfg.sim.camera.width == 512  # from the shipped default.yaml
    shutil.copy(ROOT / "configs" / "smoke.yaml", tmp_path / "default.yaml")
    assert load_config(tmp_path / "mine.yaml").sim.camera.width == 256  # a sibling file wins


@pytest.mark.unit
def test_saved_config_reloads_identically(tmp_path: Path) -> None:
    cfg = load_config("smoke", ["sim.camera.width=320", "run.seed=7"])
    path = save_config(cfg, tmp_path / "out")
    assert path == tmp_path / "out" / "config.yaml"
    assert load_config(path) == cfg
    assert os.listdir(tmp_path / "out") == ["config.yaml"]  # no temporary file left behind


@pytest.mark.integration
def test_cli_prints_the_resolved_config_and_rejects_bad_keys() -> None:
    ok = subprocess.run(
        [sys.executable, "-m", "configs", "--config", "default", "sim.camera.height=384"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
    assert ok.returncode == 0, ok.stderr
    printed = yaml.safe_load(ok.stdout)
    assert printed["sim"]["camera"] == {"width": 512, "height": 384, "focal_scale": 1.0}
    bad = subprocess.run(
        [sys.executable, "-m", "configs", "sim.camera.widht=3"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
    assert bad.returncode == 2 and "sim.camera.widht: unknown key" in bad.stderr


@pytest.mark.integration
@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_passes_args_through() -> None:
    out = subprocess.run(
        ["make", "-s", "config", "ARGS=run.name=via_make sim.camera.width=320"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
        env={**os.environ, "PYTHON": sys.executable, "VENV": str(Path(sys.executable).parents[1])},
    )
    assert out.returncode == 0, out.stderr
    printed = yaml.safe_load(out.stdout)
    assert printed["run"]["name"] == "via_make" and printed["sim"]["camera"]["width"] == 320


@pytest.mark.unit
def test_near_goal_ranges_must_be_log_uniform() -> None:
    with pytest.raises(ConfigError, match=r"datagen\.hemisphere\.near_goal_translation: .*low > 0"):
        load_config("smoke", ["datagen.hemisphere.near_goal_translation=[0, 0.3]"])
