"""ONNX export (`python -m policy.export`) and `Servo(runtime="onnx")`: parity with torch, the same guards, refused
mismatches, atomic writes, and no torch or onnxruntime where they are not needed.

One tiny network (64 px, one block per transformer, quarter turns on) is exported once for the module through the CLI;
that export (about 10-25 s on the 2-core machine) is why the tests that use it are marked slow.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from configs import load_config
from policy.checkpoint import build_policy, load_checkpoint, read_meta, save_checkpoint
from policy.export import PARITY_TOLERANCE, export_policy, fixed_inputs, main
from policy.onnx_policy import ENCODER, SIDECAR, STEP, ExportMismatchError, OnnxPolicy, import_onnxruntime
from policy.servo import Servo
from sim.camera import Camera
from tests.fixtures.imports import modules_after

ROOT = Path(__file__).resolve().parents[2]
TINY = [
    "policy.input_size=[64,64]",
    "policy.backbone.dim=32",
    "policy.transformer.dim=32",
    "policy.transformer.depth=1",
    "policy.transformer.heads=2",
    "policy.controller.dim=32",
    "policy.controller.depth=1",
    "policy.controller.heads=2",
    "policy.controller.fine_dim=8",
    "policy.controller.anchors=4",
    "policy.rot90=true",
]


def _tiny_policy():  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    return build_policy(load_config("smoke", TINY).policy).eval()


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(checkpoint folder, its export folder), the export made by the CLI."""
    tmp = tmp_path_factory.mktemp("export")
    ckpt = save_checkpoint(_tiny_policy(), tmp / "ckpt", version=7)
    out = tmp / "onnx"
    assert main([str(ckpt), "--out", str(out)]) == 0
    return ckpt, out


def _images(seed: int, size: tuple[int, int] = (80, 60)) -> tuple[np.ndarray, list[np.ndarray]]:
    """A desired image and four current ones of a non-canonical camera (80x60: Servo remaps and crops)."""
    desired, current = fixed_inputs(size, batch=4, seed=seed)
    return desired[0], list(current)


def _servos(exported: tuple[Path, Path], **kwargs) -> tuple[Servo, Servo, list[np.ndarray]]:  # type: ignore[no-untyped-def]
    ckpt, folder = exported
    des, cur = _images(1)
    K = Camera.from_focal(70.0, 80, 60).K
    policy, _ = load_checkpoint(ckpt)
    return Servo(policy, des, K, 0.8, **kwargs), Servo(folder, des, K, 0.8, runtime="onnx", **kwargs), cur


@pytest.mark.unit
@pytest.mark.slow
def test_the_export_holds_two_graphs_and_a_sidecar_with_the_provenance(exported: tuple[Path, Path]) -> None:
    ckpt, folder = exported
    assert sorted(p.name for p in folder.iterdir()) == sorted([ENCODER, STEP, SIDECAR])
    assert [p.name for p in folder.parent.iterdir() if p.name.startswith(".")] == []  # no temporary left
    meta = json.loads((folder / SIDECAR).read_text())
    assert meta["opset"] == 18 and meta["exporter"] == "torch.onnx.export(dynamo=True)"
    assert meta["input_size"] == [64, 64] and meta["grid"] == [4, 4] and meta["patch"] == 16
    np.testing.assert_array_equal(meta["K"], Camera.canonical(64).K)
    saved = read_meta(ckpt)
    assert meta["policy"] == saved["policy"]  # the config, stop rule and rot90 included
    assert meta["source"]["kind"] == "checkpoint" and meta["source"]["policy_version"] == 7
    assert meta["source"]["sha256"] == saved["sha256"]
    step = meta["graphs"]["step"]
    assert [i["name"] for i in step["inputs"]] == ["rgb", "desired_tokens", "desired_fine"]
    assert step["inputs"][0]["shape"] == ["batch", 64, 64, 3] and step["inputs"][1]["shape"][0] == 1
    assert [o["name"] for o in step["outputs"]] == ["velocity", "gravity_cur", "gravity_des", "confidence"]
    assert all(v <= PARITY_TOLERANCE[k] for k, v in meta["parity"]["max_abs"].items())


@pytest.mark.unit
@pytest.mark.slow
def test_onnxruntime_reproduces_torch_on_fixed_inputs_at_any_batch(exported: tuple[Path, Path]) -> None:
    # PARITY_TOLERANCE (policy.export) says why 1e-4: fp32 on both sides, different kernels, measured ~1e-7.
    ckpt, folder = exported
    policy, _ = load_checkpoint(ckpt)
    onnx_policy = OnnxPolicy(folder)
    desired, current = fixed_inputs((64, 64), batch=3, seed=5)  # batch 3: the export was traced at 2, checked at 1, 4
    cache = onnx_policy.encode_desired(desired)
    with torch.no_grad():
        ref_cache = policy.encode_desired(torch.from_numpy(desired).permute(0, 3, 1, 2).float() / 255.0)
        ref = policy(torch.from_numpy(current).permute(0, 3, 1, 2).float() / 255.0, ref_cache)
    np.testing.assert_allclose(cache["desired_tokens"], ref_cache.tokens.numpy(), atol=1e-4)
    got = onnx_policy.step(current, cache)
    assert got.velocity.shape == (3, 6) and got.grid == (4, 4)
    assert np.abs(got.velocity - ref.vel.double().numpy()).max() <= PARITY_TOLERANCE["velocity"]
    assert np.abs(got.gravity_cur - ref.gravity_cur.double().numpy()).max() <= PARITY_TOLERANCE["gravity_cur"]
    assert np.abs(got.gravity_des - ref.gravity_des.double().numpy()).max() <= PARITY_TOLERANCE["gravity_des"]
    conf = ref.confidence.double().mean(dim=1).numpy()
    assert np.abs(got.confidence - conf).max() <= PARITY_TOLERANCE["confidence"]
    # A network that moved (another seed) is not within the tolerance: the comparison can fail.
    assert np.abs(got.velocity - ref.vel.double().numpy() * 1.01).max() > PARITY_TOLERANCE["velocity"]


@pytest.mark.unit
@pytest.mark.slow
def test_a_cached_desired_stream_exports_its_layers_once_per_goal(tmp_path: Path) -> None:
    torch.manual_seed(0)
    policy = build_policy(load_config("smoke", [*TINY, "policy.transformer.cache_desired=true"]).policy).eval()
    folder = export_policy(policy, tmp_path / "onnx")  # checks parity at batch 1 and 4 itself, or raises
    step = json.loads((folder / SIDECAR).read_text())["graphs"]["step"]
    assert step["inputs"][1] == {"name": "desired_tokens", "dtype": "float32", "shape": [1, 2, 16, 32]}  # depth 1 + 1
    desired, current = fixed_inputs((64, 64), batch=3, seed=5)
    onnx_policy = OnnxPolicy(folder)
    got = onnx_policy.step(current, onnx_policy.encode_desired(desired))
    with torch.no_grad():
        ref = policy(
            torch.from_numpy(current).permute(0, 3, 1, 2) / 255.0, torch.from_numpy(desired).permute(0, 3, 1, 2) / 255.0
        )
    assert np.abs(got.velocity - ref.vel.double().numpy()).max() <= PARITY_TOLERANCE["velocity"]


@pytest.mark.unit
@pytest.mark.slow
@pytest.mark.parametrize("switch_threshold", [0.1, 1e-9], ids=["pbvs-latched", "hybrid"])
def test_servo_on_the_exported_graphs_gives_torch_servos_outputs(
    exported: tuple[Path, Path], switch_threshold: float
) -> None:
    servo_cfg = load_checkpoint(exported[0])[0].cfg.servo.model_copy(update={"switch_threshold": switch_threshold})
    torch_servo, onnx_servo, cur = _servos(exported, cfg=servo_cfg)
    assert onnx_servo.rot90 and onnx_servo.focal_scale == pytest.approx(torch_servo.focal_scale)
    modes, turns = set(), set()
    for rgb in cur + cur[::-1]:  # several steps: the turn in use and the latch carry over
        a, b = torch_servo.step(rgb), onnx_servo.step(rgb)
        modes.add(b.mode)
        turns.add(b.turn)
        assert (a.ok, a.mode, a.turn, a.arrived) == (b.ok, b.mode, b.turn, b.arrived)
        np.testing.assert_allclose(b.velocity_unit, a.velocity_unit, atol=PARITY_TOLERANCE["velocity"])
        np.testing.assert_allclose(b.velocity, a.velocity, atol=1e-3)  # denormalised (d* 0.8) and through the law
        np.testing.assert_allclose(b.command, a.command, atol=2e-3)
        np.testing.assert_allclose(b.gravity_cur, a.gravity_cur, atol=0.02)  # pixels: 1e-3 patch x 16 px
        assert b.confidence == pytest.approx(a.confidence, abs=1e-4)
    assert onnx_servo.steps == torch_servo.steps == 8
    # The hybrid law and a turned image (its velocity and gravity centre mapped back) were on the path compared.
    assert modes == ({"pbvs"} if switch_threshold > 1e-3 else {"hybrid"}) and turns != {0}


@pytest.mark.unit
@pytest.mark.slow
def test_the_onnx_servo_guards_fire_as_the_torch_ones_do(exported: tuple[Path, Path], monkeypatch) -> None:  # type: ignore[no-untyped-def]
    torch_servo, onnx_servo, cur = _servos(exported, max_linear=1e-3, max_angular=2e-3)
    a, b = torch_servo.step(cur[0]), onnx_servo.step(cur[0])
    assert np.linalg.norm(b.velocity[:3]) <= 1e-3 + 1e-12 and np.linalg.norm(b.velocity[3:]) <= 2e-3 + 1e-12
    np.testing.assert_allclose(b.velocity, a.velocity, atol=1e-6)  # both clamped the same way
    with pytest.raises(ValueError, match="like the desired image"):
        onnx_servo.step(cur[0][:, :40])
    with pytest.raises(ValueError, match="rgb: expected a uint8"):
        onnx_servo.step(cur[0].astype(np.float32))
    with pytest.raises(ValueError, match=r"expected uint8 RGB images \(B, 64, 64, 3\)"):
        onnx_servo.policy.step(cur[0], onnx_servo.cache)  # the graph's own check, for callers without Servo

    real_step = OnnxPolicy.step

    def broken(self, rgb, cache):  # type: ignore[no-untyped-def]
        out = real_step(self, rgb, cache)
        return type(out)(out.velocity * np.nan, out.gravity_cur, out.gravity_des, out.confidence, out.grid)

    monkeypatch.setattr(OnnxPolicy, "step", broken)
    out = onnx_servo.step(cur[1])
    assert not out.ok and np.array_equal(out.velocity, np.zeros(6)) and np.array_equal(out.command, np.zeros(6))
    assert onnx_servo.below_stop == 0


@pytest.mark.unit
@pytest.mark.slow
def test_a_policy_that_does_not_fit_the_runtime_is_named(exported: tuple[Path, Path]) -> None:
    ckpt, folder = exported
    des, _ = _images(2)
    K = Camera.from_focal(70.0, 80, 60).K
    policy, _ = load_checkpoint(ckpt)
    with pytest.raises(TypeError, match="runtime='onnx'"):
        Servo(folder, des, K, 1.0)
    with pytest.raises(TypeError, match="export folder"):
        Servo(policy, des, K, 1.0, runtime="onnx")
    with pytest.raises(ValueError, match="runtime must be one of"):
        Servo(policy, des, K, 1.0, runtime="tensorrt")


def _copy(folder: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "copy"
    shutil.copytree(folder, dst)
    return dst


def _rewrite_sidecar(folder: Path, edit) -> None:  # type: ignore[no-untyped-def]
    meta = json.loads((folder / SIDECAR).read_text())
    edit(meta)
    (folder / SIDECAR).write_text(json.dumps(meta))


@pytest.mark.unit
@pytest.mark.slow
def test_a_folder_whose_graphs_and_sidecar_disagree_is_refused(exported: tuple[Path, Path], tmp_path: Path) -> None:
    from policy.onnx_policy import sha256_file

    _, folder = exported
    damaged = _copy(folder, tmp_path / "a")
    with open(damaged / STEP, "r+b") as f:
        f.truncate(1000)
    with pytest.raises(ExportMismatchError, match=r"step\.onnx is not the graph export\.json describes"):
        OnnxPolicy(damaged)

    other_size = _copy(folder, tmp_path / "b")
    _rewrite_sidecar(other_size, lambda m: m.update(input_size=[128, 128], grid=[8, 8]))
    with pytest.raises(ExportMismatchError, match="contradicts itself"):
        OnnxPolicy(other_size)

    # Graphs swapped (the encoder under the step graph's name) with a sidecar whose checksum was made to fit: the
    # graph's own inputs give it away.
    swapped = _copy(folder, tmp_path / "c")
    shutil.copyfile(swapped / ENCODER, swapped / STEP)
    _rewrite_sidecar(swapped, lambda m: m["graphs"]["step"].update(sha256=sha256_file(swapped / STEP)))
    with pytest.raises(ExportMismatchError, match=r"inputs .* differ from those export\.json records"):
        OnnxPolicy(swapped)

    missing = _copy(folder, tmp_path / "d")
    (missing / SIDECAR).unlink()
    with pytest.raises(FileNotFoundError, match="not an ONNX export"):
        OnnxPolicy(missing)


@pytest.mark.integration
@pytest.mark.slow
def test_servo_runs_the_exported_graphs_in_a_process_without_torch(exported: tuple[Path, Path]) -> None:
    _, folder = exported
    code = (
        "import sys\n"
        "sys.modules['torch'] = None  # any import of torch now fails\n"
        "import numpy as np\n"
        "from policy import Servo\n"
        "rng = np.random.default_rng(0)\n"
        "des = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)\n"
        "K = np.array([[64.0, 0, 32], [0, 64, 32], [0, 0, 1]])\n"
        f"servo = Servo({str(folder)!r}, des, K, 1.0, runtime='onnx')\n"
        "out = servo.step(np.roll(des, 3, axis=1))\n"
        "print(out.ok, np.all(np.isfinite(out.velocity)), out.turn in (0, 1, 2, 3))\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.split() == ["True", "True", "True"]


@pytest.mark.integration
def test_importing_policy_loads_neither_onnxruntime_nor_onnx() -> None:
    code = "import policy, policy.servo, policy.onnx_policy\nfrom policy import Servo"
    assert modules_after(code, ["onnxruntime", "onnx", "onnxscript", "torch"]) == []


@pytest.mark.unit
def test_without_onnxruntime_the_error_names_the_package(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(ModuleNotFoundError, match="pip install onnxruntime"):
        import_onnxruntime()


@pytest.mark.unit
def test_export_refuses_bad_arguments_and_a_folder_that_is_not_an_export(tmp_path: Path) -> None:
    policy = _tiny_policy()
    with pytest.raises(ValueError, match="opset"):
        export_policy(policy, tmp_path / "x", opset=11)
    with pytest.raises(ValueError, match="exporter"):
        export_policy(policy, tmp_path / "x", exporter="tensorrt")
    keep = tmp_path / "work"
    keep.mkdir()
    (keep / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not an ONNX export"):
        export_policy(policy, keep)
    assert (keep / "notes.txt").read_text() == "mine"


@pytest.mark.unit
def test_a_failed_export_leaves_nothing_visible(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import policy.export as export

    def half_written(module, args, path, *rest):  # type: ignore[no-untyped-def]
        Path(path).write_bytes(b"half a graph")
        raise RuntimeError("exporter died")

    monkeypatch.setattr(export, "_to_onnx", half_written)
    out = tmp_path / "out"
    with pytest.raises(RuntimeError, match="exporter died"):
        export_policy(_tiny_policy(), out)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.unit
def test_the_exporter_falls_back_to_torchscript_and_names_both_failures(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import policy.export as export

    calls: list[bool] = []

    def fake_export(*args, dynamo: bool, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(dynamo)
        raise RuntimeError(f"{'dynamo' if dynamo else 'jit'} cannot")

    monkeypatch.setattr(torch.onnx, "export", fake_export)
    module, args = torch.nn.Identity(), (torch.zeros(2, 3),)
    with pytest.raises(RuntimeError, match=r"dynamo: RuntimeError: dynamo cannot; torchscript: RuntimeError: jit"):
        export._to_onnx(module, args, tmp_path / "g.onnx", ["x"], ["y"], 18, "auto")
    assert calls == [True, False]

    def torchscript_only(*args, dynamo: bool, **kwargs):  # type: ignore[no-untyped-def]
        if dynamo:
            raise RuntimeError("dynamo cannot")
        Path(args[2]).write_bytes(b"graph")

    monkeypatch.setattr(torch.onnx, "export", torchscript_only)
    with pytest.warns(UserWarning, match="used the TorchScript one"):
        assert export._to_onnx(module, args, tmp_path / "g.onnx", ["x"], ["y"], 18, "auto") == "torchscript"
    with pytest.raises(RuntimeError, match=r"export\(dynamo=True\) failed"):
        export._to_onnx(module, args, tmp_path / "g.onnx", ["x"], ["y"], 18, "dynamo")


@pytest.mark.unit
def test_the_cli_names_a_source_that_is_neither_a_checkpoint_nor_shipped(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    assert main([str(tmp_path / "nothing"), "--out", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert "neither a checkpoint folder nor a shipped policy" in err and "cnsv2-cpu" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.integration
@pytest.mark.slow
def test_the_benchmark_runs_cnsv2_on_its_export_as_on_torch(exported, tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from configs.loader import ConfigError
    from evaluation.plan import make_plan, prepare_export
    from evaluation.runner import run_jobs
    from tests.fixtures.factories import small_overrides

    ckpt, folder = exported

    def plan(checkpoint: Path, root: str, *extra: str):  # type: ignore[no-untyped-def]
        args = ["eval.wandb.mode=disabled", "eval.workers=0", "eval.suites=[canonical]", "eval.controllers=[cnsv2]"]
        args += ["eval.episodes=1", "sim.env.max_steps=6", f"eval.checkpoint={checkpoint}", *extra]
        return make_plan("smoke", small_overrides(*args, root=tmp_path / root))

    ((_, torch_ep),) = run_jobs(*plan(ckpt, "torch"))
    cfg, onnx_plan = plan(folder, "onnx", "eval.runtime=onnx")
    ((_, onnx_ep),) = run_jobs(cfg, onnx_plan)
    assert onnx_plan.export == str(folder.resolve())  # an export folder runs as it is
    assert onnx_ep.steps == torch_ep.steps and onnx_ep.reason == torch_ep.reason
    # The graphs agree with torch to ~1e-6; six closed-loop steps (each image rendered from the pose the last step
    # reached) left 5 um between the two runs' final positions.
    assert onnx_ep.te_m == pytest.approx(torch_ep.te_m, abs=1e-4)
    assert onnx_ep.re_deg == pytest.approx(torch_ep.re_deg, abs=1e-2)
    # A checkpoint is exported once per run, under eval.root (the export itself is the CLI's, tested above).
    exports: list[tuple[str, Path]] = []

    def export_source(source: str, out: Path, **kwargs: object) -> Path:
        exports.append((source, Path(out)))
        shutil.copytree(folder, out)
        return Path(out)

    monkeypatch.setattr("policy.export.export_source", export_source)
    cfg, from_ckpt = plan(ckpt, "exported", "eval.runtime=onnx")
    prepare_export(cfg, from_ckpt)
    prepare_export(cfg, from_ckpt)
    assert exports == [(str(ckpt.resolve()), Path(cfg.eval.root) / "onnx")]
    assert from_ckpt.export == str(Path(cfg.eval.root) / "onnx")
    cfg, on_torch = plan(ckpt, "torch")
    prepare_export(cfg, on_torch)
    assert on_torch.export is None  # the torch runtime exports nothing
    with pytest.raises(ConfigError, match=r"eval\.device: cpu"):
        plan(ckpt, "cuda", "eval.runtime=onnx", "eval.device=cuda")
