"""USD stage authoring for the Isaac Sim backend: a SceneSpec in, a stage that reads back as the same scene."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pytest

import configs
from assets.mesh import Mesh
from sim.camera import Camera
from sim.geometry import look_at
from sim.scene import LightSpec, MaterialSpec, ObjectSpec, SceneSpec, SkySpec
from sim.scene_sampler import SceneSampler
from sim.usd_camera import define_camera
from sim.usd_stage import build_stage, mesh_layer, texture_file

pytest.importorskip("pxr")
from pxr import Usd, UsdGeom, UsdLux, UsdPhysics, UsdShade

pytestmark = pytest.mark.unit

DEFAULT = Usd.TimeCode.Default()


def _tetra(name: str = "tetra", scale: float = 0.1, uv: bool = True, texture: np.ndarray | None = None) -> Mesh:
    v = scale * np.array([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    f = np.array([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]])
    return Mesh(name, v, f, v[:, :2] / scale if uv else None, texture)


def _image(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    return rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def sampled_scene() -> SceneSpec:
    cfg = configs.load_config("smoke")
    return SceneSampler(cfg.sim.scene, cfg.sim.assets).sample(np.random.default_rng(0), seed=0)


@pytest.fixture(scope="module")
def hand_scene() -> SceneSpec:
    rng = np.random.default_rng(1)
    pose = look_at([0.2, -0.1, 0.3], [0.0, 0.0, 0.0])  # any rigid transform will do
    objects = (
        # A scanned object: its own texture, a white material.
        ObjectSpec(_tetra("scan", texture=_image(rng, 16, 16)), MaterialSpec(), pose),
        ObjectSpec(_tetra("flat", 0.2), MaterialSpec((0.8, 0.1, 0.3, 1.0), specular=0.1, shininess=0.9), np.eye(4)),
        # Textured by the sampler but without UVs: falls back to OmniPBR's projection.
        ObjectSpec(_tetra("no_uv", uv=False), MaterialSpec(texture=_image(rng, 8, 8)), np.eye(4)),
    )
    lights = (
        LightSpec((0.0, 0.0, -2.0), (0.5, 0.4, 0.3), cast_shadow=True),  # straight down, unnormalised
        LightSpec((1.0, -1.0, -0.5), (0.2, 0.2, 0.2)),
    )
    return SceneSpec(
        objects=objects,
        ground=MaterialSpec(texture=_image(rng, 32, 32), tile_size=0.25),
        sky=SkySpec(image=_image(rng, 32, 64)),
        lights=lights,
        ambient=(0.2, 0.25, 0.3),
        ground_half_size=3.0,
    )


def _surface_shader(prim: Usd.Prim) -> UsdShade.Shader:
    material, _ = UsdShade.MaterialBindingAPI(prim).ComputeBoundMaterial()
    assert material, f"{prim.GetPath()} has no bound material"
    shader, _, _ = material.ComputeSurfaceSource("mdl")
    assert shader, f"{material.GetPath()} has no mdl surface"
    assert shader.GetImplementationSource() == "sourceAsset"
    assert shader.GetSourceAsset("mdl").path == "OmniPBR.mdl"
    assert shader.GetSourceAssetSubIdentifier("mdl") == "OmniPBR"
    return shader


def _read_png(path: str) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(path, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def _check_material(shader: UsdShade.Shader, m: MaterialSpec) -> None:
    tex = shader.GetInput("diffuse_texture")
    if m.texture is None:
        assert not tex
        np.testing.assert_allclose(shader.GetInput("diffuse_color_constant").Get(), m.rgba[:3], atol=1e-7)
    else:
        path = tex.Get().path
        assert Path(path).is_file()
        np.testing.assert_array_equal(_read_png(path), m.texture)
        np.testing.assert_allclose(shader.GetInput("diffuse_tint").Get(), m.rgba[:3], atol=1e-7)


def _check_stage(stage: Usd.Stage, scene: SceneSpec) -> None:
    assert UsdGeom.GetStageUpAxis(stage) == UsdGeom.Tokens.z
    assert UsdGeom.GetStageMetersPerUnit(stage) == 1.0
    assert stage.GetDefaultPrim().GetPath() == "/World"

    objects = stage.GetPrimAtPath("/World/Objects").GetChildren()
    assert [p.GetName() for p in objects] == [f"obj_{i:03d}" for i in range(len(scene.objects))]
    for prim, obj in zip(objects, scene.objects, strict=True):
        assert UsdGeom.Xformable(prim).GetXformOpOrderAttr().Get() == ["xformOp:transform"]
        world = np.array(UsdGeom.Xformable(prim).ComputeLocalToWorldTransform(DEFAULT)).T
        np.testing.assert_allclose(world, obj.pose, atol=1e-9)
        assert prim.HasAPI(UsdPhysics.RigidBodyAPI) and prim.HasAPI(UsdPhysics.MassAPI)
        mesh = UsdGeom.Mesh(prim.GetChild("Mesh"))
        assert mesh, f"{prim.GetPath()} does not reference a mesh"
        np.testing.assert_allclose(np.array(mesh.GetPointsAttr().Get()), obj.mesh.vertices, atol=1e-7)
        np.testing.assert_array_equal(np.array(mesh.GetFaceVertexIndicesAttr().Get()), obj.mesh.faces.ravel())
        assert set(mesh.GetFaceVertexCountsAttr().Get()) == {3}
        assert mesh.GetSubdivisionSchemeAttr().Get() == UsdGeom.Tokens.none
        st = UsdGeom.PrimvarsAPI(mesh).GetPrimvar("st")
        if obj.mesh.uv is None:
            assert not st
        else:
            np.testing.assert_allclose(np.array(st.Get()), obj.mesh.uv)
        assert mesh.GetPrim().HasAPI(UsdPhysics.CollisionAPI)
        assert UsdPhysics.MeshCollisionAPI(mesh.GetPrim()).GetApproximationAttr().Get() == "convexHull"
        material = obj.material
        if material.texture is None and obj.mesh.texture is not None:
            material = MaterialSpec(material.rgba, obj.mesh.texture)
        _check_material(_surface_shader(mesh.GetPrim()), material)

    lights = [p for p in stage.GetPrimAtPath("/World/Lights").GetChildren() if p.IsA(UsdLux.DistantLight)]
    assert len(lights) == len(scene.lights)
    for prim, spec in zip(lights, scene.lights, strict=True):
        M = UsdGeom.Xformable(prim).ComputeLocalToWorldTransform(DEFAULT)
        d = np.asarray(spec.direction) / np.linalg.norm(spec.direction)
        np.testing.assert_allclose(np.array(M.TransformDir((0.0, 0.0, -1.0))), d, atol=1e-9)
        light = UsdLux.DistantLight(prim)
        assert light.GetIntensityAttr().Get() > 0
        assert prim.GetAttribute("inputs:shadow:enable").Get() == spec.cast_shadow

    domes = [p for p in stage.Traverse() if p.IsA(UsdLux.DomeLight) or p.IsA(UsdLux.DomeLight_1)]
    assert len(domes) == 1
    dome = UsdLux.DomeLight_1(domes[0])
    assert dome, "the dome must be a DomeLight_1, whose poleAxis the renderer reads"
    assert dome.GetPoleAxisAttr().HasAuthoredValue()  # never the fallback "scene"
    has_image = scene.sky is not None and scene.sky.image is not None
    assert dome.GetTextureFileAttr().HasAuthoredValue() == has_image
    if has_image:
        assert Path(dome.GetTextureFileAttr().Get().path).is_file()
        assert dome.GetTextureFormatAttr().Get() == UsdLux.Tokens.latlong
    assert dome.GetIntensityAttr().Get() > 0

    ground = stage.GetPrimAtPath("/World/Ground")
    assert ground.IsValid() == (scene.ground is not None)
    if scene.ground is not None:
        assert ground.IsA(UsdGeom.Mesh) and ground.HasAPI(UsdPhysics.CollisionAPI)
        assert not ground.HasAPI(UsdPhysics.RigidBodyAPI)
        points = np.array(UsdGeom.Mesh(ground).GetPointsAttr().Get())
        np.testing.assert_allclose(np.abs(points[:, :2]), scene.ground_half_size)
        tile = scene.ground.tile_size or 1.0
        st = np.array(UsdGeom.PrimvarsAPI(ground).GetPrimvar("st").Get())
        np.testing.assert_allclose(st, points[:, :2] / tile, rtol=1e-6)
        _check_material(_surface_shader(ground), scene.ground)


@pytest.mark.parametrize("which", ["sampled_scene", "hand_scene"])
def test_stage_reads_back_as_the_scene(which: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    scene = request.getfixturevalue(which)
    stage = build_stage(scene, tmp_path / "cache")
    _check_stage(stage, scene)
    # A valid stage survives a round trip through a .usda file, references and all.
    out = tmp_path / "scene.usda"
    assert stage.Export(str(out))
    reopened = Usd.Stage.Open(str(out))
    assert reopened is not None
    _check_stage(reopened, scene)


def test_scene_without_ground_and_sky(hand_scene: SceneSpec, tmp_path: Path) -> None:
    scene = SceneSpec(objects=hand_scene.objects[:1], ground=None, sky=None)
    stage = build_stage(scene, tmp_path)
    _check_stage(stage, scene)


def test_rebuilding_replaces_the_scene_and_keeps_other_prims(
    sampled_scene: SceneSpec, hand_scene: SceneSpec, tmp_path: Path
) -> None:
    stage = Usd.Stage.CreateInMemory()
    cam = Camera.canonical(64)
    define_camera(stage, "/World/Camera", cam.K, 64, 64, look_at([0.0, -1.0, 1.0], [0.0, 0.0, 0.0]))
    assert build_stage(sampled_scene, tmp_path, stage) is stage
    build_stage(hand_scene, tmp_path, stage)
    _check_stage(stage, hand_scene)
    assert stage.GetPrimAtPath("/World/Camera").IsA(UsdGeom.Camera)


# The renderer's side of DomeLight_1, written out here from the spec rather than imported from the code under test:
# OpenEXR latlong (pole +Y, longitude 0 on +Z, +pi/2 on +X; column 0 is longitude +pi), then the pole offset of
# OpenUSD usdImaging/domeLight_1Adapter.cpp (_GetDomeOffset: +90 degrees about X for poleAxis "Z", or for "scene"
# on a Z-up stage; none for "Y"), then the prim's world transform.
_POLE_OFFSET = {"Y": np.eye(3), "Z": np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])}


def _texel_directions(dome: UsdLux.DomeLight_1, rows: np.ndarray, cols: np.ndarray, h: int, w: int) -> np.ndarray:
    pole = dome.GetPoleAxisAttr().Get()  # _check_stage makes sure it is authored, never "scene"
    lat = np.pi / 2 - np.pi * (np.asarray(rows) + 0.5) / h
    lon = np.pi - 2 * np.pi * (np.asarray(cols) + 0.5) / w
    local = np.stack([np.cos(lat) * np.sin(lon), np.sin(lat), np.cos(lat) * np.cos(lon)], axis=-1)
    M = np.array(dome.ComputeLocalToWorldTransform(DEFAULT)).T[:3, :3]
    return local @ (M @ _POLE_OFFSET[pole]).T


def test_sky_zenith_is_world_up_under_either_pole_reading(hand_scene: SceneSpec, tmp_path: Path) -> None:
    stage = build_stage(hand_scene, tmp_path)  # held: a prim does not keep its stage alive
    dome = UsdLux.DomeLight_1(stage.GetPrimAtPath("/World/Lights/dome"))
    assert dome.GetPoleAxisAttr().Get() == "Z"
    h, w = hand_scene.sky.image.shape[:2]
    top = _texel_directions(dome, np.zeros(w), np.arange(w), h, w)  # the texture's first row rings the zenith
    assert (top[:, 2] > np.cos(np.pi / h) - 1e-9).all()
    # A renderer that ignored poleAxis and kept a Z-pole dome would take local +Z as the zenith: still world +Z.
    M = np.array(dome.ComputeLocalToWorldTransform(DEFAULT)).T[:3, :3]
    np.testing.assert_allclose(M @ [0.0, 0.0, 1.0], [0.0, 0.0, 1.0], atol=1e-12)


def test_known_sky_longitudes_land_on_known_world_directions(tmp_path: Path) -> None:
    # A grey sky with one red texel on the horizon towards world +Y and a green one towards world +X.
    h, w = 32, 64
    sky = np.full((h, w, 3), 128, np.uint8)
    row = h // 2  # the texel row just below the horizon
    col_y = w * 3 // 4  # our azimuth at column c is 2 pi (c + 0.5) / w - pi: +Y is at c + 0.5 = 3w/4
    col_x = w // 2  # +X is at c + 0.5 = w/2
    sky[row, col_y] = (255, 0, 0)
    sky[row, col_x] = (0, 255, 0)
    stage = build_stage(SceneSpec(sky=SkySpec(image=sky)), tmp_path)
    dome = UsdLux.DomeLight_1(stage.GetPrimAtPath("/World/Lights/dome"))
    tex = _read_png(dome.GetTextureFileAttr().Get().path)
    half_texel = np.pi / w
    for colour, world in (((255, 0, 0), [0.0, 1.0, 0.0]), ((0, 255, 0), [1.0, 0.0, 0.0])):
        (r,), (c,) = np.nonzero((tex == colour).all(axis=2))
        d = _texel_directions(dome, np.array([r]), np.array([c]), h, w)[0]
        assert np.degrees(np.arccos(np.clip(d @ world, -1, 1))) < np.degrees(2 * half_texel), (colour, d)


def test_sky_texture_is_oriented_like_mujocos_sky(hand_scene: SceneSpec, tmp_path: Path) -> None:
    # MuJoCo's sky: column c is world azimuth atan2(y, x) = 2 pi (c + 0.5) / W - pi, row 0 the zenith.
    stage = build_stage(hand_scene, tmp_path)
    dome = UsdLux.DomeLight_1(stage.GetPrimAtPath("/World/Lights/dome"))
    sky = hand_scene.sky.image
    tex = _read_png(dome.GetTextureFileAttr().Get().path)
    h, w = sky.shape[:2]
    rng = np.random.default_rng(0)
    rows, cols = rng.integers(0, h, 20), rng.integers(0, w, 20)
    lat = np.pi / 2 - np.pi * (rows + 0.5) / h
    az = 2 * np.pi * (cols + 0.5) / w - np.pi
    ours = np.stack([np.cos(lat) * np.cos(az), np.cos(lat) * np.sin(az), np.sin(lat)], axis=1)
    cols_tex = w - 1 - cols
    np.testing.assert_allclose(_texel_directions(dome, rows, cols_tex, h, w), ours, atol=1e-12)
    np.testing.assert_array_equal(tex[rows, cols_tex], sky[rows, cols])


def test_mesh_layer_is_cached_by_content(tmp_path: Path) -> None:
    mesh = _tetra()
    path = mesh_layer(mesh, tmp_path)
    assert path.parent == tmp_path and path.suffix == ".usdc"
    os.utime(path, ns=(10**9, 10**9))
    assert mesh_layer(_tetra("same data, other name"), tmp_path) == path
    assert path.stat().st_mtime_ns == 10**9  # reused, not rewritten
    assert mesh_layer(_tetra(scale=0.2), tmp_path) != path
    assert mesh_layer(_tetra(uv=False), tmp_path) != path
    layer = Usd.Stage.Open(str(path))
    assert layer.GetDefaultPrim().GetPath() == "/Asset"
    assert len(UsdGeom.Mesh(layer.GetPrimAtPath("/Asset/Mesh")).GetPointsAttr().Get()) == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in tmp_path.glob("mesh_*.usdc"))


def test_texture_file_is_cached_by_content(tmp_path: Path) -> None:
    img = _image(np.random.default_rng(0), 12, 20)
    path = texture_file(img, tmp_path / "tex")
    np.testing.assert_array_equal(_read_png(str(path)), img)
    os.utime(path, ns=(10**9, 10**9))
    assert texture_file(img.copy(), tmp_path / "tex") == path
    assert path.stat().st_mtime_ns == 10**9
    other = img.copy()
    other[0, 0, 0] ^= 1
    assert texture_file(other, tmp_path / "tex") != path
    assert texture_file(img.reshape(20, 12, 3), tmp_path / "tex") != path  # same bytes, other shape
    assert all(p.suffix == ".png" and not p.name.startswith(".") for p in (tmp_path / "tex").iterdir())


def test_bad_inputs_raise(hand_scene: SceneSpec, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="image: expected RGB uint8"):
        texture_file(np.zeros((4, 4, 3), np.float32), tmp_path)
    with pytest.raises(ValueError, match="image: expected RGB uint8"):
        texture_file(np.zeros((4, 4), np.uint8), tmp_path)
    with pytest.raises(ValueError, match="mesh: expected"):
        mesh_layer("not a mesh", tmp_path)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="scene: expected a SceneSpec"):
        build_stage({"objects": []}, tmp_path)  # type: ignore[arg-type]
    dark = SceneSpec(lights=(LightSpec((0.0, 0.0, 0.0), (1.0, 1.0, 1.0)),))
    with pytest.raises(ValueError, match=r"lights\[0\].direction: must be non-zero"):
        build_stage(dark, tmp_path)
    bad_pose = np.eye(4)
    bad_pose[3, 0] = 1.0
    crooked = SceneSpec(objects=(ObjectSpec(_tetra(), MaterialSpec(), bad_pose),))
    with pytest.raises(ValueError, match=r"objects\[0\].pose: last row"):
        build_stage(crooked, tmp_path)
