"""Author a USD stage from a SceneSpec: the scene half of the Isaac Sim backend, testable with `usd-core` on CPU.

Layout (metres, z up, default prim /World):

    /World/Ground            quad Mesh, half-size ground_half_size, UVs tiled by the material's tile size;
                             collision only (a static collider)
    /World/Objects/obj_000   Xform with one xformOp:transform = the object's pose wTo, referencing the mesh's
                             cached .usdc layer (child `Mesh`); rigid body, convex-hull collision, mass
    /World/Looks/mat_000     OmniPBR MDL material of obj_000 (and /World/Looks/ground for the ground)
    /World/Lights/light_000  UsdLux.DistantLight per LightSpec; /World/Lights/dome (DomeLight_1, pole on Z)
                             for ambient light and sky

Meshes and textures are written once to `cache_dir` under content-hash names (atomic, reused), which replaces
Omniverse's asset converter for our in-memory meshes. The mapping mirrors `sim.mujoco_backend` where USD allows;
where it cannot (Phong vs PBR, unitless vs photometric lights), the choices are documented next to the code.
`pxr` and cv2 are imported inside the functions, so `import sim` stays light.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from assets.mesh import Mesh
from file_io import atomic_path, write_bytes
from sim.scene import MaterialSpec, ObjectSpec, SceneSpec, SkySpec
from sim.validate import as_array, as_pose

if TYPE_CHECKING:
    from pxr import Usd, UsdShade

# Bump when the layout of a cached mesh layer changes, so that stale cache files are not reused.
MESH_LAYER_VERSION = "cnsv2-mesh-1"

# Light intensities. MuJoCo's Phong model is unitless: pixel = albedo * (ambient + diffuse * cos). A Lambertian
# surface under a uniform dome of radiance L and a distant light of irradiance E gives albedo * (L + E cos / pi),
# so E must be pi times L for the same ratio of direct to ambient light. DOME_INTENSITY is the renderer intensity
# of ambient 1.0 (1000 is Kit's usual dome default); the absolute level still depends on the renderer's exposure
# and must be calibrated on an RTX machine against MuJoCo images.
DOME_INTENSITY = 1000.0
DISTANT_INTENSITY = np.pi * DOME_INTENSITY

# The dome: one convention, authored explicitly instead of left to a renderer's default.
# UsdLux.DomeLight (the classic schema) has its latlong pole on local +Y (OpenEXR), but Omniverse RTX keeps its older
# Z-pole dome for it unless a light says otherwise, so a transform composed for one reading is 90 degrees off in the
# other (the Y-pole transform authored before issue 19 would put the zenith along world +X in RTX).
# UsdLux.DomeLight_1 (USD 23.11+, so in Kit 107's USD 24.05) says otherwise: with poleAxis "Z" the renderer first
# turns the dome +90 degrees about local X (OpenUSD usdImaging/domeLight_1Adapter.cpp, _GetDomeOffset), taking the
# OpenEXR frame (pole +Y, longitude 0 on +Z, longitude +pi/2 on +X) to pole +Z, longitude 0 on -Y, longitude +pi/2
# on +X, and applies the prim's own transform after that. The prim transform below only turns about Z, so the
# zenith is world +Z under both readings (the spec's, and a renderer that ignores poleAxis and keeps a Z pole);
# only the longitude could then differ, and `python -m sim.isaac_check` measures it on RTX.
#
# Longitude: our equirect skies (and MuJoCo's sky) put world azimuth atan2(y, x) = -pi at column 0, increasing to
# the right, with +X at the centre column; OpenEXR's longitude decreases to the right (+pi at column 0). Flipping
# the image left-right makes texture longitude equal our azimuth, and R_z(+90 degrees) then takes the pole-aligned
# frame's longitude 0 (-Y) to world +X and longitude +pi/2 (+X) to world +Y.
DOME_POLE_AXIS = "Z"
DOME_TO_WORLD = np.array(
    [
        [0.0, -1.0, 0.0, 0.0],
        [1.0, 0.0, 0.0, 0.0],
        [0.0, 0.0, 1.0, 0.0],
        [0.0, 0.0, 0.0, 1.0],
    ]
)


def _digest(*chunks: bytes) -> str:
    h = hashlib.sha256()
    for chunk in chunks:
        # Length-prefixed, so that different splits of the same bytes cannot collide.
        h.update(len(chunk).to_bytes(8, "little"))
        h.update(chunk)
    return h.hexdigest()[:32]


def mesh_layer(mesh: Mesh, cache_dir: Path) -> Path:
    """Write `mesh` as a standalone .usdc layer named by its content hash (atomic, reused); return its path.

    The layer's default prim /Asset is an Xform with one child `Mesh` (points, triangle faces, and the UV
    primvar `st` when the mesh has UVs); referencing it from an Xform gives that Xform a `Mesh` child.
    """
    from pxr import Gf, Sdf, Usd, UsdGeom, Vt

    if not isinstance(mesh, Mesh):
        raise ValueError(f"mesh: expected an assets.mesh.Mesh, got {type(mesh).__name__}")
    uv = mesh.uv
    key = _digest(
        MESH_LAYER_VERSION.encode(),
        mesh.vertices.tobytes(),
        mesh.faces.tobytes(),
        b"no-uv" if uv is None else uv.tobytes(),
    )
    cache_dir = Path(cache_dir)
    path = cache_dir / f"mesh_{key}.usdc"
    if path.exists():
        return path
    cache_dir.mkdir(parents=True, exist_ok=True)

    stage = Usd.Stage.CreateInMemory()
    UsdGeom.SetStageUpAxis(stage, UsdGeom.Tokens.z)
    UsdGeom.SetStageMetersPerUnit(stage, 1.0)
    root = UsdGeom.Xform.Define(stage, "/Asset")
    stage.SetDefaultPrim(root.GetPrim())
    geom = UsdGeom.Mesh.Define(stage, "/Asset/Mesh")
    points = Vt.Vec3fArray.FromNumpy(mesh.vertices.astype(np.float32))
    geom.CreatePointsAttr(points)
    geom.CreateFaceVertexCountsAttr(Vt.IntArray.FromNumpy(np.full(len(mesh.faces), 3, dtype=np.int32)))
    geom.CreateFaceVertexIndicesAttr(Vt.IntArray.FromNumpy(mesh.faces.ravel().astype(np.int32)))
    # Faces are counter-clockwise seen from outside: USD's right-handed orientation. Without "none" the
    # default Catmull-Clark scheme would smooth our triangles into a different surface.
    geom.CreateOrientationAttr(UsdGeom.Tokens.rightHanded)
    geom.CreateSubdivisionSchemeAttr(UsdGeom.Tokens.none)
    lo, hi = mesh.vertices.min(axis=0), mesh.vertices.max(axis=0)
    geom.CreateExtentAttr(Vt.Vec3fArray([Gf.Vec3f(*lo.tolist()), Gf.Vec3f(*hi.tolist())]))
    if uv is not None:
        # Mesh.uv and USD's st both count v from the bottom row of the texture, so no flip (MuJoCo needs one).
        st = UsdGeom.PrimvarsAPI(geom).CreatePrimvar("st", Sdf.ValueTypeNames.TexCoord2fArray, UsdGeom.Tokens.vertex)
        st.Set(Vt.Vec2fArray.FromNumpy(uv.astype(np.float32)))

    with atomic_path(path, suffix=f".tmp{path.suffix}") as tmp:  # USD picks the file format from the suffix
        if not stage.GetRootLayer().Export(str(tmp)):
            raise OSError(f"could not write mesh layer {tmp}")
    return path


def texture_file(image: np.ndarray, cache_dir: Path) -> Path:
    """Write an RGB uint8 (H, W, 3) image as a PNG named by its content hash (atomic, reused); return its path."""
    import cv2

    img = np.asarray(image)
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3 or img.shape[0] == 0 or img.shape[1] == 0:
        raise ValueError(f"image: expected RGB uint8 (H, W, 3), got {img.dtype} {img.shape}")
    img = np.ascontiguousarray(img)
    key = _digest(str(img.shape).encode(), img.tobytes())
    cache_dir = Path(cache_dir)
    path = cache_dir / f"tex_{key}.png"
    if path.exists():
        return path
    cache_dir.mkdir(parents=True, exist_ok=True)
    ok, data = cv2.imencode(".png", cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    if not ok:
        raise OSError(f"could not encode texture {path.name}")
    return write_bytes(path, data.tobytes())


def _rgb(c: object, name: str) -> np.ndarray:
    v = as_array(c, (None,), name)
    if len(v) not in (3, 4):
        raise ValueError(f"{name}: expected an RGB or RGBA colour, got {len(v)} values")
    return np.clip(v[:3], 0.0, None)


def _colour_and_intensity(c: np.ndarray) -> tuple[tuple[float, float, float], float]:
    # UsdLux colours are meant to be normalised; the brightness goes into the intensity.
    peak = float(c.max())
    if peak <= 0.0:
        return (1.0, 1.0, 1.0), 0.0
    return tuple(float(x) for x in c / peak), peak


def _define_material(stage: Usd.Stage, path: str, m: MaterialSpec, cache_dir: Path, has_uv: bool) -> UsdShade.Material:
    """Define an OmniPBR material for `m` at `path`; return the UsdShade.Material."""
    from pxr import Gf, Sdf, UsdShade

    material = UsdShade.Material.Define(stage, path)
    shader = UsdShade.Shader.Define(stage, f"{path}/Shader")
    shader.SetSourceAsset(Sdf.AssetPath("OmniPBR.mdl"), "mdl")
    shader.SetSourceAssetSubIdentifier("OmniPBR", "mdl")
    out = shader.CreateOutput("out", Sdf.ValueTypeNames.Token)
    material.CreateSurfaceOutput("mdl").ConnectToSource(out)
    material.CreateDisplacementOutput("mdl").ConnectToSource(out)
    material.CreateVolumeOutput("mdl").ConnectToSource(out)

    # OmniPBR inputs (docs.omniverse.nvidia.com/materials-and-rendering/latest/templates/OmniPBR.html and
    # .../parameters/OmniPBR_UVs.html): diffuse_color_constant, diffuse_texture, diffuse_tint,
    # reflection_roughness_constant, metallic_constant, specular_level, texture_scale, project_uvw.
    colour = Gf.Vec3f(*_rgb(m.rgba, "rgba").tolist())
    shader.CreateInput("diffuse_color_constant", Sdf.ValueTypeNames.Color3f).Set(colour)
    if m.texture is not None:
        tex = texture_file(m.texture, cache_dir)
        tex_input = shader.CreateInput("diffuse_texture", Sdf.ValueTypeNames.Asset)
        tex_input.Set(Sdf.AssetPath(str(tex.resolve())))
        tex_input.GetAttr().SetColorSpace("sRGB")
        # The texture replaces diffuse_color_constant in OmniPBR; MaterialSpec multiplies them, which is the tint.
        shader.CreateInput("diffuse_tint", Sdf.ValueTypeNames.Color3f).Set(colour)
        # Tiling is baked into the ground's UVs (metres / tile size), so the material keeps scale 1 and the same
        # material works for any mesh; OmniPBR's docs do not say whether texture_scale multiplies or divides UVs.
        shader.CreateInput("texture_scale", Sdf.ValueTypeNames.Float2).Set(Gf.Vec2f(1.0, 1.0))
        if not has_uv:
            # A mesh without UVs would sample one texel; OmniPBR's object-space projection spreads the texture.
            shader.CreateInput("project_uvw", Sdf.ValueTypeNames.Bool).Set(True)
            shader.CreateInput("world_or_object", Sdf.ValueTypeNames.Bool).Set(False)
    # Phong to PBR, approximately: MuJoCo's shininess (0-1, the Phong exponent / 128) is glossiness, so roughness
    # is its complement; MuJoCo's specular weight maps onto OmniPBR's specular_level (both 0-1, default 0.5).
    shader.CreateInput("reflection_roughness_constant", Sdf.ValueTypeNames.Float).Set(
        float(np.clip(1.0 - m.shininess, 0.0, 1.0))
    )
    shader.CreateInput("metallic_constant", Sdf.ValueTypeNames.Float).Set(0.0)
    shader.CreateInput("specular_level", Sdf.ValueTypeNames.Float).Set(float(np.clip(m.specular, 0.0, 1.0)))
    return material


def _bind(prim: Usd.Prim, material: UsdShade.Material) -> None:
    from pxr import UsdShade

    UsdShade.MaterialBindingAPI.Apply(prim).Bind(material)


def _define_ground(stage: Usd.Stage, scene: SceneSpec, cache_dir: Path) -> None:
    from pxr import Gf, Sdf, UsdGeom, UsdPhysics, Vt

    ground = scene.ground
    h = float(scene.ground_half_size)
    if not h > 0:
        raise ValueError(f"ground_half_size: must be > 0, got {h}")
    # MuJoCo repeats a uniform (texuniform) ground texture every tile_size metres, and every metre when the
    # material has no tile size (texrepeat 1); st = xy / tile reproduces that from the world origin.
    tile = 1.0 if ground.tile_size is None else float(ground.tile_size)
    if not tile > 0:
        raise ValueError(f"ground.tile_size: must be > 0, got {tile}")
    corners = np.array([[-h, -h, 0.0], [h, -h, 0.0], [h, h, 0.0], [-h, h, 0.0]])
    mesh = UsdGeom.Mesh.Define(stage, "/World/Ground")
    mesh.CreatePointsAttr(Vt.Vec3fArray.FromNumpy(corners.astype(np.float32)))
    mesh.CreateFaceVertexCountsAttr([4])
    mesh.CreateFaceVertexIndicesAttr([0, 1, 2, 3])  # counter-clockwise from above: the normal is +z
    mesh.CreateNormalsAttr(Vt.Vec3fArray([Gf.Vec3f(0.0, 0.0, 1.0)] * 4))
    mesh.SetNormalsInterpolation(UsdGeom.Tokens.vertex)
    mesh.CreateOrientationAttr(UsdGeom.Tokens.rightHanded)
    mesh.CreateSubdivisionSchemeAttr(UsdGeom.Tokens.none)
    mesh.CreateExtentAttr(Vt.Vec3fArray([Gf.Vec3f(-h, -h, 0.0), Gf.Vec3f(h, h, 0.0)]))
    st = UsdGeom.PrimvarsAPI(mesh).CreatePrimvar("st", Sdf.ValueTypeNames.TexCoord2fArray, UsdGeom.Tokens.vertex)
    st.Set(Vt.Vec2fArray.FromNumpy((corners[:, :2] / tile).astype(np.float32)))
    # A static collider: collision without a rigid body.
    UsdPhysics.CollisionAPI.Apply(mesh.GetPrim())
    material = _define_material(stage, "/World/Looks/ground", ground, cache_dir, has_uv=True)
    _bind(mesh.GetPrim(), material)


def _define_object(stage: Usd.Stage, i: int, obj: ObjectSpec, cache_dir: Path) -> None:
    from pxr import Sdf, UsdGeom, UsdPhysics

    from sim.usd_camera import gf_matrix

    pose = as_pose(obj.pose, f"objects[{i}].pose")
    mesh = obj.mesh
    path = f"/World/Objects/obj_{i:03d}"
    xform = UsdGeom.Xform.Define(stage, path)
    xform.ClearXformOpOrder()
    xform.AddTransformOp(UsdGeom.XformOp.PrecisionDouble).Set(gf_matrix(pose))
    prim = xform.GetPrim()
    prim.GetReferences().AddReference(str(mesh_layer(mesh, cache_dir).resolve()))

    body = UsdPhysics.RigidBodyAPI.Apply(prim)
    # SceneSpec poses are final resting poses, already settled by our physics; kinematic bodies keep them when a
    # playing timeline would otherwise let PhysX settle them again, slightly differently.
    body.CreateKinematicEnabledAttr(True)
    UsdPhysics.MassAPI.Apply(prim).CreateMassAttr(1.0)  # as the MuJoCo backend (mass only matters to physics)
    geom = stage.OverridePrim(Sdf.Path(path).AppendChild("Mesh"))
    UsdPhysics.CollisionAPI.Apply(geom)
    UsdPhysics.MeshCollisionAPI.Apply(geom).CreateApproximationAttr(UsdPhysics.Tokens.convexHull)

    material = obj.material
    if mesh.texture is not None and material.texture is None:
        # A scanned object keeps its own texture, as in the MuJoCo backend.
        material = MaterialSpec(material.rgba, mesh.texture, None, material.specular, material.shininess)
    look = _define_material(stage, f"/World/Looks/mat_{i:03d}", material, cache_dir, has_uv=mesh.uv is not None)
    _bind(prim, look)


def _light_rotation(direction: np.ndarray) -> np.ndarray:
    # A distant light shines along its local -Z; build a right-handed frame whose -Z is `direction`.
    z = -direction
    helper = np.array([0.0, 0.0, 1.0]) if abs(z[2]) < 0.9 else np.array([1.0, 0.0, 0.0])
    x = np.cross(helper, z)
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    return np.stack([x, y, z], axis=1)


def _define_lights(stage: Usd.Stage, scene: SceneSpec) -> None:
    from pxr import UsdGeom, UsdLux

    from sim.usd_camera import gf_matrix

    UsdGeom.Xform.Define(stage, "/World/Lights")
    for i, spec in enumerate(scene.lights):
        d = as_array(spec.direction, (3,), f"lights[{i}].direction")
        n = float(np.linalg.norm(d))
        if not n > 0:
            raise ValueError(f"lights[{i}].direction: must be non-zero, got {d.tolist()}")
        light = UsdLux.DistantLight.Define(stage, f"/World/Lights/light_{i:03d}")
        T = np.eye(4)
        T[:3, :3] = _light_rotation(d / n)
        light.ClearXformOpOrder()
        light.AddTransformOp(UsdGeom.XformOp.PrecisionDouble).Set(gf_matrix(T))
        colour, level = _colour_and_intensity(_rgb(spec.diffuse, f"lights[{i}].diffuse"))
        light.CreateColorAttr(colour)
        light.CreateIntensityAttr(DISTANT_INTENSITY * level)
        # MuJoCo gives each light its own specular colour; UsdLux has one colour and a specular multiplier.
        spec_level = float(_rgb(spec.specular, f"lights[{i}].specular").max())
        light.CreateSpecularAttr(spec_level / level if level > 0 else 0.0)
        UsdLux.ShadowAPI.Apply(light.GetPrim()).CreateShadowEnableAttr(bool(spec.cast_shadow))


def _define_dome(stage: Usd.Stage, scene: SceneSpec, cache_dir: Path) -> None:
    """Ambient light and background in one DomeLight (MuJoCo keeps them apart: headlight ambient and skybox)."""
    from pxr import UsdGeom, UsdLux

    from sim.usd_camera import gf_matrix

    ambient = _rgb(scene.ambient, "ambient")
    dome = UsdLux.DomeLight_1.Define(stage, "/World/Lights/dome")
    dome.CreatePoleAxisAttr(DOME_POLE_AXIS)  # explicit: see DOME_TO_WORLD
    dome.ClearXformOpOrder()
    dome.AddTransformOp(UsdGeom.XformOp.PrecisionDouble).Set(gf_matrix(DOME_TO_WORLD))
    sky: SkySpec | None = scene.sky
    colour, level = _colour_and_intensity(ambient)
    scale = 1.0
    if sky is not None and sky.image is not None:
        img = np.asarray(sky.image)
        path = texture_file(np.ascontiguousarray(img[:, ::-1]), cache_dir)  # mirrored: see DOME_TO_WORLD
        dome.CreateTextureFileAttr(str(path.resolve()))
        dome.CreateTextureFormatAttr(UsdLux.Tokens.latlong)
        # The texture multiplies the dome's radiance; dividing by its mean linear value (sRGB ~ gamma 2.2) keeps
        # the mean lighting level at `ambient`, as without an image.
        scale = 1.0 / max(float(np.mean((img.astype(np.float64) / 255.0) ** 2.2)), 1e-3)
    elif sky is not None:
        # A uniform dome lights like MuJoCo's ambient term; tinting it with the sky's mean colour keeps the
        # background's hue (MuJoCo draws a zenith-to-horizon gradient there, which lights nothing).
        sky_mean = 0.5 * (_rgb(sky.zenith, "sky.zenith") + _rgb(sky.horizon, "sky.horizon"))
        colour, _ = _colour_and_intensity(ambient * sky_mean)
    dome.CreateColorAttr(colour)
    dome.CreateIntensityAttr(DOME_INTENSITY * level * scale)


def build_stage(scene: SceneSpec, cache_dir: Path, stage: Usd.Stage | None = None) -> Usd.Stage:
    """Author `scene` into `stage` (a new in-memory stage when None) under /World and return the stage.

    An existing stage keeps its other prims (a camera, say); the scene prims of a previous call are replaced.
    Meshes and textures are written to `cache_dir` (created if needed) and referenced by absolute path.
    """
    from pxr import Usd, UsdGeom

    if not isinstance(scene, SceneSpec):
        raise ValueError(f"scene: expected a SceneSpec, got {type(scene).__name__}")
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    if stage is None:
        stage = Usd.Stage.CreateInMemory()
    UsdGeom.SetStageUpAxis(stage, UsdGeom.Tokens.z)
    UsdGeom.SetStageMetersPerUnit(stage, 1.0)
    world = UsdGeom.Xform.Define(stage, "/World")
    stage.SetDefaultPrim(world.GetPrim())
    for name in ("Ground", "Objects", "Looks", "Lights"):
        stage.RemovePrim(f"/World/{name}")

    UsdGeom.Scope.Define(stage, "/World/Looks")
    UsdGeom.Xform.Define(stage, "/World/Objects")
    for i, obj in enumerate(scene.objects):
        _define_object(stage, i, obj, cache_dir)
    if scene.ground is not None:
        _define_ground(stage, scene, cache_dir)
    _define_lights(stage, scene)
    _define_dome(stage, scene, cache_dir)
    return stage
