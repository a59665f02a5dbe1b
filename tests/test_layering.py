"""The package layering of DESIGN.md: sim -> policy -> datagen -> training, evaluation beside training, heavy backends
imported lazily."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.fixtures.imports import modules_after

ROOT = Path(__file__).resolve().parents[1]
# The project's top-level packages, and file_io, a top-level module.
LAYERS = ["file_io", "configs", "shards", "sim", "assets", "runtime", "policy", "datagen", "training", "evaluation"]
# Which project packages each package may import. file_io (atomic writes) is below everything: every layer writes
# files. configs (plain data) and assets (meshes and textures) are leaves below sim: the scene sampler in sim draws
# from the asset catalogue. shards (the dataset contract) is a leaf beside configs: datagen writes through it and
# training reads through it, so neither needs the other's internals, and nothing below datagen knows about datasets.
# runtime (Ray start-up, backend checks, the W&B mode, thread counts) sits above sim and below policy and every job
# that starts Ray, so none of those jobs imports another for it; policy uses it only for Servo's thread count.
# evaluation sits beside training: it measures checkpoints with sim and policy, and neither imports the other.
ALLOWED = {
    "file_io": set(),
    "configs": {"file_io"},
    "assets": {"file_io"},
    "shards": {"file_io", "configs"},
    "sim": {"file_io", "configs", "assets"},
    "runtime": {"file_io", "configs", "sim"},
    "policy": {"file_io", "configs", "sim", "runtime"},
    "datagen": {"file_io", "configs", "sim", "assets", "runtime", "policy", "shards"},
    "training": {"file_io", "configs", "sim", "assets", "runtime", "policy", "datagen", "shards"},
    "evaluation": {"file_io", "configs", "sim", "assets", "runtime", "policy"},
}


def _sources(layer: str) -> list[Path]:
    module = ROOT / f"{layer}.py"
    return [module] if module.is_file() else sorted((ROOT / layer).rglob("*.py"))


def _imported_packages(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.unit
@pytest.mark.parametrize("package", LAYERS)
def test_imports_flow_one_way(package: str) -> None:
    sources = _sources(package)
    assert sources, f"{package}: no such package or module"
    for path in sources:
        wrong = (_imported_packages(path) & set(LAYERS)) - ALLOWED[package] - {package}
        assert not wrong, f"{path.relative_to(ROOT)} imports {sorted(wrong)}, against the layering of DESIGN.md"


@pytest.mark.integration
def test_light_packages_do_not_load_heavy_backends() -> None:
    code = (
        "import file_io, configs, assets, sim, sim.geometry, sim.camera, sim.poses, sim.render, sim.scene\n"
        "import policy, policy.control, shards"
    )
    assert modules_after(code, ["mujoco", "isaacsim", "ray", "wandb", "omni", "zarr"]) == []


@pytest.mark.unit
def test_the_training_stream_reads_datasets_through_shards_not_datagen() -> None:
    imported = _imported_packages(ROOT / "training" / "dataset.py")
    assert "shards" in imported and "datagen" not in imported


@pytest.mark.integration
def test_the_cnn_policy_and_servo_do_not_import_timm() -> None:
    # timm costs ~11 s to import; the CNN backbone and the attention layers need none of it.
    code = (
        "import policy\n"
        "from policy import Servo, build_policy\n"
        "from configs import load_config\n"
        "build_policy(load_config('smoke').policy)"
    )
    assert modules_after(code, ["timm"]) == []
