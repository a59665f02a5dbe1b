"""Downloaded asset folders flow through the scene sampler into rendered images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from assets import make_mesh
from configs import load_config
from sim import ServoEnv

pytestmark = pytest.mark.integration


def _write_gso_model(root: Path, name: str, seed: int) -> None:
    mesh = make_mesh("box", np.random.default_rng(seed))
    (root / name / "meshes").mkdir(parents=True)
    (root / name / "materials" / "textures").mkdir(parents=True)
    lines = [f"v {x:.6f} {y:.6f} {z:.6f}" for x, y, z in mesh.vertices]
    lines += [f"vt {u:.6f} {v:.6f}" for u, v in mesh.uv]
    lines += [f"f {a + 1}/{a + 1} {b + 1}/{b + 1} {c + 1}/{c + 1}" for a, b, c in mesh.faces]
    (root / name / "meshes" / "model.obj").write_text("\n".join(lines) + "\n")
    # Magenta and green halves: colours the procedural world never makes on a grey ground.
    tex = np.zeros((64, 64, 3), np.uint8)
    tex[:32] = (255, 0, 255)
    tex[32:] = (0, 255, 0)
    Image.fromarray(tex).save(root / name / "materials" / "textures" / "texture.png")


def _object_pixels(frame, cam) -> np.ndarray:  # type: ignore[no-untyped-def]
    # Pixels whose surface point lies above the ground plane belong to an object.
    h, w = frame.depth.shape
    u, v = np.meshgrid(np.arange(w), np.arange(h))
    xy = cam.normalize(np.stack([u.ravel(), v.ravel()], 1).astype(float))
    rays = np.concatenate([xy, np.ones((len(xy), 1))], 1) @ frame.wTc[:3, :3].T
    z = frame.wTc[2, 3] + frame.depth.ravel().astype(float) * rays[:, 2]
    return (np.isfinite(z) & (z > 0.004)).reshape(h, w)


def test_a_gso_folder_loads_and_renders_with_its_own_texture(tmp_path: Path) -> None:
    root = tmp_path / "gso"
    for i in range(2):
        _write_gso_model(root, f"model_{i}", i)
    cfg = load_config(
        "smoke",
        [
            "sim.camera.width=96",
            "sim.camera.height=96",
            f"sim.assets.mesh_dirs=[{root}]",
            "sim.assets.procedural_meshes=false",
            "sim.assets.heldout_fraction=0.0",
            "sim.scene.objects=[1,1]",
            "sim.scene.object_size=[0.25,0.25]",
            "sim.scene.ground_textureless_prob=1.0",
            "sim.scene.ambient=[0.4,0.4]",
            "sim.scene.light_tint=0.0",
            "sim.scene.effects.prob=0.0",
        ],
    ).sim
    with ServoEnv(cfg) as env:
        env.reset(0)
        scene_names = {o.mesh.name for o in env.scene.objects}
        assert scene_names <= {"model_0", "model_1"}
        assert all(o.mesh.texture is not None for o in env.scene.objects)
        frame = env.desired_frame()
        obj = _object_pixels(frame, env.camera)
        assert obj.sum() > 100
        rgb = frame.rgb[obj].astype(int)
        magenta = (rgb[:, 0] > 1.5 * rgb[:, 1] + 10) & (rgb[:, 2] > 1.5 * rgb[:, 1] + 10)
        green = (rgb[:, 1] > 1.5 * rgb[:, 0] + 10) & (rgb[:, 1] > 1.5 * rgb[:, 2] + 10)
        assert (magenta | green).mean() > 0.7
