"""The embedded MuJoCo render backend: exact pinhole cameras, RGB and metric z-depth from one pass, on any CPU.

One GL context per process is reused across scenes; each scene gets a freshly compiled model and its own
MjrContext (tens of milliseconds). Camera conventions and speed settings follow shared/notes/renderers.md.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from sim.camera import Camera
from sim.mujoco_gl import load_mujoco
from sim.render import Frame
from sim.scene import MaterialSpec, SceneSpec, SkySpec
from sim.validate import as_pose

mujoco = load_mujoco()

# znear/zfar are multiples of stat.extent, which is pinned to 1 so that they read in metres.
ZNEAR, ZFAR = 0.01, 200.0
# One GL context per process; MuJoCo renders into its own offscreen framebuffer, so the context size is moot.
_GL_CONTEXT: Any = None


def _gl_context() -> Any:
    global _GL_CONTEXT
    if _GL_CONTEXT is None:
        _GL_CONTEXT = mujoco.GLContext(64, 64)
    _GL_CONTEXT.make_current()
    return _GL_CONTEXT


def _cube_faces_from_equirect(img: np.ndarray, face: int) -> np.ndarray:
    """Resample an equirectangular sky (z up) into MuJoCo's skybox: six square faces stacked vertically."""
    # Faces follow the OpenGL cube-map table (+x, -x, +y, -y, +z, -z, with s right and t down each face), in a
    # cube space whose +y is world up and +z is world -y; checked by rendering a direction-coded sky.
    a = (np.arange(face) + 0.5) / face * 2.0 - 1.0
    s, t = np.meshgrid(a, a)
    one = np.ones_like(s)
    cube_dirs = [
        (one, -t, -s),
        (-one, -t, s),
        (s, one, t),
        (s, -one, -t),
        (s, -t, one),
        (-s, -t, -one),
    ]
    h, w = img.shape[:2]
    out = []
    for cx, cy, cz in cube_dirs:
        x, y, z = cx, -cz, cy  # cube space -> world
        lon = np.arctan2(y, x)
        lat = np.arctan2(z, np.hypot(x, y))
        col = ((lon / (2 * np.pi) + 0.5) * w).astype(int) % w
        row = np.clip(((0.5 - lat / np.pi) * h).astype(int), 0, h - 1)
        out.append(img[row, col])
    return np.ascontiguousarray(np.concatenate(out, axis=0))


class MujocoRenderer:
    """Render a SceneSpec with MuJoCo's classic OpenGL renderer (headless EGL or OSMesa)."""

    def __init__(self, width: int, height: int, *, shadows: bool = False, shadow_size: int = 1024) -> None:
        self.width, self.height = int(width), int(height)
        self.shadows = bool(shadows)
        self.shadow_size = int(shadow_size)
        self._model: Any = None
        self._data: Any = None
        self._ctx: Any = None
        self._scene: Any = None
        self._option = mujoco.MjvOption()
        self._cam = mujoco.MjvCamera()
        self._rect = mujoco.MjrRect(0, 0, self.width, self.height)
        self._rgb = np.empty((self.height, self.width, 3), np.uint8)
        self._zbuf = np.empty((self.height, self.width), np.float32)
        self._K: np.ndarray | None = None
        self._closed = False
        _gl_context()

    # -- scene -------------------------------------------------------------------------------------------------
    def load(self, scene: SceneSpec) -> None:
        """Compile `scene` into a MuJoCo model and upload it to the GL context (replaces the previous scene)."""
        self._check_open()
        spec = self._build_spec(scene)
        model = spec.compile()
        data = mujoco.MjData(model)
        mujoco.mj_forward(model, data)
        _gl_context()
        self._free_scene()
        self._model, self._data = model, data
        self._ctx = mujoco.MjrContext(model, mujoco.mjtFontScale.mjFONTSCALE_50)
        mujoco.mjr_setBuffer(mujoco.mjtFramebuffer.mjFB_OFFSCREEN, self._ctx)
        self._ctx.readDepthMap = mujoco.mjtDepthMap.mjDEPTH_ZEROFAR
        self._scene = mujoco.MjvScene(model, maxgeom=max(100, 4 * model.ngeom))
        self._cam.type = mujoco.mjtCamera.mjCAMERA_FIXED
        self._cam.fixedcamid = 0
        self._K = None

    def _build_spec(self, scene: SceneSpec) -> Any:
        spec = mujoco.MjSpec()
        spec.stat.extent = 1.0
        spec.option.disableflags |= mujoco.mjtDisableBit.mjDSBL_CONTACT
        vis = spec.visual
        vis.global_.offwidth, vis.global_.offheight = self.width, self.height
        vis.map.znear, vis.map.zfar = ZNEAR, ZFAR
        vis.quality.offsamples = 0  # multisampling doubles the frame time on a CPU and blurs exact edges
        vis.quality.shadowsize = self.shadow_size
        vis.headlight.active = 1
        vis.headlight.ambient = list(scene.ambient)
        vis.headlight.diffuse = [0.0, 0.0, 0.0]
        vis.headlight.specular = [0.0, 0.0, 0.0]
        vis.rgba.fog = [0.0, 0.0, 0.0, 1.0]

        if scene.sky is not None:
            self._add_sky(spec, scene.sky)
        for i, light in enumerate(scene.lights):
            d = np.asarray(light.direction, float)
            spec.worldbody.add_light(
                name=f"light{i}",
                type=mujoco.mjtLightType.mjLIGHT_DIRECTIONAL,
                dir=d / np.linalg.norm(d),
                pos=-3.0 * d / np.linalg.norm(d),
                diffuse=list(light.diffuse),
                specular=list(light.specular),
                ambient=[0.0, 0.0, 0.0],
                castshadow=self.shadows and light.cast_shadow,
            )
        if scene.ground is not None:
            mat = self._add_material(spec, "ground", scene.ground, uniform=True)
            h = scene.ground_half_size
            spec.worldbody.add_geom(
                name="ground",
                type=mujoco.mjtGeom.mjGEOM_PLANE,
                size=[h, h, 0.1],
                material=mat,
                contype=0,
                conaffinity=0,
            )
        for i, obj in enumerate(scene.objects):
            mesh = obj.mesh
            kw: dict[str, Any] = {}
            if mesh.uv is not None:
                uv = mesh.uv.astype(np.float64).copy()
                uv[:, 1] = 1.0 - uv[:, 1]  # OBJ v counts from the bottom row; MuJoCo's from the top
                kw = {"usertexcoord": uv.ravel().tolist(), "userfacetexcoord": mesh.faces.ravel().tolist()}
            spec.add_mesh(
                name=f"mesh{i}",
                uservert=mesh.vertices.ravel().tolist(),
                userface=mesh.faces.ravel().tolist(),
                inertia=mujoco.mjtMeshInertia.mjMESH_INERTIA_SHELL,
                **kw,
            )
            material = obj.material
            if mesh.texture is not None and material.texture is None:
                material = MaterialSpec(material.rgba, mesh.texture, None, material.specular, material.shininess)
            mat = self._add_material(spec, f"obj{i}", material, uniform=False)
            pose = as_pose(obj.pose, f"objects[{i}].pose")
            quat = np.empty(4)
            mujoco.mju_mat2Quat(quat, pose[:3, :3].ravel())
            body = spec.worldbody.add_body(name=f"obj{i}", pos=pose[:3, 3], quat=quat)
            body.add_geom(
                type=mujoco.mjtGeom.mjGEOM_MESH, meshname=f"mesh{i}", material=mat, contype=0, conaffinity=0, mass=1.0
            )
        spec.worldbody.add_camera(name="cam", resolution=[self.width, self.height])
        return spec

    @staticmethod
    def _add_material(spec: Any, name: str, m: MaterialSpec, uniform: bool) -> str:
        textures = []
        if m.texture is not None:
            tex = np.ascontiguousarray(m.texture, dtype=np.uint8)
            t = spec.add_texture(
                name=f"{name}_tex",
                type=mujoco.mjtTexture.mjTEXTURE_2D,
                width=tex.shape[1],
                height=tex.shape[0],
                nchannel=3,
            )
            t.data = tex.tobytes()  # assigning bytes is ~1000x faster than passing a list to add_texture
            textures = ["", f"{name}_tex"]  # slot 1 is the RGB role
        repeat = [1.0, 1.0]
        if uniform and m.tile_size is not None:
            repeat = [1.0 / m.tile_size, 1.0 / m.tile_size]  # texuniform: repeats per metre
        spec.add_material(
            name=name,
            rgba=list(m.rgba),
            specular=m.specular,
            shininess=m.shininess,
            reflectance=0.0,
            textures=textures,
            texrepeat=repeat,
            texuniform=uniform,
        )
        return name

    @staticmethod
    def _add_sky(spec: Any, sky: SkySpec) -> None:
        if sky.image is not None:
            face = max(64, min(512, sky.image.shape[1] // 4))
            cube = _cube_faces_from_equirect(np.asarray(sky.image, np.uint8), face)
            t = spec.add_texture(
                name="sky", type=mujoco.mjtTexture.mjTEXTURE_SKYBOX, width=face, height=6 * face, nchannel=3
            )
            t.data = cube.tobytes()
        else:
            spec.add_texture(
                name="sky",
                type=mujoco.mjtTexture.mjTEXTURE_SKYBOX,
                builtin=mujoco.mjtBuiltin.mjBUILTIN_GRADIENT,
                rgb1=list(sky.zenith),
                rgb2=list(sky.horizon),
                width=256,
                height=1536,
            )

    # -- rendering ---------------------------------------------------------------------------------------------
    def _set_intrinsics(self, K: np.ndarray) -> None:
        cam = Camera(K, self.width, self.height)
        m = self._model
        # With sensor size = resolution, MuJoCo's lengths are pixels. It measures the principal point from the
        # image centre ((W-1)/2 in pixel-centre coordinates), with the opposite sign.
        m.cam_resolution[0] = [self.width, self.height]
        m.cam_sensorsize[0] = [self.width, self.height]
        m.cam_intrinsic[0] = [cam.fx, cam.fy, (self.width - 1) / 2.0 - cam.cx, (self.height - 1) / 2.0 - cam.cy]
        self._K = cam.K

    def render(self, K: ArrayLike, wTc: ArrayLike) -> Frame:
        """Render RGB and metric z-depth through K from the OpenCV pose wTc."""
        self._check_open()
        if self._model is None:
            raise RuntimeError("MujocoRenderer.render: no scene loaded; call load(scene) first")
        K = np.asarray(K, dtype=np.float64)
        if self._K is None or not np.array_equal(K, self._K):
            self._set_intrinsics(K)
        T = as_pose(wTc, "wTc")
        R_gl = T[:3, :3] * np.array([1.0, -1.0, -1.0])  # OpenCV -> OpenGL camera axes (y up, looking down -z)
        m, d = self._model, self._data
        m.cam_pos[0] = T[:3, 3]
        mujoco.mju_mat2Quat(m.cam_quat[0], R_gl.ravel())
        d.cam_xpos[0] = T[:3, 3]
        d.cam_xmat[0] = R_gl.ravel()
        _gl_context()
        mujoco.mjv_updateScene(m, d, self._option, None, self._cam, mujoco.mjtCatBit.mjCAT_ALL, self._scene)
        mujoco.mjr_render(self._rect, self._scene, self._ctx)
        mujoco.mjr_readPixels(self._rgb, self._zbuf, self._rect, self._ctx)
        rgb = np.flipud(self._rgb).copy()
        return Frame(rgb, self._metric_depth(np.flipud(self._zbuf)), self._K.copy(), T.copy())

    @staticmethod
    def _metric_depth(zbuf: np.ndarray) -> np.ndarray:
        # Reversed-Z window depth w (1 at znear, 0 at zfar) to z-depth: Z = f n / ((f - n) w + n), in float64.
        w = zbuf.astype(np.float64)
        n, f = np.float64(np.float32(ZNEAR)), np.float64(np.float32(ZFAR))
        with np.errstate(divide="ignore"):
            z = f * n / ((f - n) * w + n)
        z[w <= 0.0] = np.inf
        return z.astype(np.float32)

    # -- lifetime ----------------------------------------------------------------------------------------------
    def _free_scene(self) -> None:
        if self._ctx is not None:
            _gl_context()
            self._ctx.free()
        self._ctx = self._scene = self._model = self._data = None

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("MujocoRenderer is closed")

    def close(self) -> None:
        """Free the scene's GPU resources; the process-wide GL context stays for the next renderer."""
        if not self._closed:
            self._free_scene()
            self._closed = True

    def __enter__(self) -> MujocoRenderer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
