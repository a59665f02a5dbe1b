"""Isaac Sim + Replicator render backend: the production renderer on RTX GPUs, behind the same interface as MuJoCo.

`IsaacRenderer(width, height)` starts one headless `SimulationApp` per process (on the main thread: it installs a
SIGINT handler), builds a USD stage from each `SceneSpec` with `sim.usd_stage.build_stage` (the same authoring that
the CPU tests check with usd-core), and renders synchronously: set the camera, `rep.orchestrator.step`, read the
`rgb` and `distance_to_image_plane` annotators. No scripted replicator graph runs, so a DAgger loop can step it.

Camera: the USD apertures and aperture offsets reproduce any K exactly in USD's own projection (checked with
usd-core to 1e-5 px), and the OpenCV pinhole lens schema is applied as well, because the RTX renderer may ignore
aperture offsets (shared/notes/isaac-sim.md). Render-and-crop was not chosen: it cannot express the half-pixel
offset of our canonical K (cx = W/2 with pixel centres at integers), and it renders more pixels than it keeps.
Which of the two the renderer honours, and the schema's half-pixel convention, are what `python -m sim.isaac_check`
settles on the first RTX machine (its camera contract has off-centre and non-square cases).

Scene poses come from the SceneSpec, which the sampler has already settled with physics, so that both backends
draw the same scene from the same spec. The rigid bodies are authored all the same; `settle_steps > 0` lets PhysX
settle them again for scenes that did not come from the sampler.

Nothing here is importable without Isaac Sim; `unavailable_reason()` and `make_renderer("isaac", ...)` say what is
missing and how to install it before anything heavy starts.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import threading
from pathlib import Path
from typing import Any

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


def app_config(width: int, height: int, gpu: int) -> dict[str, Any]:
    """The SimulationApp launch settings: headless, RTX real-time lighting, one GPU pinned by its CUDA index."""
    return {
        "headless": True,
        "renderer": "RaytracedLighting",
        "width": width,
        "height": height,
        "multi_gpu": False,
        # activeCudaGpus takes a CUDA index (CUDA_VISIBLE_DEVICES renumbers those, not the graphics list);
        # the trailing comma keeps a one-element list a string for Kit's parser.
        "extra_args": [f"--/renderer/multiGpu/activeCudaGpus={gpu},"],
    }


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
    from isaacsim import SimulationApp  # must come before any omni/carb/pxr import

    _app = SimulationApp(app_config(width, height, render_gpu()))
    import carb.settings

    s = carb.settings.get_settings()
    s.set("/omni/replicator/captureOnPlay", False)  # we step the orchestrator ourselves
    s.set("/omni/replicator/asyncRendering", False)  # get_data() must return this step's frame
    s.set("/app/asyncRendering", False)
    s.set("/rtx/post/aa/op", 0)  # no anti-aliasing or DLSS: exact pixel edges, as the camera contract demands
    s.set("/rtx/post/histogram/enabled", False)  # no auto-exposure: the same scene always gives the same image
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
        settle_steps: int = 0,
        cache_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        self.width, self.height = int(width), int(height)
        if rt_subframes < 1 or settle_steps < 0:
            raise ValueError(f"need rt_subframes >= 1 and settle_steps >= 0, got {rt_subframes}, {settle_steps}")
        self.shadows = bool(shadows)  # RTX lights always cast shadows; kept for interface parity with MuJoCo
        self.rt_subframes, self.settle_steps = int(rt_subframes), int(settle_steps)
        self.cache_dir = Path(cache_dir or Path.home() / ".cache" / "cnsv2" / "usd")
        self.app = start_app(self.width, self.height)
        import omni.replicator.core as rep
        import omni.usd

        self._rep = rep
        self._ctx = omni.usd.get_context()
        self._ctx.new_stage()
        self._stage = self._ctx.get_stage()
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
        if self.settle_steps:
            self._settle()
        for _ in range(3):  # new materials and textures load asynchronously; a headless app must tick to see them
            self.app.update()
        self._loaded = True

    def _make_camera(self) -> None:
        from sim.usd_camera import define_camera

        cam = Camera.canonical(self.width, self.height)
        self._camera = define_camera(self._stage, CAMERA_PATH, cam.K, self.width, self.height, np.eye(4))
        self._K = cam.K
        rep = self._rep
        self._product = rep.create.render_product(CAMERA_PATH, (self.width, self.height))
        for name in ("rgb", "distance_to_image_plane"):
            annotator = rep.AnnotatorRegistry.get_annotator(name)
            annotator.attach([self._product])
            self._annotators.append(annotator)

    def _settle(self) -> None:
        import omni.timeline

        timeline = omni.timeline.get_timeline_interface()
        timeline.play()
        for _ in range(self.settle_steps):
            self.app.update()
        timeline.pause()

    def _set_intrinsics(self, K: np.ndarray, wTc: np.ndarray) -> None:
        from sim.usd_camera import define_camera

        # Redefining the prim at the same path keeps the render product attached and types every attribute.
        self._camera = define_camera(self._stage, CAMERA_PATH, K, self.width, self.height, wTc)
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
