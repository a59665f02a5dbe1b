"""Loading GSO, OmniObject3D and plain mesh folders, image folders, the cached index, and clear errors."""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import trimesh
from PIL import Image

from assets import folder_index
from assets.loaders import ImageFolder, MeshFolder, TextureWarning, load_image, load_mesh, tonemap
from assets.mesh import Mesh
from assets.procedural_meshes import make_mesh
from assets.procedural_textures import make_texture

pytestmark = pytest.mark.unit


def _age(root: Path) -> None:
    """Backdate every directory so the index trusts it (see assets.folder_index on fresh mtimes)."""
    past = time.time() - 100
    for d in [root, *(p for p in root.rglob("*") if p.is_dir())]:
        os.utime(d, (past, past))


def _write_obj(path: Path, mesh: Mesh, mtl: str | None = None) -> None:
    """A minimal OBJ with UVs (f v/vt), optionally naming a material library."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [f"mtllib {mtl}", "usemtl material_0"] if mtl else []
    lines += [f"v {x:.9g} {y:.9g} {z:.9g}" for x, y, z in mesh.vertices]
    lines += [f"vt {u:.9g} {v:.9g}" for u, v in mesh.uv]
    lines += [f"f {a}/{a} {b}/{b} {c}/{c}" for a, b, c in mesh.faces + 1]
    path.write_text("\n".join(lines) + "\n")


def _write_mtl(path: Path, texture: str) -> None:
    path.write_text(f"newmtl material_0\nKd 1 1 1\nmap_Kd {texture}\n")


def _write_image(path: Path, image: np.ndarray, **kwargs: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path, **kwargs)


def _same_surface(loaded: Mesh, original: Mesh, scale: float) -> bool:
    """Same set of (position, uv) rows up to float32 rounding: what must survive loading, whatever order or
    vertex merging trimesh applies."""
    a = np.hstack([loaded.vertices / scale, loaded.uv])
    b = np.hstack([original.vertices, original.uv])
    d = np.abs(a[:, None, :] - b[None, :, :]).max(axis=2)
    return bool(d.min(axis=1).max() < 1e-5 and d.min(axis=0).max() < 1e-5)


def _mesh(family: str, seed: int) -> Mesh:
    return make_mesh(family, np.random.default_rng(seed))


def _texture(seed: int) -> np.ndarray:
    return make_texture("voronoi", np.random.default_rng(seed), size=32)


@pytest.fixture
def gso(tmp_path: Path) -> Path:
    root = tmp_path / "gso"
    for i, family in enumerate(["box", "torus"]):
        model = root / f"model_{family}"
        _write_obj(model / "meshes" / "model.obj", _mesh(family, i), mtl="model.mtl")
        # As in GSO, the material names texture.png beside the OBJ but the file lives in materials/textures/.
        _write_mtl(model / "meshes" / "model.mtl", "texture.png")
        _write_image(model / "materials" / "textures" / "texture.png", _texture(i))
        (model / "model.sdf").write_text("<sdf/>")
    _age(root)
    return root


@pytest.fixture
def omni(tmp_path: Path) -> Path:
    root = tmp_path / "OmniObject3D"
    scans = root / "raw_scans" / "toy_car"
    a = scans / "toy_car_001" / "Scan"
    _write_obj(a / "Scan.obj", _mesh("capsule", 0), mtl="Scan.mtl")
    _write_mtl(a / "Scan.mtl", "Scan.jpg")
    _write_image(a / "Scan.jpg", _texture(5), quality=95)
    b = scans / "toy_car_002" / "Scan"
    _write_obj(b / "Scan.obj", _mesh("vase", 1))  # no material library at all: the layout supplies the texture
    _write_image(b / "Scan.jpg", _texture(6), quality=95)
    _age(root)
    return root


@pytest.fixture
def plain(tmp_path: Path) -> Path:
    root = tmp_path / "meshes"
    _write_obj(root / "a.obj", _mesh("cone", 0))
    (root / "sub").mkdir()
    trimesh.creation.icosphere(subdivisions=2).export(root / "sub" / "b.ply")
    m = _mesh("superquadric", 2)
    visual = trimesh.visual.TextureVisuals(uv=m.uv, image=Image.fromarray(_texture(9)))
    trimesh.Trimesh(m.vertices, m.faces, visual=visual, process=False).export(root / "sub" / "c.glb")
    (root / "notes.txt").write_text("not a mesh")
    _age(root)
    return root


def test_gso_layout_loads_texture_and_uvs_at_the_requested_size(gso: Path) -> None:
    folder = MeshFolder(gso)
    assert folder.names == ["model_box", "model_torus"]
    assert folder["model_box"].layout == "gso"
    assert folder["model_box"].texture == gso.resolve() / "model_box/materials/textures/texture.png"
    assert folder["model_box"].mesh == gso.resolve() / "model_box/meshes/model.obj"
    for i, (name, family) in enumerate([("model_box", "box"), ("model_torus", "torus")]):
        mesh = folder.load(name, size=0.2)
        assert mesh.name == name
        assert mesh.extent.max() == pytest.approx(0.2)
        np.testing.assert_allclose((mesh.vertices.max(0) + mesh.vertices.min(0)) / 2, 0, atol=1e-9)
        assert mesh.texture is not None and np.array_equal(mesh.texture, _texture(i))
        original = _mesh(family, i)
        assert _same_surface(mesh, original, 0.2)


def test_omniobject3d_layout(omni: Path) -> None:
    folder = MeshFolder(omni)
    assert folder.names == ["raw_scans/toy_car/toy_car_001", "raw_scans/toy_car/toy_car_002"]
    assert all(e.layout == "omniobject3d" and e.texture == e.mesh.with_suffix(".jpg") for e in folder.entries)
    assert MeshFolder(omni / "raw_scans" / "toy_car", layout="omniobject3d").names == ["toy_car_001", "toy_car_002"]
    for i, (family, seed) in enumerate([("capsule", 0), ("vase", 1)]):
        mesh = folder.load(i, size=1.5)
        assert mesh.extent.max() == pytest.approx(1.5)
        assert mesh.texture is not None and mesh.texture.shape == (32, 32, 3)
        assert np.abs(mesh.texture.astype(int) - _texture(5 + i)).mean() < 12  # JPEG, so close, not equal
        original = _mesh(family, seed)
        assert _same_surface(mesh, original, 1.5)


def test_plain_folder_of_obj_ply_glb(plain: Path) -> None:
    folder = MeshFolder(plain, layout="files")
    assert folder.names == ["a.obj", "sub/b.ply", "sub/c.glb"]
    assert MeshFolder(plain).names == folder.names  # auto finds no dataset layout, so: files
    a, b, c = (folder.load(i, size=0.3) for i in range(3))
    assert all(m.extent.max() == pytest.approx(0.3) for m in (a, b, c))
    assert a.uv is not None and a.texture is None
    assert b.uv is None and b.texture is None and len(b.faces) == 320
    assert c.texture is not None and np.array_equal(c.texture, _texture(9))
    original = _mesh("superquadric", 2)
    assert _same_surface(c, original, 0.3)


def test_auto_layout_mixes_layouts_and_ignores_extra_meshes_inside_a_model(gso: Path, omni: Path) -> None:
    extra = gso / "model_box" / "meshes" / "collision.obj"
    _write_obj(extra, _mesh("box", 0))
    loose = gso / "loose" / "thing.obj"
    _write_obj(loose, _mesh("cone", 0))
    _age(gso)
    assert MeshFolder(gso).names == ["loose/thing.obj", "model_box", "model_torus"]
    assert MeshFolder(gso, layout="gso").names == ["model_box", "model_torus"]
    assert "model_box/meshes/collision.obj" in MeshFolder(gso, layout="files").names


def test_big_meshes_are_decimated_not_refused(tmp_path: Path) -> None:
    path = tmp_path / "big.ply"
    trimesh.creation.icosphere(subdivisions=6).export(path)  # 81920 faces
    mesh = load_mesh(path, size=2.0, max_faces=3000)
    assert len(mesh.faces) <= 3000 and mesh.extent.max() == pytest.approx(2.0)
    assert np.abs(np.linalg.norm(mesh.vertices, axis=1) - 1.0).max() < 0.05


def test_large_textures_are_capped(tmp_path: Path) -> None:
    m = _mesh("box", 0)
    _write_obj(tmp_path / "m.obj", m, mtl="m.mtl")
    _write_mtl(tmp_path / "m.mtl", "t.png")
    _write_image(tmp_path / "t.png", np.zeros((300, 600, 3), np.uint8) + 90)
    assert load_mesh(tmp_path / "m.obj", 1.0, max_texture=128).texture.shape == (64, 128, 3)


def test_index_is_cached_reused_and_invalidated(gso: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = MeshFolder(gso)
    assert not first.from_cache and first.cache_path == gso / ".cnsv2_index.json"
    mtime = first.cache_path.stat().st_mtime_ns
    real_walk = folder_index.walk

    def no_walk(root: Path) -> None:
        raise AssertionError("rescanned")

    monkeypatch.setattr(folder_index, "walk", no_walk)
    second = MeshFolder(gso)
    assert second.from_cache and second.entries == first.entries
    assert first.cache_path.stat().st_mtime_ns == mtime
    monkeypatch.setattr(folder_index, "walk", real_walk)

    _write_obj(gso / "model_new" / "meshes" / "model.obj", _mesh("sphere", 0))
    third = MeshFolder(gso)
    assert not third.from_cache and "model_new" in third.names


def test_image_folder_formats_and_sizes(tmp_path: Path) -> None:
    root = tmp_path / "textures"
    rgb = _texture(1)
    _write_image(root / "a.png", np.dstack([rgb, np.full(rgb.shape[:2], 128, np.uint8)]))  # RGBA
    _write_image(root / "b.jpg", rgb, quality=95)
    _write_image(root / "nested" / "grey.png", rgb[..., 0])
    cv2.imwrite(str(root / "nested" / "deep16.png"), (rgb[..., ::-1].astype(np.uint16) * 257))
    sky = np.random.default_rng(0).uniform(0, 50, size=(16, 32, 3)).astype(np.float32)
    cv2.imwrite(str(root / "sky.hdr"), sky)
    (root / "readme.md").write_text("no image")
    _age(root)
    folder = ImageFolder(root)
    assert folder.names == ["a.png", "b.jpg", "nested/deep16.png", "nested/grey.png", "sky.hdr"]
    assert np.array_equal(folder.load("a.png"), rgb)  # alpha dropped
    assert np.abs(folder.load("b.jpg").astype(int) - rgb).mean() < 12
    assert np.array_equal(folder.load("nested/deep16.png"), rgb)
    assert np.array_equal(folder.load("nested/grey.png"), np.repeat(rgb[..., :1], 3, axis=2))
    hdr = folder.load("sky.hdr")
    assert hdr.dtype == np.uint8 and hdr.shape == (16, 32, 3) and hdr.std() > 5
    assert folder.load("sky.hdr", size=64).shape == (32, 64, 3)  # the longer side, aspect kept
    assert folder.load(0, size=16).shape == (16, 16, 3)
    assert ImageFolder(root).from_cache


def test_tonemap_is_monotonic_and_exposes_to_mid_grey() -> None:
    ramp = np.geomspace(1e-3, 1e3, 64, dtype=np.float32)[None, :, None].repeat(3, axis=2)
    out = tonemap(ramp)[0, :, 0].astype(int)
    assert np.all(np.diff(out) >= 0) and out[0] < 20 and out[-1] > 240
    flat = tonemap(np.full((4, 4, 3), 123.0, np.float32))
    assert 90 < flat.mean() < 140  # any constant exposure maps to the same mid grey
    assert tonemap(np.full((2, 2, 3), np.nan, np.float32)).dtype == np.uint8


def test_missing_and_empty_folders_name_the_path(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "nope"))):
        MeshFolder(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "nope"))):
        ImageFolder(tmp_path / "nope")
    empty = tmp_path / "empty"
    (empty / "sub").mkdir(parents=True)
    (empty / "sub" / "readme.txt").write_text("x")
    with pytest.raises(
        ValueError, match=rf"no meshes found under {re.escape(str(empty))}.*meshes/model\.obj.*Scan/Scan\.obj"
    ):
        MeshFolder(empty)
    with pytest.raises(
        ValueError, match=rf"no meshes found under {re.escape(str(empty))}: expected Google Scanned Objects"
    ):
        MeshFolder(empty, layout="gso")
    with pytest.raises(ValueError, match=rf"no images found under {re.escape(str(empty))}"):
        ImageFolder(empty)
    with pytest.raises(ValueError, match="unknown mesh layout"):
        MeshFolder(empty, layout="shapenet")  # type: ignore[arg-type]


def test_corrupt_files_name_the_path(tmp_path: Path, gso: Path) -> None:
    bad_obj = tmp_path / "bad" / "broken.obj"
    bad_obj.parent.mkdir()
    bad_obj.write_bytes(b"this is not an obj\n\x00\x01\x02")
    bad_glb = tmp_path / "bad" / "broken.glb"
    bad_glb.write_bytes(b"glTF\x02\x00\x00\x00garbage")
    bad_png = tmp_path / "bad" / "broken.png"
    bad_png.write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    folder = MeshFolder(tmp_path / "bad")
    with pytest.raises(ValueError, match=rf"{re.escape(str(bad_obj))}.*no triangles"):
        folder.load("broken.obj", size=1.0)
    with pytest.raises(ValueError, match=f"cannot read mesh {re.escape(str(bad_glb))}"):
        folder.load("broken.glb", size=1.0)
    with pytest.raises(ValueError, match=f"cannot read image {re.escape(str(bad_png))}"):
        ImageFolder(tmp_path / "bad").load("broken.png")
    texture = gso / "model_box" / "materials" / "textures" / "texture.png"
    texture.write_bytes(b"not a png")
    with pytest.raises(ValueError, match=f"cannot read image {re.escape(str(texture))}"):
        MeshFolder(gso).load("model_box", size=1.0)
    with pytest.raises(FileNotFoundError, match=r"missing\.obj"):
        load_mesh(tmp_path / "missing.obj", 1.0)
    with pytest.raises(ValueError, match="size"):
        load_mesh(gso / "model_torus" / "meshes" / "model.obj", 0.0)
    with pytest.raises(KeyError, match="no mesh named 'nope'"):
        MeshFolder(gso).load("nope", size=1.0)


def test_exr_without_decoder_is_explained(tmp_path: Path) -> None:
    root = tmp_path / "env"
    root.mkdir()
    fake = root / "studio.exr"
    fake.write_bytes(b"\x76\x2f\x31\x01" + bytes(64))  # OpenEXR magic number, no content
    if cv2.haveImageReader(str(fake)):
        pytest.skip("this OpenCV build decodes OpenEXR")
    with pytest.raises(ValueError, match=r"OpenEXR.*\.hdr"):
        ImageFolder(root)
    with pytest.raises(ValueError, match=rf"cannot read image {re.escape(str(fake))}.*OpenEXR"):
        load_image(fake)


# -- textures: the renderer gets what load_image reads, and a missing one is said ------------------------------------
def _modes(seed: int) -> dict[str, tuple[np.ndarray, dict]]:
    """Texture files of every common bit depth and mode: (array to write with cv2 or PIL, how)."""
    rgb = _texture(seed)
    grey = rgb[..., 0]
    grey16 = (grey.astype(np.uint16) * 257 + np.arange(grey.size).reshape(grey.shape) % 200).astype(np.uint16)
    return {
        "grey16.png": (grey16, {"cv2": True}),
        "rgb16.png": (np.dstack([grey16, grey16[::-1], grey16[:, ::-1]]), {"cv2": True}),
        "grey8.png": (grey, {}),
        "grey_alpha.png": (np.dstack([grey, 255 - grey]), {}),
        "rgba.png": (np.dstack([rgb, grey]), {}),
        "palette.png": (rgb, {"palette": True}),
        "rgb.jpg": (rgb, {}),
    }


def _write_texture(path: Path, array: np.ndarray, how: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if how.get("cv2"):
        cv2.imwrite(str(path), array if array.ndim == 2 else array[..., ::-1])
    elif how.get("palette"):
        Image.fromarray(array).convert("P", palette=Image.Palette.ADAPTIVE, colors=16).save(path)
    else:
        Image.fromarray(array).save(path)


@pytest.mark.parametrize("name", list(_modes(0)))
def test_an_obj_texture_reaches_the_mesh_exactly_as_load_image_reads_it(tmp_path: Path, name: str) -> None:
    array, how = _modes(3)[name]
    _write_texture(tmp_path / name, array, how)
    _write_obj(tmp_path / "m.obj", _mesh("box", 0), mtl="m.mtl")
    _write_mtl(tmp_path / "m.mtl", name)
    expected = load_image(tmp_path / name)
    if name == "grey16.png":  # the instance: an all-white texture before
        assert expected.std() > 20 and expected.max() < 255
    mesh = load_mesh(tmp_path / "m.obj", 0.1)
    np.testing.assert_array_equal(mesh.texture, expected)


@pytest.mark.parametrize("mode", ["LA", "P", "I;16"])
def test_a_glb_texture_reaches_the_mesh_exactly_as_load_image_reads_it(tmp_path: Path, mode: str) -> None:
    m = _mesh("superquadric", 2)
    rgb = _texture(5)
    if mode == "I;16":
        image = Image.fromarray(rgb[..., 0].astype(np.uint16) * 257)
    elif mode == "P":
        image = Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE, colors=8)
    else:
        image = Image.fromarray(np.dstack([rgb[..., 1], rgb[..., 2]])).convert("LA")
    image.save(tmp_path / "tex.png")
    visual = trimesh.visual.TextureVisuals(uv=m.uv, image=image)
    trimesh.Trimesh(m.vertices, m.faces, visual=visual, process=False).export(tmp_path / "c.glb")
    mesh = load_mesh(tmp_path / "c.glb", 0.1)
    np.testing.assert_array_equal(mesh.texture, load_image(tmp_path / "tex.png"))


def test_a_missing_or_unreadable_texture_is_named_counted_and_strict_refuses_it(tmp_path: Path) -> None:
    root = tmp_path / "meshes"
    _write_obj(root / "gone.obj", _mesh("box", 0), mtl="gone.mtl")
    _write_mtl(root / "gone.mtl", "textures/missing.png")  # a half-downloaded dataset
    _write_obj(root / "broken.obj", _mesh("cone", 1), mtl="broken.mtl")
    _write_mtl(root / "broken.mtl", "broken.png")
    (root / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    _write_obj(root / "fine.obj", _mesh("cone", 2), mtl="fine.mtl")
    _write_mtl(root / "fine.mtl", "fine.png")
    _write_image(root / "fine.png", _texture(1))
    _age(root)
    folder = MeshFolder(root)
    with pytest.warns(TextureWarning, match=r"gone\.obj.*textures/missing\.png does not exist"):
        assert folder.load("gone.obj", 0.1).texture is None
    with pytest.warns(TextureWarning, match=r"broken\.obj.*broken\.png is unreadable"):
        folder.load("broken.obj", 0.1)
    assert folder.load("fine.obj", 0.1).texture is not None
    assert sorted(folder.texture_problems) == ["broken.obj", "gone.obj"]
    with pytest.raises(ValueError, match=r"missing\.png does not exist"):
        load_mesh(root / "gone.obj", 0.1, strict=True)


def test_a_gltf_naming_a_missing_image_and_vertex_colours_are_said(tmp_path: Path) -> None:
    m = _mesh("superquadric", 2)
    visual = trimesh.visual.TextureVisuals(uv=m.uv, image=Image.fromarray(_texture(9)))
    files = trimesh.exchange.gltf.export_gltf(trimesh.Scene(trimesh.Trimesh(m.vertices, m.faces, visual=visual)))
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    doc = json.loads(files["model.gltf"])
    doc["images"] = [{"uri": "textures/tex%20ture.png", "mimeType": "image/png"}]  # external, as scanners write
    (tmp_path / "c.gltf").write_text(json.dumps(doc))
    _write_image(tmp_path / "textures" / "tex ture.png", _texture(4))
    assert load_mesh(tmp_path / "c.gltf", 0.1).texture is not None
    (tmp_path / "textures" / "tex ture.png").unlink()
    with pytest.warns(TextureWarning, match=r"c\.gltf.*does not exist"):
        load_mesh(tmp_path / "c.gltf", 0.1)
    sphere = trimesh.creation.icosphere(subdivisions=2)
    sphere.visual.vertex_colors = np.random.default_rng(0).integers(0, 256, (len(sphere.vertices), 4), dtype=np.uint8)
    sphere.export(tmp_path / "coloured.ply")
    with pytest.warns(TextureWarning, match="vertex colours are not rendered"):
        load_mesh(tmp_path / "coloured.ply", 0.1)


def _two_part_scene(tmp_path: Path, kind: str) -> tuple[Path, list[np.ndarray], list[tuple[np.ndarray, np.ndarray]]]:
    """A mesh of two textured parts (a GLB of two primitives, or an OBJ with two materials): (path, textures as
    load_image reads them, per part (vertices, uvs))."""
    rng = np.random.default_rng(0)
    parts, textures = [], []
    for k in range(2):
        box = trimesh.creation.box(extents=(1.0, 1.0 + k, 1.0))
        box.apply_translation([3.0 * k, 0.0, 0.0])
        uv = rng.uniform(0.05, 0.95, (len(box.vertices), 2))
        tex = rng.integers(0, 256, (16 + 8 * k, 16, 3), dtype=np.uint8)
        _write_image(tmp_path / f"t{k}.png", tex)
        textures.append(load_image(tmp_path / f"t{k}.png"))
        parts.append((box, uv))
    if kind == "glb":
        meshes = [
            trimesh.Trimesh(b.vertices, b.faces, visual=trimesh.visual.TextureVisuals(uv=uv, image=Image.fromarray(t)))
            for (b, uv), t in zip(parts, textures, strict=True)
        ]
        path = tmp_path / "two.glb"
        trimesh.Scene(meshes).export(path)
    else:
        lines, off = ["mtllib two.mtl"], 0
        for b, uv in parts:
            lines += [f"v {x:.9g} {y:.9g} {z:.9g}" for x, y, z in b.vertices] + [f"vt {u:.9g} {v:.9g}" for u, v in uv]
        for k, (b, _) in enumerate(parts):
            lines.append(f"usemtl m{k}")
            lines += [f"f {a}/{a} {c}/{c} {d}/{d}" for a, c, d in b.faces + 1 + off]
            off += len(b.vertices)
        path = tmp_path / "two.obj"
        path.write_text("\n".join(lines) + "\n")
        (tmp_path / "two.mtl").write_text("newmtl m0\nmap_Kd t0.png\nnewmtl m1\nmap_Kd t1.png\n")
    return path, textures, [(b.vertices, uv) for b, uv in parts]


def _sample(image: np.ndarray, uv: np.ndarray) -> np.ndarray:
    """Nearest texel at (u, v), v = 0 at the bottom row."""
    h, w = image.shape[:2]
    x = np.clip((uv[:, 0] * w).astype(int), 0, w - 1)
    y = np.clip(((1.0 - uv[:, 1]) * h).astype(int), 0, h - 1)
    return image[y, x]


@pytest.mark.parametrize("kind", ["glb", "obj"])
def test_a_mesh_of_several_textures_keeps_every_texel(tmp_path: Path, kind: str) -> None:
    path, textures, parts = _two_part_scene(tmp_path, kind)
    mesh = load_mesh(path, 4.0)
    atlas = mesh.texture
    for tex in textures:  # each texture verbatim somewhere in the atlas (trimesh's own packing resampled them)
        h, w = tex.shape[:2]
        hits = [
            (y, x)
            for y in range(atlas.shape[0] - h + 1)
            for x in range(atlas.shape[1] - w + 1)
            if np.array_equal(atlas[y : y + h, x : x + w], tex)
        ]
        assert hits
    # Every vertex shows the colour its own texture has at its own UV.
    # The parts span x in [-0.5, 3.5], their largest extent 4 = the size asked: loading only centres them.
    for (verts, uv), tex in zip(parts, textures, strict=True):
        for v, want in zip(verts, _sample(tex, uv), strict=True):
            i = int(np.argmin(np.linalg.norm(mesh.vertices + np.array([1.5, 0.0, 0.0]) - v, axis=1)))
            matches = np.flatnonzero(np.linalg.norm(mesh.vertices - mesh.vertices[i], axis=1) < 1e-6)
            assert any(np.array_equal(_sample(atlas, mesh.uv[j : j + 1])[0], want) for j in matches)


def test_several_repeating_textures_fall_back_to_trimesh_and_say_so(tmp_path: Path) -> None:
    path, _, _ = _two_part_scene(tmp_path, "glb")
    scene = trimesh.load(path)
    first = next(iter(scene.geometry.values()))
    first.visual.uv = first.visual.uv * 3.0  # a texture repeated three times: no atlas cell can hold it
    scene.export(tmp_path / "tiled.glb")
    with pytest.warns(TextureWarning, match=r"tiled\.glb.*several textures that cannot share an atlas"):
        assert load_mesh(tmp_path / "tiled.glb", 1.0).texture is not None
