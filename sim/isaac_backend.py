"""Isaac Sim + Replicator render backend: the production renderer on RTX GPUs, behind the same interface as MuJoCo.

`IsaacRenderer(width, height)` starts one headless `SimulationApp` per process (on the main thread: it installs a
SIGINT handler), builds a USD stage from each `SceneSpec` with `sim.usd_stage.build_stage` (the same authoring that
the CPU tests check with usd-core), and renders synchronously: set the camera, `rep.orchestrator.step`, read the
`rgb` and `distance_to_image_plane` annotators. No scripted replicator graph runs, so a DAgger loop can step it.

Launch (Isaac Sim 5.1's isaacsim.simulation_app/simulation_app.py, read for this): SimulationApp hands every
command-line argument it does not know to Kit, so `start_app` shows it only the program name (a Ray worker's flags,
`--frames 50`, `sim.renderer.backend=isaac` are ours, not Kit's). The launch config pins the renderer
(`activeCudaGpus`) and PhysX (`physics_gpu`, i.e. `/physics/cudaDevice`) to the same CUDA device, asks for no
anti-aliasing (its default, 3, is DLSS) and turns off the headless viewport's per-frame updates
(`disable_viewport_updates`, which SimulationApp applies to the active viewport).

Pixel-exact frames: `PIXEL_EXACT_SETTINGS` (no anti-aliasing/DLSS, no auto-exposure, no motion blur, synchronous
capture) are checked and re-applied after every new stage, after every scene load and before every capture, because
Isaac documents resetting render settings after a stage is loaded (SimulationApp.reset_render_settings).

Camera: the USD apertures and aperture offsets reproduce any K exactly in USD's own projection (checked with
usd-core to 1e-5 px); the RTX renderer may ignore aperture offsets and assumes square pixels, so by default the
OpenCV pinhole lens schema carries K as well (route "lens"). Route "aperture" (CNSV2_ISAAC_K_ROUTE=aperture, or
`k_route=`) leaves the schema out. Which route the renderer honours, and the schema's half-pixel convention, are
what `python -m sim.isaac_check` settles on the first RTX machine. Render-and-crop was not chosen: it cannot express
the half-pixel offset of our canonical K (cx = W/2 with pixel centres at integers), and it renders more pixels than
it keeps.

No physics runs here: SceneSpec poses come from the sampler, which has already settled them with MuJoCo, so both
backends draw the same scene from the same spec. The stage has no UsdPhysics.Scene and the timeline never plays;
its objects are authored as kinematic bodies only so that the stage describes the same collision shapes.

Nothing here is importable without Isaac Sim; `unavailable_reason()` and `make_renderer("isaac", ...)` say what is
missing and how to install it before anything heavy starts.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike

from sim.camera import Camera
from sim.render import Frame
from sim.scene import SceneSpec
from sim.validate import as_pose

INSTALL_HINT = (
    "install Isaac Sim 5.1 into this Python 3.11 environment with "
    "`pip install 'isaacsim[all,extscache]==5.1.0' --extra-index-url https://pypi.nvidia.com` "
    "(needs an RTX-class NVIDIA GPU, driver >= 570.169, glibc >= 2.35), or run inside the docker/Dockerfile.isaac "
    "image; sim.renderer.backend=mujoco renders on any CPU"
)
# Data-centre GPUs without RT cores: Isaac Sim's RTX renderer cannot create a device on them.
NO_RT_CORES = ("A100", "H100", "H200", "H800", "A800", "V100", "P100", "B200", "GB200")
CAMERA_PATH = "/World/Camera"
K_ROUTES = ("lens", "aperture")

# Carb settings a frame must be rendered with to be a pure function of scene and camera (the camera contract is
# pixel-exact, and DAgger images must match hemisphere ones). Names as Isaac Sim 5.1 uses them.
PIXEL_EXACT_SETTINGS: dict[str, bool | int] = {
    "/rtx/post/aa/op": 0,  # anti-aliasing off: 1 TAA, 2 FXAA, 3 DLSS (SimulationApp's default), 4 RTXAA
    "/rtx/post/histogram/enabled": False,  # auto-exposure off: the same scene always gives the same image
    "/omni/replicator/captureMotionBlur": False,  # teleported cameras must not smear
    "/omni/replicator/captureOnPlay": False,  # we step the orchestrator ourselves
    "/omni/replicator/asyncRendering": False,  # get_data() must return this step's frame
    "/app/asyncRendering": False,
}

_app: Any = None  # one SimulationApp per process; it cannot be re-created


class IsaacUnavailable(RuntimeError):
    """Isaac Sim cannot run here; the message says what is missing and how to install it."""


def _gpu_names() -> list[str] | None:
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None
    try:
        out = subprocess.run([smi, "--query-gpu=name", "--format=csv,noheader"], capture_output=True, text=True)
    except OSError:
        return None
    return [line.strip() for line in out.stdout.splitlines() if line.strip()] if out.returncode == 0 else None


def unavailable_reason() -> str | None:
    """Why Isaac Sim cannot render on this machine (None when it can); cheap, starts nothing."""
    if importlib.util.find_spec("isaacsim") is None:
        return "Isaac Sim is not installed (the `isaacsim` package cannot be imported)"
    names = _gpu_names()
    if not names:
        return "no NVIDIA GPU found (nvidia-smi is missing or lists none)"
    if all(any(tag in f"{n} " for tag in NO_RT_CORES) for n in names):
        return f"the GPUs here ({', '.join(names)}) have no RT cores, which Isaac Sim's RTX renderer needs"
    return None


def require_isaac() -> None:
    """Raise IsaacUnavailable with the install hint unless Isaac Sim can render here."""
    reason = unavailable_reason()
    if reason is not None:
        raise IsaacUnavailable(f"Isaac Sim backend: {reason}; {INSTALL_HINT}")


def render_gpu() -> int:
    """The CUDA index the renderer uses: CNSV2_ISAAC_GPU, else 0 (the first device CUDA_VISIBLE_DEVICES shows)."""
    value = os.environ.get("CNSV2_ISAAC_GPU", "0")
    if not value.isdigit():
        raise ValueError(f"CNSV2_ISAAC_GPU must be a CUDA device index, got {value!r}")
    return int(value)


def default_k_route() -> Literal["lens", "aperture"]:
    """How the camera carries K: CNSV2_ISAAC_K_ROUTE (`lens`: OpenCV pinhole lens schema, the default; `aperture`)."""
    value = os.environ.get("CNSV2_ISAAC_K_ROUTE", "lens")
    if value not in K_ROUTES:
        raise ValueError(f"CNSV2_ISAAC_K_ROUTE must be one of {', '.join(K_ROUTES)}, got {value!r}")
    return value  # type: ignore[return-value]


def app_config(width: int, height: int, gpu: int) -> dict[str, Any]:
    """The SimulationApp launch settings: headless, RTX real-time lighting, renderer and PhysX on one CUDA device.

    `gpu` is a CUDA device index (>= 0). Keys are SimulationApp 5.1's DEFAULT_LAUNCHER_CONFIG names.
    """
    if not isinstance(gpu, int) or gpu < 0:
        raise ValueError(f"gpu must be a CUDA device index >= 0, got {gpu!r}")
    return {
        "headless": True,
        "renderer": "RaytracedLighting",
        "width": width,
        "height": height,
        "multi_gpu": False,
        # SimulationApp writes this to /rtx/post/aa/op at start and on every reset_render_settings(); its default
        # is 3 (DLSS).
        "anti_aliasing": 0,
        # SimulationApp passes --/physics/cudaDevice=<physics_gpu>, 0 by default whatever the renderer uses.
        "physics_gpu": gpu,
        "disable_viewport_updates": True,  # headless: nobody looks at the viewport, so it need not render
        # activeCudaGpus takes a CUDA index (CUDA_VISIBLE_DEVICES renumbers those, not the graphics list);
        # the trailing comma keeps a one-element list a string for Kit's parser.
        "extra_args": [f"--/renderer/multiGpu/activeCudaGpus={gpu},"],
    }


def apply_render_settings(settings: Any, wanted: Mapping[str, bool | int] = PIXEL_EXACT_SETTINGS) -> list[str]:
    """Set every key of `wanted` that `settings` (a carb.settings ISettings) does not already hold; return those keys.

    Only differing keys are written, so calling this before every capture costs a few reads and does not touch
    settings the renderer watches.
    """
    changed = []
    for key, value in wanted.items():
        if settings.get(key) != value:
            settings.set(key, value)
            changed.append(key)
    return changed


def _disable_viewport_updates() -> None:
    # SimulationApp does this once at start (disable_viewport_updates); a new stage must not bring it back.
    try:
        from omni.kit.viewport.utility import get_active_viewport
    except ImportError:  # an experience without the viewport extension renders no viewport anyway
        return
    viewport = get_active_viewport()
    if viewport is not None:
        viewport.updates_enabled = False


def start_app(width: int, height: int) -> Any:
    """Start the process's SimulationApp once (main thread only) and return it."""
    global _app
    if _app is not None:
        return _app
    require_isaac()
    if threading.current_thread() is not threading.main_thread():
        raise RuntimeError(
            "Isaac Sim must start on the main thread (it installs a SIGINT handler); in Ray, use a synchronous actor "
            "without concurrency groups"
        )
    config = app_config(width, height, render_gpu())
    from isaacsim import SimulationApp  # must come before any omni/carb/pxr import

    # SimulationApp parses sys.argv and hands Kit every argument it does not know: a Ray worker's flags, our CLI's
    # options and key=value overrides. Kit gets only the program name; the caller's argv is put back afterwards.
    argv = sys.argv
    sys.argv = argv[:1]
    try:
        _app = SimulationApp(config)
    finally:
        sys.argv = argv
    import carb.settings

    apply_render_settings(carb.settings.get_settings())
    return _app


class IsaacRenderer:
    """Render a SceneSpec with Isaac Sim's RTX renderer through Replicator annotators."""

    def __init__(
        self,
        width: int,
        height: int,
        *,
        shadows: bool = True,
        shadow_size: int = 1024,
        rt_subframes: int = 4,
        k_route: Literal["lens", "aperture"] | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        self.width, self.height = int(width), int(height)
        if rt_subframes < 1:
            raise ValueError(f"need rt_subframes >= 1, got {rt_subframes}")
        route = default_k_route() if k_route is None else k_route
        if route not in K_ROUTES:
            raise ValueError(f"k_route must be one of {', '.join(K_ROUTES)}, got {route!r}")
        self.k_route = route
        self.shadows = bool(shadows)  # RTX lights always cast shadows; kept for interface parity with MuJoCo
        self.rt_subframes = int(rt_subframes)
        self.cache_dir = Path(cache_dir or Path.home() / ".cache" / "cnsv2" / "usd")
        self.app = start_app(self.width, self.height)
        import carb.settings
        import omni.replicator.core as rep
        import omni.usd

        self._rep = rep
        self._settings = carb.settings.get_settings()
        self._ctx = omni.usd.get_context()
        self._ctx.new_stage()
        self._stage = self._ctx.get_stage()
        apply_render_settings(self._settings)  # a new stage may have brought the app's defaults back
        _disable_viewport_updates()
        self._camera: Any = None
        self._product: Any = None
        self._annotators: list[Any] = []
        self._K: np.ndarray | None = None
        self._loaded = False
        self._closed = False

    def load(self, scene: SceneSpec) -> None:
        """Replace the scene under /World (camera and render product stay) and let the renderer catch up."""
        self._check_open()
        from sim.usd_stage import build_stage

        build_stage(scene, self.cache_dir, self._stage)  # replaces the previous scene's prims, keeps the camera
        if self._camera is None:
            self._make_camera()
        for _ in range(3):  # new materials and textures load asynchronously; a headless app must tick to see them
            self.app.update()
        apply_render_settings(self._settings)  # after the ticks: stage events run inside update()
        self._loaded = True

    def _make_camera(self) -> None:
        from sim.usd_camera import define_camera

        cam = Camera.canonical(self.width, self.height)
        self._camera = define_camera(
            self._stage, CAMERA_PATH, cam.K, self.width, self.height, np.eye(4), lens_schema=self.k_route == "lens"
        )
        self._K = cam.K
        rep = self._rep
        self._product = rep.create.render_product(CAMERA_PATH, (self.width, self.height))
        for name in ("rgb", "distance_to_image_plane"):
            annotator = rep.AnnotatorRegistry.get_annotator(name)
            annotator.attach([self._product])
            self._annotators.append(annotator)

    def _set_intrinsics(self, K: np.ndarray, wTc: np.ndarray) -> None:
        from sim.usd_camera import define_camera

        # Redefining the prim at the same path keeps the render product attached and types every attribute.
        self._camera = define_camera(
            self._stage, CAMERA_PATH, K, self.width, self.height, wTc, lens_schema=self.k_route == "lens"
        )
        self._K = K.copy()

    def render(self, K: ArrayLike, wTc: ArrayLike) -> Frame:
        """Render RGB and z-depth through K from the OpenCV pose wTc (synchronously, rt_subframes sub-frames)."""
        self._check_open()
        if not self._loaded:
            raise RuntimeError("IsaacRenderer.render: no scene loaded; call load(scene) first")
        from sim.usd_camera import set_camera_pose

        K = Camera(np.asarray(K, np.float64), self.width, self.height).K
        T = as_pose(wTc, "wTc")
        if self._K is None or not np.array_equal(K, self._K):
            self._set_intrinsics(K, T)
        else:
            set_camera_pose(self._camera, T)
        apply_render_settings(self._settings)  # reads only, unless something reset them since the last frame
        self._rep.orchestrator.step(rt_subframes=self.rt_subframes, delta_time=0.0, pause_timeline=False)
        rgba, depth = (np.asarray(a.get_data()) for a in self._annotators)
        if rgba.shape[:2] != (self.height, self.width) or depth.shape[:2] != (self.height, self.width):
            raise RuntimeError(
                f"Isaac Sim returned {rgba.shape} RGB and {depth.shape} depth for a {self.width}x{self.height} render"
            )
        z = depth.reshape(self.height, self.width).astype(np.float32)
        z[~np.isfinite(z) | (z <= 0)] = np.inf  # background: nothing was hit
        return Frame(np.ascontiguousarray(rgba[..., :3], dtype=np.uint8), z, K.copy(), T.copy())

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("IsaacRenderer is closed")

    def close(self) -> None:
        """Detach the annotators and destroy the render product. The app stays: closing it ends the process."""
        if self._closed:
            return
        for annotator in self._annotators:
            annotator.detach()
        if self._product is not None:
            self._product.destroy()
        self._annotators, self._product, self._camera = [], None, None
        self._closed = True

    def __enter__(self) -> IsaacRenderer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
