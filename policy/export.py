"""`python -m policy.export CHECKPOINT_OR_PRETRAINED --out DIR`: a CNSv2 policy as two ONNX graphs for deployment.

The network is cut where `Servo` caches: the **encoder** graph is `CNSv2Policy.encode_desired` (the desired image's
projected backbone tokens and fine features, run once per goal), the **step** graph is `CNSv2Policy.forward` on a
batch of current images against that cache, returning what `Servo` uses: the normalised velocity, the two gravity
centres the hybrid law needs and the mean matching confidence (the quarter-turn search's score). Both take uint8 RGB
(B, H, W, 3) of the canonical camera and convert it as `images_to_tensor` does, inside the graph. The folder layout,
names and shapes are `policy.onnx_policy`'s.

Export runs on the CPU in fp32 (autocast is CUDA-only, so these are the numbers a CPU `Servo` computes) with
`torch.onnx.export(dynamo=True)` (torch.export, then onnxscript), and falls back to the TorchScript exporter when that
fails; the sidecar records which one ran. With the TorchScript exporter this network does not export (its `cat`
symbolic rejects the attention's inputs, torch 2.14), so in practice the dynamo exporter is the one.

Before the folder is published, onnxruntime runs both graphs on fixed inputs and the result is compared with torch's
(`PARITY_TOLERANCE`); the folder appears, in one rename, only when they agree.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import logging
import os
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from file_io import atomic_dir, write_json
from policy.attention import GridRope
from policy.network import CNSv2Policy, DesiredCache
from policy.onnx_policy import (
    BATCH,
    ENCODER,
    ENCODER_INPUT,
    FORMAT,
    SCHEMA,
    SIDECAR,
    STEP,
    STEP_IMAGE,
    STEP_OUTPUTS,
    OnnxPolicy,
    canonical_K,
    read_export,
    sha256_file,
)

__all__ = ["DEFAULT_OPSET", "EXPORTERS", "PARITY_TOLERANCE", "export_policy", "export_source", "main"]

DEFAULT_OPSET = 18  # the dynamo exporter's own default and floor; onnxruntime 1.17+ runs it
EXPORTERS = ("auto", "dynamo", "torchscript")
# Maximum |onnxruntime - torch| on the fixed inputs. Both run fp32 but with different kernels and summation orders
# (fused attention, LayerNorm, NCHWc convolutions): measured 1e-7 to 4e-7 on the velocity of the smoke, cpu (XFeat)
# and paper (ViT-B/16) configs and 1e-5 on the gravity centres, so these leave two orders of headroom while staying
# far below what moves a robot: 1e-4 of normalised velocity is 1/300 of the shipped policy's stop threshold (0.03),
# and 1e-3 patch is 0.016 px at patch 16.
PARITY_TOLERANCE = {"velocity": 1e-4, "gravity_cur": 1e-3, "gravity_des": 1e-3, "confidence": 1e-4}
# torch.export turns a size-1 example dimension into a constant, so the examples that fix the dynamic batch have 2.
_EXAMPLE_BATCH = 2


class _EncoderGraph(nn.Module):
    """uint8 (B, H, W, 3) -> the desired image's cached tensors (DesiredCache.tokens, .fine)."""

    def __init__(self, policy: CNSv2Policy) -> None:
        super().__init__()
        self.policy = policy

    def forward(self, desired_rgb: Tensor) -> tuple[Tensor, ...]:
        cache = self.policy.encode_desired(_to_float(desired_rgb))
        return (cache.tokens,) if cache.fine is None else (cache.tokens, cache.fine)


class _StepGraph(nn.Module):
    """uint8 (B, H, W, 3) current images + one goal's cache (batch 1) -> velocity, gravity centres, confidence."""

    def __init__(self, policy: CNSv2Policy) -> None:
        super().__init__()
        self.policy = policy
        W, H = policy.cfg.input_size
        self.size, self.grid = (H, W), (H // policy.patch, W // policy.patch)

    def forward(self, rgb: Tensor, desired_tokens: Tensor, desired_fine: Tensor | None = None) -> tuple[Tensor, ...]:
        x = _to_float(rgb)
        B = x.shape[0]
        # Expanded here, in the graph, so that the goal is passed once whatever the batch (the four quarter turns).
        fine = desired_fine.expand(B, -1, -1, -1) if desired_fine is not None else None
        tokens = desired_tokens.expand(B, *desired_tokens.shape[1:])
        out = self.policy(x, DesiredCache(tokens, fine, self.grid, self.size))
        return out.vel, out.gravity_cur, out.gravity_des, out.confidence.float().mean(dim=1)


def _to_float(rgb: Tensor) -> Tensor:
    # images_to_tensor's conversion, traced: uint8 NHWC -> float NCHW in [0, 1].
    return rgb.permute(0, 3, 1, 2).float() / 255.0


def fixed_inputs(input_size: tuple[int, int], batch: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic test images: a smooth random texture as the desired image (1, H, W, 3) and `batch` current images
    (batch, H, W, 3), each the texture shifted and re-lit, so that matching has something to find."""
    W, H = input_size
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(0, 255, (H // 8 + 2, W // 8 + 2, 3))
    texture = np.kron(coarse, np.ones((8, 8, 1)))[:H, :W]
    desired = np.clip(texture, 0, 255).astype(np.uint8)
    current = [
        np.clip(np.roll(texture, (3 * i + 2, 5 * i - 4), axis=(0, 1)) * (0.9 + 0.05 * i), 0, 255) for i in range(batch)
    ]
    return desired[None], np.stack(current).astype(np.uint8)


class _Scope(nn.Module):
    """Calls a function as a module, so that the exporter records the module's name on the function's nodes."""

    def __init__(self, fn: Any) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, *args: Any) -> Any:
        return self.fn(*args)


def _export_copy(policy: CNSv2Policy) -> CNSv2Policy:
    """A CPU fp32 eval copy of `policy`, without torch.compile wrappers; the caller's module is not touched (tracing
    writes fake tensors into the RoPE caches of the module it traces)."""
    net = copy.deepcopy(policy).cpu().float().eval()
    for m in net.modules():
        if getattr(m, "_compiled_call_impl", None) is not None:
            m._compiled_call_impl = None  # the eager module is what torch.export traces
        if isinstance(m, GridRope):
            m._cache.clear()  # tables a Servo made under inference_mode: tracing refuses inference tensors
    # The representation (P2G) is a method, not a module: as one its nodes carry the scope 'policy.representation',
    # which is how `policy.bench` finds the stage in onnxruntime's profile. It changes no computation. Registered as
    # a submodule for the scope's name; set on the instance so that forward's self._representation finds it.
    scope = _Scope(net._representation)
    net.add_module("representation", scope)
    object.__setattr__(net, "_representation", scope)
    return net


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    # onnxscript's optimiser logs every op it cannot fold, and torch.export warns about its own internals.
    loggers = [logging.getLogger(n) for n in ("onnxscript", "onnx_ir", "torch.onnx", "torch.export", "torch._dynamo")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def _to_onnx(
    module: nn.Module,
    args: tuple[Tensor, ...],
    path: Path,
    input_names: list[str],
    output_names: list[str],
    opset: int,
    exporter: str,
) -> str:
    """Write `module` on `args` to `path`, batch dimension of the first input and every output dynamic; returns the
    exporter that succeeded ('dynamo' or 'torchscript'). RuntimeError naming both failures when neither does."""
    errors: list[str] = []
    if exporter in ("auto", "dynamo"):
        try:
            batch = torch.export.Dim(BATCH)
            dynamic = ({0: batch},) + (None,) * (len(args) - 1)
            with _quiet_exporter():
                program = torch.onnx.export(
                    module,
                    args,
                    input_names=input_names,
                    output_names=output_names,
                    opset_version=opset,
                    dynamo=True,
                    dynamic_shapes=dynamic,
                    verbose=False,
                    optimize=True,
                )
                program.save(str(path), external_data=False)
            return "dynamo"
        except Exception as err:  # the exporter raises many types; the message says what failed
            if exporter == "dynamo":
                raise RuntimeError(f"torch.onnx.export(dynamo=True) failed: {err}") from err
            errors.append(f"dynamo: {type(err).__name__}: {str(err).strip().splitlines()[-1]}")
    try:
        axes = {input_names[0]: {0: BATCH}, **{name: {0: BATCH} for name in output_names}}
        with _quiet_exporter():
            torch.onnx.export(
                module,
                args,
                str(path),
                input_names=input_names,
                output_names=output_names,
                opset_version=opset,
                dynamo=False,
                dynamic_axes=axes,
                do_constant_folding=True,
            )
        if errors:
            warnings.warn(f"the dynamo exporter failed ({errors[0]}); used the TorchScript one", stacklevel=3)
        return "torchscript"
    except Exception as err:
        errors.append(f"torchscript: {type(err).__name__}: {str(err).strip().splitlines()[-1]}")
        raise RuntimeError(f"{path.name}: no exporter could export the graph ({'; '.join(errors)})") from err


def _graph_signature(path: Path) -> dict[str, Any]:
    import onnx
    from onnx import helper

    model = onnx.load(str(path), load_external_data=False)

    def values(vs: Any) -> list[dict[str, Any]]:
        out = []
        for v in vs:
            t = v.type.tensor_type
            dims = [d.dim_param if d.dim_param else int(d.dim_value) for d in t.shape.dim]
            out.append(
                {"name": v.name, "dtype": np.dtype(helper.tensor_dtype_to_np_dtype(t.elem_type)).name, "shape": dims}
            )
        return out

    opsets = {o.domain or "ai.onnx": int(o.version) for o in model.opset_import}
    return {"inputs": values(model.graph.input), "outputs": values(model.graph.output), "opsets": opsets}


def _reference(
    net: CNSv2Policy, desired: np.ndarray, current: np.ndarray
) -> tuple[tuple[Tensor, ...], dict[int, tuple[Tensor, ...]]]:
    """torch's encoder outputs on `desired` and step outputs on current[:1] and current (every batch checked)."""
    enc, step = _EncoderGraph(net).eval(), _StepGraph(net).eval()
    with torch.no_grad():  # not inference_mode: these tensors go on into the traced graphs' caches
        cache = enc(torch.from_numpy(desired))
        return cache, {b: step(torch.from_numpy(current[:b]), *cache) for b in (1, len(current))}


def _parity(
    folder: Path, desired: np.ndarray, current: np.ndarray, reference: dict[int, tuple[Tensor, ...]]
) -> dict[str, Any]:
    """Max |onnxruntime - torch| per step output over the checked batches, end to end (onnxruntime's own cache)."""
    onnx_policy = OnnxPolicy(folder, threads=1)
    cache = onnx_policy.encode_desired(desired)
    worst = dict.fromkeys(STEP_OUTPUTS, 0.0)
    for b, ref in reference.items():
        got = onnx_policy.step(current[:b], cache)
        arrays = (got.velocity, got.gravity_cur, got.gravity_des, got.confidence)
        for name, a, r in zip(STEP_OUTPUTS, arrays, ref, strict=True):
            worst[name] = max(worst[name], float(np.max(np.abs(a - r.double().numpy()))))
    return {
        "max_abs": worst,
        "tolerance": PARITY_TOLERANCE,
        "batches": sorted(reference),
        "inputs": "policy.export.fixed_inputs(input_size, batch=4, seed=0)",
    }


def _check_args(opset: int, exporter: str) -> None:
    if isinstance(opset, bool) or not isinstance(opset, int) or not 18 <= opset <= 23:
        raise ValueError(f"opset must be an integer in 18..23 (the dynamo exporter's range), got {opset!r}")
    if exporter not in EXPORTERS:
        raise ValueError(f"exporter must be one of {EXPORTERS}, got {exporter!r}")


def _replaceable(out: Path) -> None:
    # atomic_dir replaces a folder whole: never one that holds something other than an earlier export.
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / SIDECAR).is_file())):
        raise FileExistsError(f"{out} exists and is not an ONNX export (no {SIDECAR}); refusing to replace it")


def export_policy(
    policy: CNSv2Policy,
    out: str | os.PathLike[str],
    *,
    source: dict[str, Any] | None = None,
    opset: int = DEFAULT_OPSET,
    exporter: str = "auto",
    check: bool = True,
    echo: Any = None,
) -> Path:
    """Export `policy` to the folder `out` (encoder.onnx, step.onnx, export.json; see the module docstring).

    `source` is the provenance to record (`export_source` fills it for checkpoints). With `check` (the default),
    onnxruntime must be installed and the graphs must reproduce torch within `PARITY_TOLERANCE` on fixed inputs, or
    nothing is written (ValueError naming the output and the difference). `out` is replaced atomically if it holds an
    earlier export; FileExistsError if it holds anything else. `echo` (a print-like callable) reports the stages.
    ValueError for a bad opset or exporter name; RuntimeError when no exporter can export the network.
    """
    _check_args(opset, exporter)
    say = echo or (lambda *_: None)
    out = Path(out)
    _replaceable(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    net = _export_copy(policy)
    W, H = net.cfg.input_size
    desired, current = fixed_inputs((W, H), batch=4)
    # A real forward pass first: it fills the RoPE and P2G table caches with real tensors, which tracing then reads
    # as constants instead of filling them with fake ones.
    cache, reference = _reference(net, desired, current)
    cache_names = ["desired_tokens", "desired_fine"][: len(cache)]
    with atomic_dir(out) as tmp:
        t0 = time.perf_counter()
        say(f"exporting {ENCODER} (desired image -> {', '.join(cache_names)})")
        ex_desired = torch.from_numpy(np.concatenate([desired] * _EXAMPLE_BATCH))
        used = {
            "encoder": _to_onnx(
                _EncoderGraph(net).eval(), (ex_desired,), tmp / ENCODER, [ENCODER_INPUT], cache_names, opset, exporter
            ),
        }
        say(f"exporting {STEP} (current images + cache -> {', '.join(STEP_OUTPUTS)})")
        ex_current = torch.from_numpy(current[:_EXAMPLE_BATCH])
        used["step"] = _to_onnx(
            _StepGraph(net).eval(),
            (ex_current, *(c[:1] for c in cache)),
            tmp / STEP,
            [STEP_IMAGE, *cache_names],
            list(STEP_OUTPUTS),
            opset,
            exporter,
        )
        graphs = {}
        for role, name in (("encoder", ENCODER), ("step", STEP)):
            sig = _graph_signature(tmp / name)
            graphs[role] = {
                "file": name,
                "sha256": sha256_file(tmp / name),
                "bytes": (tmp / name).stat().st_size,
                "exporter": used[role],
                "opsets": sig["opsets"],
                "inputs": sig["inputs"],
                "outputs": sig["outputs"],
            }
        meta = {
            "format": FORMAT,
            "schema": SCHEMA,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "opset": opset,
            "exporter": f"torch.onnx.export(dynamo={used['step'] == 'dynamo'})",
            "versions": _versions(),
            "input_size": [W, H],
            "patch": net.patch,
            "grid": [H // net.patch, W // net.patch],
            "K": canonical_K((W, H)).tolist(),
            "precision": "fp32",
            "rot90": bool(net.cfg.rot90),
            "image": "uint8 RGB (B, H, W, 3) of the canonical camera K (remap others: policy.canonical_camera)",
            "velocity": "normalised (unit world, lambda = 1): [v / d*, w]; policy.control.denormalize_velocity",
            "gravity": "patch units (x, y) on the grid; pixel = (g + 0.5) * patch - 0.5",
            "policy": net.cfg.model_dump(mode="json"),
            "source": source or {"kind": "module"},
            "graphs": graphs,
            "parity": None,
        }
        write_json(tmp / SIDECAR, meta, indent=1)  # OnnxPolicy reads it for the check
        if check:
            say("checking the graphs against torch with onnxruntime")
            meta["parity"] = parity = _parity(tmp, desired, current, reference)
            bad = {k: v for k, v in parity["max_abs"].items() if not v <= PARITY_TOLERANCE[k]}
            if bad:
                raise ValueError(f"{out}: onnxruntime differs from torch beyond {PARITY_TOLERANCE}: {bad}; not written")
        meta["seconds"] = round(time.perf_counter() - t0, 1)
        write_json(tmp / SIDECAR, meta, indent=1)
    return out


def _versions() -> dict[str, str]:
    import onnx

    versions = {"torch": torch.__version__, "onnx": onnx.__version__}
    with contextlib.suppress(ImportError):
        import onnxscript

        versions["onnxscript"] = onnxscript.__version__
    with contextlib.suppress(ImportError):
        import onnxruntime

        versions["onnxruntime"] = onnxruntime.__version__
    return versions


def export_source(source: str, out: str | os.PathLike[str], **kwargs: Any) -> Path:
    """Export a checkpoint folder or a shipped policy (`pretrained:NAME`, or a bare shipped name) to `out`, recording
    where it came from (path, policy version, weights' sha256). Other arguments are `export_policy`'s.
    FileNotFoundError naming the shipped policies when `source` is neither."""
    from policy.checkpoint import load_checkpoint
    from policy.pretrained import PREFIX, available, pretrained_path

    path = Path(source).expanduser()
    kind = "checkpoint"
    if not path.is_dir():
        if not source.startswith(PREFIX) and source not in available():
            raise FileNotFoundError(
                f"{source}: neither a checkpoint folder nor a shipped policy (pretrained:NAME; shipped: "
                f"{', '.join(available()) or 'none'})"
            )
        path, kind = pretrained_path(source), "pretrained"
    policy, meta = load_checkpoint(path)
    provenance = {
        "kind": kind,
        "name": path.name if kind == "pretrained" else None,
        "path": str(path.resolve()),
        "policy_version": meta.get("policy_version"),
        "created": meta.get("created"),
        "sha256": meta.get("sha256"),
        "extra": meta.get("extra"),
    }
    return export_policy(policy, out, source=provenance, **kwargs)


def main(argv: list[str] | None = None) -> int:
    """The CLI; prints each stage and a one-line summary, exit 0 on success."""
    p = argparse.ArgumentParser(prog="python -m policy.export", description=__doc__.split("\n\n")[0])
    p.add_argument("source", help="a checkpoint folder (policy.json + model.safetensors) or pretrained:NAME")
    p.add_argument("--out", required=True, help="the export folder to write (replaced if it holds an export)")
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET, help="ONNX opset (default %(default)s)")
    p.add_argument("--exporter", choices=EXPORTERS, default="auto", help="auto: dynamo, else TorchScript")
    p.add_argument("--no-check", action="store_true", help="skip the onnxruntime parity check (no onnxruntime here)")
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    try:
        out = export_source(
            args.source,
            args.out,
            opset=args.opset,
            exporter=args.exporter,
            check=not args.no_check,
            echo=lambda m: print(m, flush=True),
        )
    except (FileNotFoundError, FileExistsError, ValueError, RuntimeError, ModuleNotFoundError) as err:
        print(f"python -m policy.export: error: {err}", file=sys.stderr)
        return 1
    meta = read_export(out)
    sizes = ", ".join(f"{g['file']} ({g['bytes'] / 1e6:.1f} MB)" for g in meta["graphs"].values())
    parity, tol = meta["parity"], PARITY_TOLERANCE["velocity"]
    check = (
        f"velocity max |onnx - torch| {parity['max_abs']['velocity']:.1e} (tolerance {tol:.0e})"
        if parity
        else "parity not checked"
    )
    print(
        f"exported {args.source} -> {out}: {sizes}; opset {meta['opset']}, {meta['exporter']}; {check}; "
        f"{time.perf_counter() - t0:.0f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
