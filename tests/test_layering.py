"""The package layering of DESIGN.md: sim -> policy -> datagen -> training, evaluation beside training, heavy backends
imported lazily."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ["configs", "sim", "assets", "runtime", "policy", "datagen", "training", "evaluation"]
# Which project packages each package may import. configs (plain data) and assets (meshes and textures) are
# leaves below sim: the scene sampler in sim draws from the asset catalogue. runtime (Ray start-up, backend checks,
# the W&B mode) sits above sim and below every job that starts Ray, so none of those jobs imports another for it.
# evaluation sits beside training: it measures checkpoints with sim and policy, and neither imports the other.
ALLOWED = {
    "configs": set(),
    "assets": set(),
    "sim": {"configs", "assets"},
    "runtime": {"configs", "sim"},
    "policy": {"configs", "sim"},
    "datagen": {"configs", "sim", "assets", "runtime", "policy"},
    "training": {"configs", "sim", "assets", "runtime", "policy", "datagen"},
    "evaluation": {"configs", "sim", "assets", "runtime", "policy"},
}


def _imported_packages(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package", LAYERS)
def test_imports_flow_one_way(package: str) -> None:
    for path in sorted((ROOT / package).rglob("*.py")):
        wrong = (_imported_packages(path) & set(LAYERS)) - ALLOWED[package] - {package}
        assert not wrong, f"{path.relative_to(ROOT)} imports {sorted(wrong)}, against the layering of DESIGN.md"


def test_light_packages_do_not_load_heavy_backends() -> None:
    code = (
        "import sys, configs, assets, sim, sim.geometry, sim.camera, sim.poses, sim.render, sim.scene\n"
        "import policy, policy.control\n"
        "heavy = {'mujoco', 'isaacsim', 'ray', 'wandb', 'omni', 'zarr'} & set(sys.modules)\n"
        "print(sorted(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "[]"
