"""Servo's wiring, pinned where its other tests leave it loose: the non-finite path's report, the switch and turn
boundaries, the focal scale, the step count, and the ONNX branch (on a torch-backed stand-in of `OnnxPolicy`, since
an export takes seconds)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from configs import load_config
from policy import Servo, build_policy
from policy.onnx_policy import NetworkStep, OnnxPolicy
from sim.camera import Camera

pytestmark = pytest.mark.unit

W = 128  # the smoke network's input here: 16 px patches, an 8 x 8 grid
K = Camera.canonical(W).K


def _policy(*overrides: str):  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    return build_policy(load_config("smoke", [f"policy.input_size=[{W},{W}]", *overrides]).policy)


def _images(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (W, W, 3), dtype=np.uint8), rng.integers(0, 256, (W, W, 3), dtype=np.uint8)


def _predict(monkeypatch, policy, unit, g_cur, g_des, confidences=None) -> None:  # type: ignore[no-untyped-def]
    """The network predicts `unit`, the gravity centres (patch units) and, per batch row, `confidences`."""
    original = type(policy).forward

    def fixed(self, c, d):  # type: ignore[no-untyped-def]
        out = original(self, c, d)
        out.vel = torch.as_tensor(np.asarray(unit), dtype=out.vel.dtype).expand_as(out.vel).clone()
        out.gravity_cur = torch.as_tensor(g_cur, dtype=out.gravity_cur.dtype).expand_as(out.gravity_cur).clone()
        out.gravity_des = torch.as_tensor(g_des, dtype=out.gravity_des.dtype).expand_as(out.gravity_des).clone()
        if confidences is not None:
            c = torch.tensor(next(confidences), dtype=out.confidence.dtype)[:, None]
            out.confidence = c.expand_as(out.confidence).contiguous()
        return out

    monkeypatch.setattr(type(policy), "forward", fixed)


def _caller_px(g_patch: np.ndarray, patch: int) -> np.ndarray:
    return (g_patch + 0.5) * patch - 0.5  # the canonical camera at the input size: network pixels are the caller's


@pytest.mark.parametrize(("hybrid", "mode"), [(True, "hybrid"), (False, "pbvs")])
def test_a_non_finite_step_reports_the_raw_prediction_and_the_gravity_centres(monkeypatch, hybrid, mode) -> None:  # type: ignore[no-untyped-def]
    policy = _policy(f"policy.servo.hybrid={str(hybrid).lower()}")
    unit = np.array([0.125, np.nan, 0.0, 0.0, 0.0, 0.25])  # exact in float32, the network's dtype
    g_cur, g_des = np.array([2.0, 5.0]), np.array([4.0, 1.0])
    _predict(monkeypatch, policy, unit, g_cur, g_des)
    des, cur = _images()
    out = Servo(policy, des, K, scene_scale=1.0).step(cur)
    assert (out.ok, out.mode, out.turn, out.arrived) == (False, mode, 0, False)
    np.testing.assert_array_equal(out.velocity_unit, unit)  # what the network said, NaN where it said NaN
    np.testing.assert_array_equal(out.velocity, np.zeros(6))
    np.testing.assert_array_equal(out.command, np.zeros(6))
    np.testing.assert_allclose(out.gravity_cur, _caller_px(g_cur, policy.patch), atol=1e-9)
    np.testing.assert_allclose(out.gravity_des, _caller_px(g_des, policy.patch), atol=1e-9)
    assert isinstance(out.confidence, float) and 0.0 <= out.confidence <= 1.0


def test_a_non_finite_prediction_in_a_turned_view_is_reported_not_raised(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    # Mapping a turned velocity back (velocity_from_turned) refuses NaN; the step must report it as not ok instead.
    policy = _policy("policy.rot90=true", "policy.servo.hybrid=false")
    unit = np.array([np.nan, 0.0, 0.0, 0.0, 0.0, 0.125])
    _predict(monkeypatch, policy, unit, np.ones(2), np.ones(2), iter([[0.1, 0.9, 0.1, 0.1]]))
    des, cur = _images()
    out = Servo(policy, des, K, scene_scale=1.0).step(cur)
    assert not out.ok and out.turn == 1
    np.testing.assert_array_equal(out.velocity_unit, unit)


# switch_threshold 0.25 on the 8 x 8 grid: the gravity centres meet below 0.25 * sqrt(8 * 8) = 2 patches.
@pytest.mark.parametrize(
    ("g_cur", "g_des", "latched"),
    [
        ([3.0, 1.0], [5.0, 1.0], False),  # exactly 2 patches apart: not below the threshold
        ([3.0, 1.0], [4.5, 1.0], True),  # 1.5 apart (though |g_cur + g_des| = 7.6)
        ([6.0, 6.5], [6.0, 5.0], True),
        ([1.0, 1.0], [1.0, 3.5], False),
    ],
)
def test_the_switch_to_pbvs_is_at_the_threshold_times_the_grid_size(monkeypatch, g_cur, g_des, latched) -> None:  # type: ignore[no-untyped-def]
    limits = ("policy.servo.max_linear=1e3", "policy.servo.max_angular=1e3")
    policy = _policy("policy.servo.switch_threshold=0.25", *limits)
    _predict(monkeypatch, policy, np.array([0.05, 0.0, 0.0, 0.0, 0.0, 0.0]), np.array(g_cur), np.array(g_des))
    des, cur = _images()
    servo = Servo(policy, des, K, scene_scale=1.0)
    out = servo.step(cur)
    assert servo.pbvs_latched is latched
    if latched:
        assert out.mode == "pbvs"


def test_a_turn_in_use_stays_when_another_is_exactly_the_hysteresis_better(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    # 0.625 = 0.5 x (1 + 0.25), exact in float32 and float64: "clearly better" means strictly more than that.
    policy = _policy("policy.rot90=true", "policy.servo.hybrid=false", "policy.servo.turn_hysteresis=0.25")
    confidences = iter([[0.1, 0.5, 0.1, 0.1], [0.1, 0.5, 0.625, 0.1], [0.1, 0.5, 0.626, 0.1]])
    _predict(monkeypatch, policy, np.zeros(6), np.ones(2), np.ones(2), confidences)
    des, cur = _images()
    servo = Servo(policy, des, K, scene_scale=1.0)
    assert [servo.step(cur).turn for _ in range(3)] == [1, 1, 2]
    assert servo.steps == 3


def test_the_focal_scale_enters_the_denormalisation(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from policy.control import denormalize_velocity

    policy = _policy("policy.servo.hybrid=false", "policy.servo.max_linear=1e3", "policy.servo.max_angular=1e3")
    unit = np.array([0.1, -0.05, 0.2, 0.03, -0.02, 0.1])
    _predict(monkeypatch, policy, unit, np.ones(2), np.ones(2))
    des, cur = _images()
    servo = Servo(policy, des, Camera.canonical(W, focal_scale=0.5).K, scene_scale=1.5)
    out = servo.step(cur)
    np.testing.assert_allclose(out.velocity, denormalize_velocity(unit, 1.5, 0.5), atol=1e-6)
    assert np.abs(out.velocity - denormalize_velocity(unit, 1.5, 1.0)).max() > 1e-3


def test_the_step_count_counts_steps_and_restart_clears_it(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    policy = _policy("policy.servo.hybrid=false")
    _predict(monkeypatch, policy, np.full(6, 0.1), np.ones(2), np.ones(2))
    des, cur = _images()
    servo = Servo(policy, des, K, scene_scale=1.0)
    for n in (1, 2, 3):
        servo.step(cur)
        assert servo.steps == n
    servo.restart()
    assert servo.steps == 0


class TorchBackedOnnx(OnnxPolicy):
    """An `OnnxPolicy` whose graphs are the torch module itself, with the ONNX interface: uint8 numpy batches in,
    numpy out. It lets Servo's ONNX branch (numpy quarter turns, the cache passed through) be compared with its torch
    branch without exporting."""

    def __init__(self, policy, confidences=None) -> None:  # type: ignore[no-untyped-def]
        self.torch_policy, self.cfg, self.patch = policy.eval(), policy.cfg, policy.patch
        self.input_size = tuple(policy.cfg.input_size)
        self.threads_set: list[int] = []
        self.seen: list[np.ndarray] = []  # the current-image batches step was given
        self.confidences = confidences  # an iterator of per-row confidences to report instead of the network's

    def set_threads(self, threads: int) -> int:
        self.threads_set.append(threads)
        return threads

    def encode_desired(self, rgb: np.ndarray):  # type: ignore[no-untyped-def]
        from policy.network import images_to_tensor

        assert rgb.shape == (1, *self.input_size[::-1], 3), rgb.shape  # one goal, as a batch
        with torch.inference_mode():
            return self.torch_policy.encode_desired(images_to_tensor(rgb))

    def step(self, rgb: np.ndarray, cache) -> NetworkStep:  # type: ignore[no-untyped-def]
        from policy.network import images_to_tensor

        self.seen.append(rgb)
        with torch.inference_mode():
            out = self.torch_policy(images_to_tensor(rgb), cache)
        f64 = lambda t: t.double().numpy()  # noqa: E731
        confidence = f64(out.confidence.mean(dim=1))
        if self.confidences is not None:
            confidence = np.array(next(self.confidences), dtype=np.float64)
        return NetworkStep(f64(out.vel), f64(out.gravity_cur), f64(out.gravity_des), confidence, out.grid)


@pytest.mark.parametrize(("rot90", "every"), [(False, 1), (True, 1), (True, 2)])
def test_the_onnx_branch_sees_the_same_turned_images_as_the_torch_branch(rot90: bool, every: int) -> None:
    from policy.rotation import turn_image

    overrides = (f"policy.rot90={str(rot90).lower()}", f"policy.servo.turn_search_every={every}")
    policy = _policy(*overrides, "policy.servo.hybrid=false")
    des, cur = _images(3)
    on_torch = Servo(policy, des, K, scene_scale=1.0, threads=1)
    stand_in = TorchBackedOnnx(policy)
    on_onnx = Servo(stand_in, des, K, scene_scale=1.0, threads=1, runtime="onnx")
    assert (on_torch.runtime, on_onnx.runtime) == ("torch", "onnx")
    assert on_onnx.threads == 1 and stand_in.threads_set == [1]
    for _ in range(3):
        a, b = on_torch.step(cur), on_onnx.step(cur)
        assert a.turn == b.turn
        np.testing.assert_allclose(b.velocity_unit, a.velocity_unit, atol=1e-6)
        np.testing.assert_allclose(b.gravity_cur, a.gravity_cur, atol=1e-4)
        assert b.confidence == pytest.approx(a.confidence, abs=1e-6)
    batch = stand_in.seen[0]
    assert batch.shape == ((4 if rot90 else 1), W, W, 3)  # the four quarter turns only with rot90
    for k in range(batch.shape[0]):
        np.testing.assert_array_equal(batch[k], turn_image(batch[0], k))
    if every == 2:  # the step between searches: the turn in use alone
        np.testing.assert_array_equal(stand_in.seen[1], turn_image(batch[0], b.turn)[None])


def test_the_controller_runs_an_onnx_policy_on_the_onnx_runtime() -> None:
    from policy.servo import ServoController

    policy = _policy("policy.servo.hybrid=false")
    des, cur = _images(4)
    on_torch, on_onnx = ServoController(policy), ServoController(TorchBackedOnnx(policy))
    for ctrl in (on_torch, on_onnx):
        ctrl.reset(des, K, 1.0)
    assert on_torch.servo.runtime == "torch" and on_onnx.servo.runtime == "onnx"  # type: ignore[union-attr]
    np.testing.assert_allclose(on_onnx.step(cur).velocity, on_torch.step(cur).velocity, atol=1e-6)


def test_runtime_onnx_takes_an_export_folder_and_names_what_is_missing(tmp_path) -> None:
    des, _ = _images()
    with pytest.raises(FileNotFoundError, match="no-export"):
        Servo(tmp_path / "no-export", des, K, scene_scale=1.0, runtime="onnx")
    with pytest.raises(TypeError, match="runtime='onnx'"):
        Servo(tmp_path / "no-export", des, K, scene_scale=1.0)  # a folder is an export: torch cannot run it


def test_between_turn_searches_only_the_turn_in_use_runs(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from policy.network import CNSv2Policy
    from policy.rotation import turn_images

    policy = _policy("policy.rot90=true", "policy.servo.hybrid=false", "policy.servo.turn_search_every=3")
    seen: list[torch.Tensor] = []
    real_forward = CNSv2Policy.forward

    def forward(self, x, cache):  # type: ignore[no-untyped-def]
        seen.append(x.clone())
        return real_forward(self, x, cache)

    monkeypatch.setattr(CNSv2Policy, "forward", forward)
    des, cur = _images(5)
    servo = Servo(policy, des, K, scene_scale=1.0)
    outs = [servo.step(cur) for _ in range(7)]
    assert [x.shape[0] for x in seen] == [4, 1, 1, 4, 1, 1, 4]  # a search on steps 0, 3 and 6
    turn = outs[0].turn
    assert all(o.turn == turn for o in outs)  # the same image every step: the search keeps its turn
    torch.testing.assert_close(seen[1], turn_images(seen[0][:1], turn))  # the held turn's image
    for held in outs[1:3]:  # the held turn alone gives what it gave inside the search's batch
        np.testing.assert_allclose(held.velocity_unit, outs[0].velocity_unit, atol=1e-5)
        assert held.confidence == pytest.approx(outs[0].confidence, abs=1e-6)
    servo.restart()
    servo.step(cur)
    assert seen[-1].shape[0] == 4  # no turn in use after a restart: a search


def test_a_search_can_change_the_turn_between_held_steps(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    policy = _policy("policy.rot90=true", "policy.servo.hybrid=false", "policy.servo.turn_search_every=2")
    # Rows: a search (4 turns), a held step (1), a search that finds turn 3 clearly better, a held step.
    confidences = iter([[0.1, 0.6, 0.2, 0.1], [0.6], [0.1, 0.5, 0.2, 0.9], [0.9]])
    _predict(monkeypatch, policy, np.zeros(6), np.ones(2), np.ones(2), confidences)
    des, cur = _images()
    servo = Servo(policy, des, K, scene_scale=1.0)
    assert [servo.step(cur).turn for _ in range(4)] == [1, 1, 3, 3]


# A search that finds turn 1 (rows 0-3), then a step between searches: only turn 1 runs, on its turned image.
HELD_ONE = [[0.1, 0.9, 0.1, 0.1], [0.9]]


def test_the_turn_held_between_searches_runs_on_its_turned_image(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from policy.rotation import turn_image, turn_images

    policy = _policy("policy.rot90=true", "policy.servo.hybrid=false", "policy.servo.turn_search_every=2")
    seen: list[torch.Tensor] = []
    original = type(policy).forward

    def spy(self, x, cache):  # type: ignore[no-untyped-def]
        seen.append(x.clone())
        return original(self, x, cache)

    monkeypatch.setattr(type(policy), "forward", spy)
    _predict(monkeypatch, policy, np.zeros(6), np.ones(2), np.ones(2), iter(HELD_ONE))
    des, cur = _images(7)
    servo = Servo(policy, des, K, scene_scale=1.0)
    assert [servo.step(cur).turn for _ in range(2)] == [1, 1]
    assert seen[1].shape[0] == 1
    torch.testing.assert_close(seen[1], turn_images(seen[0][:1], 1))  # torch: the held turn's image
    monkeypatch.undo()  # the stand-in's network is the real forward; its confidences come from HELD_ONE below

    stand_in = TorchBackedOnnx(_policy("policy.rot90=true", "policy.servo.turn_search_every=2"), iter(HELD_ONE))
    on_onnx = Servo(stand_in, des, K, scene_scale=1.0, runtime="onnx")
    assert [on_onnx.step(cur).turn for _ in range(2)] == [1, 1]
    np.testing.assert_array_equal(stand_in.seen[1], turn_image(stand_in.seen[0][0], 1)[None])  # onnx: the same


def test_the_onnx_branch_takes_a_non_square_image_without_quarter_turns() -> None:
    # Quarter turns need a square image; without rot90 the image goes in as it is, whatever its aspect.
    policy = _policy("policy.input_size=[128,96]", "policy.servo.hybrid=false")
    rng = np.random.default_rng(9)
    des, cur = (rng.integers(0, 256, (96, 128, 3), dtype=np.uint8) for _ in range(2))
    K_wide = Camera.canonical(128, 96).K
    a = Servo(policy, des, K_wide, scene_scale=1.0).step(cur)
    stand_in = TorchBackedOnnx(policy)
    b = Servo(stand_in, des, K_wide, scene_scale=1.0, runtime="onnx").step(cur)
    assert stand_in.seen[0].shape == (1, 96, 128, 3)
    np.testing.assert_allclose(b.velocity_unit, a.velocity_unit, atol=1e-6)
