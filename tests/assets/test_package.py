"""`assets` is a leaf package with a light import and a complete public API."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import assets

ROOT = Path(__file__).resolve().parents[2]
ALLOWED_THIRD_PARTY = {"numpy", "trimesh", "PIL", "cv2"}
ALLOWED_PROJECT = {"assets", "file_io"}  # file_io: the atomic writes, a module below every package


@pytest.mark.unit
def test_imports_only_numpy_trimesh_pillow_opencv_and_itself() -> None:
    for path in sorted((ROOT / "assets").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                ok = top in ALLOWED_THIRD_PARTY | ALLOWED_PROJECT | {"__future__"} or top in sys.stdlib_module_names
                assert ok, f"{path.name} imports {name}"


@pytest.mark.integration
def test_import_is_light() -> None:
    heavy = "{'trimesh', 'cv2', 'PIL', 'sim', 'policy', 'mujoco', 'torch'}"
    code = f"import sys, assets\nprint(sorted({heavy} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.unit
def test_every_public_name_resolves() -> None:
    for name in assets.__all__:
        assert getattr(assets, name) is not None
    assert "make_mesh" in dir(assets)
