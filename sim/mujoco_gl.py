"""Import MuJoCo with a working headless OpenGL: EGL (Mesa on a CPU, the GPU where there is one), else OSMesa.

MuJoCo and PyOpenGL fix their GL platform at import time, so the choice is made once per process, before the
first `import mujoco`, by probing each platform in a short subprocess. The choice is exported in MUJOCO_GL so
that child processes (Ray actors, data-loader workers) skip the probe.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import subprocess
import sys
from types import ModuleType

PLATFORMS = ("egl", "osmesa")
INSTALL_HINT = {
    "egl": "apt-get install libegl1 libegl-mesa0 libgl1-mesa-dri libopengl0",
    "osmesa": "apt-get install libosmesa6",
}
_PROBE = "import mujoco\nctx = mujoco.GLContext(8, 8)\nctx.make_current()\nctx.free()\n"


def _probe(platform: str) -> str | None:
    env = {**os.environ, "MUJOCO_GL": platform, "PYOPENGL_PLATFORM": platform}
    try:
        out = subprocess.run([sys.executable, "-c", _PROBE], env=env, capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired:
        return "timed out creating a GL context"
    if out.returncode == 0:
        return None
    lines = [ln for ln in out.stderr.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else f"exit status {out.returncode}"


def choose_platform() -> str:
    """Return the headless GL platform to use (MUJOCO_GL if set), or raise naming the missing system library."""
    chosen = os.environ.get("MUJOCO_GL")
    if chosen:
        return chosen
    errors = {}
    for platform in PLATFORMS:
        err = _probe(platform)
        if err is None:
            os.environ["MUJOCO_GL"] = platform
            os.environ.setdefault("PYOPENGL_PLATFORM", platform)
            return platform
        errors[platform] = err
    lines = [f"  {p}: {e}\n    fix: {INSTALL_HINT[p]}" for p, e in errors.items()]
    raise RuntimeError("MuJoCo cannot create a headless OpenGL context (tried EGL, then OSMesa):\n" + "\n".join(lines))


def _preload_triton() -> None:
    # Mesa's llvmpipe and Triton (pulled in by torch._dynamo, e.g. through timm) each bundle LLVM. Loading Triton
    # after a Mesa GL context exists segfaults the process; loading it first is safe. Measured with torch 2.14 and
    # Mesa 22.3.
    if "triton" not in sys.modules and importlib.util.find_spec("triton") is not None:
        importlib.import_module("triton")


def load_mujoco() -> ModuleType:
    """Import and return the mujoco module with its GL platform chosen first."""
    if "mujoco" not in sys.modules:
        choose_platform()
        _preload_triton()
    import mujoco

    return mujoco
