"""A downloaded-style asset folder, made offline: scanned-looking meshes in the Google Scanned Objects layout and a
folder of photographic textures.

No machine of this project can download GSO or OmniObject3D, yet the benchmark must also be run on assets that reach
the simulator the way downloaded ones do: through `sim.assets.mesh_dirs` and `texture_dirs`, with the procedural
generators off. This writes such folders from material that is not the procedural families': trimesh primitives
displaced by smooth noise (lumpy, scan-like surfaces, spherical UVs) and crops of the photographs that ship with
matplotlib (`mpl-data/sample_data`). Each model's own texture is a photo crop, as a scan's is.

    python -m assets.sample_folder runs/assets        # runs/assets/meshes (GSO layout), runs/assets/textures
    make eval ARGS="--config cpu sim.assets.mesh_dirs=[runs/assets/meshes] \\
        sim.assets.texture_dirs=[runs/assets/textures] sim.assets.procedural_meshes=false \\
        sim.assets.procedural_textures=false"
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

import numpy as np
from PIL import Image

PHOTOS = ("grace_hopper.jpg", "Minduka_Present_Blue_Pack.png", "logo2.png")
TEXTURE_SIZE = 256


def _photos() -> list[np.ndarray]:
    # Located, not imported: the assets package stays free of plotting libraries.
    spec = importlib.util.find_spec("matplotlib")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("assets.sample_folder takes its photographs from matplotlib's sample data: install it")
    root = Path(next(iter(spec.submodule_search_locations))) / "mpl-data" / "sample_data"
    images = [np.asarray(Image.open(root / name).convert("RGB")) for name in PHOTOS if (root / name).is_file()]
    if not images:
        raise FileNotFoundError(f"no sample photographs in {root}: matplotlib's sample_data is missing")
    return images


def _crop(rng: np.random.Generator, photos: list[np.ndarray]) -> np.ndarray:
    img = photos[int(rng.integers(len(photos)))]
    h, w = img.shape[:2]
    side = int(rng.uniform(0.25, 0.8) * min(h, w))
    y, x = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
    crop = Image.fromarray(img[y : y + side, x : x + side]).resize((TEXTURE_SIZE, TEXTURE_SIZE), Image.BILINEAR)
    return np.asarray(crop.rotate(90 * int(rng.integers(4))))


def _lumpy_mesh(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(vertices (V, 3) metres, faces (F, 3), uv (V, 2)): a scaled primitive with smooth radial noise."""
    import trimesh

    kind = int(rng.integers(4))
    if kind == 0:
        mesh = trimesh.creation.icosphere(subdivisions=3)
    elif kind == 1:
        mesh = trimesh.creation.capsule(height=1.0, radius=0.5, count=[24, 24])
    elif kind == 2:
        mesh = trimesh.creation.cylinder(radius=0.5, height=1.0, sections=32)
        mesh = mesh.subdivide().subdivide()
    else:
        mesh = trimesh.creation.box(extents=(1.0, 1.0, 1.0)).subdivide().subdivide().subdivide()
    v = np.asarray(mesh.vertices, dtype=np.float64)
    v -= v.mean(axis=0)
    direction = v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-9)
    # Sum of a few random low-frequency waves on the sphere of directions: lumps, not spikes.
    bumps = sum(
        rng.uniform(0.03, 0.08) * np.sin(direction @ rng.normal(size=3) * rng.uniform(2, 5) + rng.uniform(0, 6.3))
        for _ in range(4)
    )
    v = v * (1.0 + bumps)[:, None] * rng.uniform(0.5, 1.0, size=3)
    v *= rng.uniform(0.06, 0.2) / np.ptp(v, axis=0).max()  # the scene's object sizes, metres
    d = v - v.mean(axis=0)
    d /= np.maximum(np.linalg.norm(d, axis=1, keepdims=True), 1e-12)
    uv = np.stack(
        [0.5 + np.arctan2(d[:, 1], d[:, 0]) / (2 * np.pi), 0.5 + np.arcsin(np.clip(d[:, 2], -1, 1)) / np.pi], 1
    )
    return v, np.asarray(mesh.faces), uv


def _write_obj(path: Path, vertices: np.ndarray, faces: np.ndarray, uv: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ["mtllib model.mtl", "usemtl material_0"]
    lines += [f"v {x:.7g} {y:.7g} {z:.7g}" for x, y, z in vertices]
    lines += [f"vt {u:.6g} {w:.6g}" for u, w in uv]
    lines += [f"f {a}/{a} {b}/{b} {c}/{c}" for a, b, c in faces + 1]
    path.write_text("\n".join(lines) + "\n")


def write_sample_folder(root: str | Path, models: int = 40, textures: int = 40, seed: int = 0) -> tuple[Path, Path]:
    """Write `root/meshes` (GSO layout: <model>/meshes/model.obj + model.mtl, materials/textures/texture.png) and
    `root/textures` (PNG photo crops); returns both folders. Deterministic in `seed`."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    photos = _photos()
    meshes, tex = root / "meshes", root / "textures"
    for i in range(models):
        model = meshes / f"sample_{i:03d}"
        v, f, uv = _lumpy_mesh(rng)
        _write_obj(model / "meshes" / "model.obj", v, f, uv)
        (model / "meshes" / "model.mtl").write_text("newmtl material_0\nKd 1 1 1\nmap_Kd texture.png\n")
        (model / "materials" / "textures").mkdir(parents=True, exist_ok=True)
        Image.fromarray(_crop(rng, photos)).save(model / "materials" / "textures" / "texture.png")
    tex.mkdir(parents=True, exist_ok=True)
    for i in range(textures):
        Image.fromarray(_crop(rng, photos)).save(tex / f"photo_{i:03d}.png")
    return meshes, tex


def main(argv: list[str] | None = None) -> int:
    """CLI: write the folders and say where."""
    parser = argparse.ArgumentParser(prog="python -m assets.sample_folder", description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path)
    parser.add_argument("--models", type=int, default=40)
    parser.add_argument("--textures", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    meshes, tex = write_sample_folder(args.root, args.models, args.textures, args.seed)
    print(f"sample_folder: {args.models} models -> {meshes}, {args.textures} textures -> {tex}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
