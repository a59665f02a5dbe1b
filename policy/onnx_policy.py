"""An exported CNSv2 policy (`python -m policy.export`) run by onnxruntime, without torch.

An export is a folder of two ONNX graphs and a JSON sidecar:

```
<dir>/encoder.onnx  desired_rgb u8 (B, H, W, 3) -> desired_tokens f32 (B, N, D) [, desired_fine f32 (B, F, H/s, W/s)]
<dir>/step.onnx     rgb u8 (B, H, W, 3), desired_tokens (1, N, D) [, desired_fine (1, F, H/s, W/s)]
                      -> velocity f32 (B, 6), gravity_cur f32 (B, 2), gravity_des f32 (B, 2), confidence f32 (B,)
<dir>/export.json    format, opset, exporter, input size, patch grid, canonical K, the policy config, the source
                     checkpoint, each graph's sha256 and signature, the parity measured at export
```

Images are RGB uint8 of the canonical camera (square pixels, centred principal point, `input_size`; `K` in the sidecar):
a real camera's image is remapped to it first (`policy.canonical_camera.CanonicalRemap`, which `Servo` does). The
encoder runs once per goal; the step graph takes a batch of current images against one cached goal (batch 1 of the
encoder's outputs). With `policy.transformer.cache_desired`, `desired_tokens` is the desired stream's transformer
layers, (B, depth + 1, N, D), so the step graph runs the current stream alone. `velocity` is the network's normalised
prediction (unit world, lambda = 1, `[v / d*, w]`), gravity centres are in patch units of the (h, w) grid (Eq. 25; pixel
= (g + 0.5) * patch - 0.5), `confidence` is the mean dual-softmax matching confidence of each current image.
`policy.Servo(folder, ..., runtime="onnx")` runs the closed loop on them with the same guards as on torch.

This module imports neither torch nor onnxruntime at import time; onnxruntime is imported when a policy is loaded.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from configs.schema import PolicyConfig
from sim.camera import Camera

__all__ = [
    "ENCODER",
    "FORMAT",
    "SCHEMA",
    "SIDECAR",
    "STEP",
    "ExportMismatchError",
    "NetworkStep",
    "OnnxPolicy",
    "import_onnxruntime",
    "read_export",
]

FORMAT = "cnsv2-onnx"
SCHEMA = 1
SIDECAR, ENCODER, STEP = "export.json", "encoder.onnx", "step.onnx"
GRAPHS = {"encoder": ENCODER, "step": STEP}
BATCH = "batch"  # the name of the dynamic batch dimension in both graphs
ENCODER_INPUT = "desired_rgb"
STEP_IMAGE = "rgb"
STEP_OUTPUTS = ("velocity", "gravity_cur", "gravity_des", "confidence")
# onnxruntime's type strings for the dtypes the graphs use.
_ORT_DTYPES = {"tensor(uint8)": "uint8", "tensor(float)": "float32", "tensor(double)": "float64"}


class ExportMismatchError(ValueError):
    """An export folder whose graphs are not the ones its sidecar describes (mixed exports, damaged or edited files)."""


@dataclass(frozen=True)
class NetworkStep:
    """What one network step gives `Servo`, as float64 numpy arrays; spatial quantities in patch units."""

    velocity: np.ndarray  # (B, 6) normalised velocity (unit world, lambda = 1)
    gravity_cur: np.ndarray  # (B, 2) Eq. 25, current image
    gravity_des: np.ndarray  # (B, 2) Eq. 25, desired image
    confidence: np.ndarray  # (B,) mean dual-softmax confidence, in [0, 1]
    grid: tuple[int, int]  # (h, w)


def import_onnxruntime() -> Any:
    """The onnxruntime module; ModuleNotFoundError naming the package to install when it is missing."""
    try:
        import onnxruntime
    except ImportError as err:
        raise ModuleNotFoundError(
            "runtime='onnx' runs exported graphs with onnxruntime, which is not installed: pip install onnxruntime "
            "(CPU; onnxruntime-gpu for CUDA)"
        ) from err
    return onnxruntime


def sha256_file(path: str | os.PathLike[str]) -> str:
    """'sha256:<hex>' of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return "sha256:" + h.hexdigest()


def canonical_K(input_size: tuple[int, int]) -> np.ndarray:
    """The (3, 3) intrinsics of the network's camera at `input_size` (W, H): fx = fy = W, principal point (W/2, H/2)."""
    return Camera.canonical(*input_size).K


def read_export(folder: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and check an export's sidecar against itself and against the graph files' bytes (sha256).

    Returns the sidecar. FileNotFoundError when `folder` is not an export (no sidecar, a graph missing);
    ValueError for a corrupt or foreign sidecar; ExportMismatchError when a graph's bytes are not the ones the sidecar
    was written with, or the sidecar contradicts itself (input size, grid, K, graph shapes).
    """
    p = Path(folder)
    meta_file = p / SIDECAR
    if not meta_file.is_file():
        raise FileNotFoundError(
            f"{p}: not an ONNX export (no {SIDECAR}; expected {SIDECAR}, {ENCODER} and {STEP}); "
            "make one with python -m policy.export CHECKPOINT --out DIR"
        )
    try:
        meta = json.loads(meta_file.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{meta_file}: corrupt export sidecar ({err})") from err
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or meta.get("schema") != SCHEMA:
        got = (meta.get("format"), meta.get("schema")) if isinstance(meta, dict) else type(meta).__name__
        raise ValueError(f"{meta_file}: not a {FORMAT} schema {SCHEMA} sidecar (got {got})")
    missing = [k for k in ("input_size", "patch", "grid", "K", "opset", "policy", "graphs") if k not in meta]
    if missing:
        raise ValueError(f"{meta_file}: sidecar lacks {missing}")
    for role, name in GRAPHS.items():
        graph = meta["graphs"].get(role)
        if not isinstance(graph, dict) or graph.get("file") != name:
            raise ValueError(f"{meta_file}: graphs.{role} must describe {name}")
        f = p / name
        if not f.is_file():
            raise FileNotFoundError(f"{p}: {name} is missing (the export is incomplete; export again)")
        if sha256_file(f) != graph.get("sha256"):
            raise ExportMismatchError(
                f"{p}: {name} is not the graph {SIDECAR} describes (sha256 mismatch): the folder mixes two exports "
                "or a file was damaged; export again with python -m policy.export"
            )
    _check_sidecar_geometry(p, meta)
    return meta


def _check_sidecar_geometry(folder: Path, meta: dict[str, Any]) -> None:
    W, H = (int(v) for v in meta["input_size"])
    patch = int(meta["patch"])
    grid = (H // patch, W // patch)
    problems = []
    if W % patch or H % patch or tuple(meta["grid"]) != grid:
        problems.append(f"grid {meta['grid']} != input_size {W}x{H} / patch {patch}")
    if not np.allclose(np.asarray(meta["K"], dtype=np.float64), canonical_K((W, H))):
        problems.append(f"K {meta['K']} is not the canonical camera of {W}x{H}")
    for role in GRAPHS:
        image = meta["graphs"][role]["inputs"][0]
        if image["shape"] != [BATCH, H, W, 3] or image["dtype"] != "uint8":
            problems.append(f"{role} image input {image['dtype']} {image['shape']} != uint8 [{BATCH}, {H}, {W}, 3]")
    if problems:
        raise ExportMismatchError(f"{folder / SIDECAR} contradicts itself: " + "; ".join(problems))


def _signature(values: list[Any]) -> list[dict[str, Any]]:
    """[{name, dtype, shape}] of onnxruntime's NodeArg list, in the sidecar's spelling."""
    return [
        {
            "name": v.name,
            "dtype": _ORT_DTYPES.get(v.type, v.type),
            "shape": [d if isinstance(d, int) else str(d) for d in v.shape],
        }
        for v in values
    ]


class OnnxPolicy:
    """An exported CNSv2 policy on onnxruntime: `encode_desired` once per goal, `step` per frame.

    Args:
        folder: an export folder (`python -m policy.export`).
        threads: onnxruntime intra-op threads of both sessions (`set_threads` changes it).
        providers: onnxruntime execution providers, default CPU only.
        profile: record onnxruntime's per-node profile of the step session (`end_profiling`); for `policy.bench`.

    Attributes: `cfg` (the PolicyConfig the graphs were exported from, servo settings and stop rule included),
    `meta` (the sidecar), `input_size` (W, H), `patch`, `grid` (h, w), `K` (the canonical camera the graphs assume).

    Raises FileNotFoundError, ValueError or ExportMismatchError as `read_export` does, ExportMismatchError when a
    graph's inputs or outputs differ from those the sidecar records, and ModuleNotFoundError without onnxruntime.
    """

    def __init__(
        self,
        folder: str | os.PathLike[str],
        *,
        threads: int = 1,
        providers: list[str] | None = None,
        profile: bool = False,
    ) -> None:
        self.folder = Path(folder)
        self.meta = read_export(self.folder)
        self.cfg = PolicyConfig.model_validate(self.meta["policy"])
        self.input_size = (int(self.meta["input_size"][0]), int(self.meta["input_size"][1]))
        self.patch = int(self.meta["patch"])
        self.grid = (int(self.meta["grid"][0]), int(self.meta["grid"][1]))
        self.K = np.asarray(self.meta["K"], dtype=np.float64)
        if self.cfg.input_size != self.input_size:
            raise ExportMismatchError(
                f"{self.folder / SIDECAR}: policy.input_size {list(self.cfg.input_size)} != input_size "
                f"{list(self.input_size)}"
            )
        self.providers = list(providers) if providers else ["CPUExecutionProvider"]
        self.profile = profile
        self.threads = 0
        self.set_threads(threads)

    def set_threads(self, threads: int) -> int:
        """(Re)create both sessions with `threads` intra-op threads (>= 1) and check their signatures; returns it."""
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise ValueError(f"threads must be an integer >= 1, got {threads!r}")
        if threads == self.threads:
            return threads
        ort = import_onnxruntime()
        sessions = {}
        for role, name in GRAPHS.items():
            so = ort.SessionOptions()
            so.intra_op_num_threads = threads
            so.inter_op_num_threads = 1
            so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
            so.log_severity_level = 3  # errors only: its warnings about unused initialisers are not the user's business
            if self.profile and role == "step":
                so.enable_profiling = True
                # Not the working directory, where onnxruntime would leave its trace by default.
                so.profile_file_prefix = os.path.join(tempfile.gettempdir(), "cnsv2-onnx-profile")
            try:
                sess = ort.InferenceSession(str(self.folder / name), so, providers=self.providers)
            except Exception as err:  # onnxruntime raises its own exception types for malformed graphs
                raise ExportMismatchError(f"{self.folder / name}: onnxruntime cannot load it ({err})") from err
            self._check_signature(role, sess)
            sessions[role] = sess
        self._encoder, self._step = sessions["encoder"], sessions["step"]
        self.threads = threads
        return threads

    def _check_signature(self, role: str, sess: Any) -> None:
        recorded = self.meta["graphs"][role]
        for kind, got in (("inputs", _signature(sess.get_inputs())), ("outputs", _signature(sess.get_outputs()))):
            if got != recorded[kind]:
                raise ExportMismatchError(
                    f"{self.folder / GRAPHS[role]}: {kind} {got} differ from those {SIDECAR} records "
                    f"{recorded[kind]}; export again with python -m policy.export"
                )

    @property
    def cache_names(self) -> list[str]:
        """Names of the desired image's cached tensors: the encoder's outputs, the step graph's inputs after `rgb`."""
        return [o["name"] for o in self.meta["graphs"]["encoder"]["outputs"]]

    def _check_images(self, rgb: np.ndarray, name: str) -> np.ndarray:
        a = np.asarray(rgb)
        if a.ndim == 3:
            a = a[None]
        W, H = self.input_size
        if a.dtype != np.uint8 or a.ndim != 4 or a.shape[1:] != (H, W, 3) or a.shape[0] < 1:
            raise ValueError(
                f"{name}: expected uint8 RGB images (B, {H}, {W}, 3) of the canonical camera (remap others with "
                f"policy.canonical_camera.CanonicalRemap), got {a.dtype} {a.shape}"
            )
        return np.ascontiguousarray(a)

    def encode_desired(self, rgb: np.ndarray) -> dict[str, np.ndarray]:
        """The desired image's cached tensors from uint8 RGB (H, W, 3) or (B, H, W, 3) of the canonical camera:
        {name: float32 array}, batch B. The step graph takes one of them (batch 1) per call. ValueError for a wrong
        dtype or size."""
        x = self._check_images(rgb, "desired_rgb")
        outs = self._encoder.run(None, {ENCODER_INPUT: x})
        return dict(zip(self.cache_names, outs, strict=True))

    def step(self, rgb: np.ndarray, cache: dict[str, np.ndarray]) -> NetworkStep:
        """One network step on a batch of current images, uint8 RGB (B, H, W, 3) (or one (H, W, 3)), against one
        cached goal (`encode_desired` of one image). ValueError for a wrong image or a cache of another batch."""
        x = self._check_images(rgb, "rgb")
        feed = {STEP_IMAGE: x}
        for name in self.cache_names:
            if name not in cache:
                raise ValueError(f"cache: no {name!r}; pass what encode_desired returned")
            c = cache[name]
            if c.shape[0] != 1:
                raise ValueError(f"cache: {name} has batch {c.shape[0]}; the step graph takes one goal (batch 1)")
            feed[name] = c
        vel, g_cur, g_des, conf = self._step.run(list(STEP_OUTPUTS), feed)
        as64 = lambda a: np.asarray(a, dtype=np.float64)  # noqa: E731
        return NetworkStep(as64(vel), as64(g_cur), as64(g_des), as64(conf), self.grid)

    def end_profiling(self) -> str:
        """Stop the step session's profile (`profile=True`) and return the path of its JSON trace."""
        if not self.profile:
            raise RuntimeError("OnnxPolicy: profiling is off; load it with profile=True")
        return str(self._step.end_profiling())
