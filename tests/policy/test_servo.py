"""The closed-loop Servo API: units, modes, resizing, clamping and failure handling."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from configs import load_config
from policy import Servo, build_policy
from policy.control import denormalize_velocity
from sim import ServoEnv
from sim.camera import Camera

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def episode() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    with ServoEnv(load_config("smoke", ["sim.camera.width=128", "sim.camera.height=128"]).sim) as env:
        cur = env.reset(3)
        return env.desired_frame().rgb, cur.rgb, env.camera.K


def _policy(*overrides: str):  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    return build_policy(load_config("smoke", ["policy.input_size=[128,128]", *overrides]).policy)


def test_step_returns_a_real_velocity_and_diagnostics(episode) -> None:  # type: ignore[no-untyped-def]
    des, cur, K = episode
    servo = Servo(_policy(), des, K, scene_scale=1.0)
    out = servo.step(cur)
    assert out.ok and out.velocity.shape == (6,) and np.all(np.isfinite(out.velocity))
    assert out.mode in ("hybrid", "pbvs")
    assert out.gravity_cur.shape == (2,) and out.gravity_des.shape == (2,)
    assert np.all((out.gravity_cur >= -0.5) & (out.gravity_cur <= 127.5))
    assert 0.0 <= out.confidence <= 1.0
    cfg = servo.cfg
    assert np.linalg.norm(out.velocity[:3]) <= cfg.max_linear + 1e-9
    assert np.linalg.norm(out.velocity[3:]) <= cfg.max_angular + 1e-9


def test_pbvs_mode_is_the_denormalised_prediction(episode) -> None:  # type: ignore[no-untyped-def]
    des, cur, K = episode
    policy = _policy("policy.servo.hybrid=false", "policy.servo.max_linear=1e6", "policy.servo.max_angular=1e6")
    aware = Servo(policy, des, K, scene_scale=2.0).step(cur)
    assert aware.mode == "pbvs"
    np.testing.assert_allclose(aware.velocity, denormalize_velocity(aware.velocity_unit, 2.0, 1.0), atol=1e-12)
    unaware = Servo(policy, des, K, scene_scale=2.0, cfg=policy.cfg.servo.model_copy(update={"aware": False}))
    out = unaware.step(cur)
    np.testing.assert_allclose(out.velocity, out.velocity_unit, atol=1e-12)
    np.testing.assert_allclose(aware.velocity[:3], 2.0 * out.velocity[:3], rtol=1e-5, atol=1e-7)


def test_switches_to_pbvs_once_the_gravity_centres_meet(episode) -> None:  # type: ignore[no-untyped-def]
    des, cur, K = episode
    policy = _policy("policy.servo.switch_threshold=1e9")  # any distance counts as met
    servo = Servo(policy, des, K, scene_scale=1.0)
    assert servo.step(cur).mode == "pbvs" and servo.pbvs_latched
    hybrid = Servo(_policy("policy.servo.switch_threshold=1e-9"), des, K, scene_scale=1.0)
    assert hybrid.step(cur).mode == "hybrid"


def test_other_image_sizes_are_resized_with_k(episode) -> None:  # type: ignore[no-untyped-def]
    import cv2

    des, cur, K = episode
    big_des = cv2.resize(des, (256, 256), interpolation=cv2.INTER_LINEAR)
    big_cur = cv2.resize(cur, (256, 256), interpolation=cv2.INTER_LINEAR)
    K_big = Camera(K, 128, 128).resize(256, 256).K
    servo = Servo(_policy(), big_des, K_big, scene_scale=1.0)
    assert servo.focal_scale == pytest.approx(1.0, abs=1e-9)  # same view, same canonical focal length
    out = servo.step(big_cur)
    assert out.ok and np.all((out.gravity_cur >= -0.5) & (out.gravity_cur <= 255.5))
    with pytest.raises(ValueError, match="like the desired image"):
        servo.step(cur)


def test_a_wider_lens_is_a_focal_scale(episode) -> None:  # type: ignore[no-untyped-def]
    des, _, _ = episode
    servo = Servo(_policy(), des, Camera.canonical(128, focal_scale=0.5).K, scene_scale=1.0)
    assert servo.focal_scale == pytest.approx(0.5)


def test_non_finite_predictions_give_zero_velocity_and_a_flag(episode, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    des, cur, K = episode
    policy = _policy()
    servo = Servo(policy, des, K, scene_scale=1.0)
    original = type(policy).forward

    def broken(self, c, d):  # type: ignore[no-untyped-def]
        out = original(self, c, d)
        out.vel = out.vel * float("nan")
        return out

    monkeypatch.setattr(type(policy), "forward", broken)
    out = servo.step(cur)
    assert not out.ok and np.array_equal(out.velocity, np.zeros(6))
    from policy.servo import ServoController

    ctrl = ServoController(policy)
    ctrl.reset(des, K, 1.0)
    said = ctrl.step(cur)  # the benchmark's episode record names why the controller failed
    assert not said.ok and "non-finite" in said.info["reason"]


def test_bad_inputs_are_named(episode) -> None:  # type: ignore[no-untyped-def]
    des, cur, K = episode
    with pytest.raises(ValueError, match="desired_rgb"):
        Servo(_policy(), des.astype(np.float32), K, scene_scale=1.0)
    with pytest.raises(ValueError, match="scene_scale"):
        Servo(_policy(), des, K, scene_scale=0.0)
    with pytest.raises(ValueError, match="rgb: expected a uint8"):
        Servo(_policy(), des, K, scene_scale=1.0).step(cur[..., :2])


def test_rot90_runs_the_four_turns_keeps_the_most_confident_and_maps_the_velocity_back(episode, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from policy.network import CNSv2Policy
    from policy.rotation import turn_images, velocity_from_turned

    des, cur, K = episode
    policy = _policy("policy.rot90=true", "policy.servo.hybrid=false", "policy.servo.turn_hysteresis=0.25")
    seen: list[torch.Tensor] = []
    confidences = iter([[0.1, 0.5, 0.2, 0.1], [0.1, 0.5, 0.6, 0.1], [0.1, 0.5, 0.8, 0.1]])
    real_forward = CNSv2Policy.forward

    def forward(self, x, cache):  # type: ignore[no-untyped-def]
        seen.append(x)
        out = real_forward(self, x, cache)
        c = torch.tensor(next(confidences))[:, None].expand_as(out.confidence)
        return type(out)(**{**out.__dict__, "confidence": c.contiguous()})

    monkeypatch.setattr(CNSv2Policy, "forward", forward)
    servo = Servo(policy, des, K, scene_scale=1.0)
    first = servo.step(cur)
    x = seen[0]
    assert x.shape[0] == 4
    for k in range(4):
        assert torch.equal(x[k : k + 1], turn_images(x[:1], k))
    assert first.turn == 1
    with torch.no_grad():
        raw = real_forward(policy, x, servo.cache).vel[1].double().numpy()
    np.testing.assert_allclose(first.velocity_unit, velocity_from_turned(raw, 1), atol=1e-5)
    assert servo.step(cur).turn == 1  # 0.6 is not 25 % above 0.5: the turn in use stays
    assert servo.step(cur).turn == 2  # 0.8 is
    # restart forgets the turn in use (and the step count): 0.6 for turn 1 against 0.55 for turn 2 in use would keep
    # turn 2; after the restart there is no turn in use, so the argmax, turn 1, is taken.
    confidences = iter([[0.1, 0.6, 0.55, 0.1]])
    servo.restart()
    assert servo.steps == 0 and servo.turn is None
    assert servo.step(cur).turn == 1


def _fixed_unit_velocity(monkeypatch, policy, unit: np.ndarray) -> None:  # type: ignore[no-untyped-def]
    """Make the network predict `unit` (normalised, unit world) for every image."""
    original = type(policy).forward

    def fixed(self, c, d):  # type: ignore[no-untyped-def]
        out = original(self, c, d)
        out.vel = torch.as_tensor(unit, dtype=out.vel.dtype).expand_as(out.vel).clone()
        return out

    monkeypatch.setattr(type(policy), "forward", fixed)


def test_arrival_is_the_stop_rule_on_the_unit_velocity_not_the_real_one(episode, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    des, cur, K = episode
    policy = _policy("policy.servo.hybrid=false", "policy.servo.max_linear=1e3", "policy.servo.max_angular=1e3")
    _fixed_unit_velocity(monkeypatch, policy, np.array([0.003, 0.0, 0.0, 0.0, 0.0, 0.0]))
    # d* = 100: the real velocity, 0.3 m/s, is far above stop_velocity; the unit one, 0.003, is below it.
    servo = Servo(policy, des, K, scene_scale=100.0, stop_velocity=0.005, stop_steps=3, gain=2.0)
    outs = [servo.step(cur) for _ in range(4)]
    assert [o.arrived for o in outs] == [False, False, True, True]
    assert outs[0].velocity[0] == pytest.approx(0.3)
    np.testing.assert_allclose(outs[0].command, 2.0 * outs[0].velocity)  # the command is gain x the velocity ...
    assert np.array_equal(outs[2].command, np.zeros(6))  # ... and zero once arrived
    servo.restart()  # a new episode counts again
    assert not servo.step(cur).arrived
    # d* = 0.01: the real velocity (0.0001 m/s) is tiny but the unit one (0.01) is not: never arrived.
    monkeypatch.undo()
    _fixed_unit_velocity(monkeypatch, policy, np.array([0.01, 0.0, 0.0, 0.0, 0.0, 0.0]))
    slow = Servo(policy, des, K, scene_scale=0.01, stop_velocity=0.005, stop_steps=1)
    assert not any(slow.step(cur).arrived for _ in range(3))


def test_command_is_gain_times_the_clamped_velocity(episode, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    des, cur, K = episode
    policy = _policy("policy.servo.hybrid=false")
    _fixed_unit_velocity(monkeypatch, policy, np.array([3.0, 0.0, 4.0, 0.0, 0.0, 0.0]))  # |v| = 5 in the unit world
    servo = Servo(policy, des, K, scene_scale=1.0, gain=3.0, max_linear=0.5, max_angular=1.0)
    out = servo.step(cur)
    assert np.linalg.norm(out.velocity[:3]) == pytest.approx(0.5)  # clamped as a whole twist
    np.testing.assert_allclose(out.command, 3.0 * out.velocity)
    np.testing.assert_allclose(out.velocity_unit, [3.0, 0.0, 4.0, 0.0, 0.0, 0.0], atol=1e-6)  # the raw prediction
    with pytest.raises(ValueError, match="gain"):
        Servo(policy, des, K, scene_scale=1.0, gain=0.0)
    with pytest.raises(ValueError, match="stop_steps"):
        Servo(policy, des, K, scene_scale=1.0, stop_steps=0)


def test_the_stop_rule_travels_with_the_policy_and_an_argument_overrides_it(episode, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    des, cur, K = episode
    policy = _policy("policy.servo.hybrid=false", "policy.servo.stop_velocity=0.05", "policy.servo.stop_steps=2")
    _fixed_unit_velocity(monkeypatch, policy, np.array([0.03, 0.0, 0.0, 0.0, 0.0, 0.0]))  # below 0.05, above 0.005
    own = Servo(policy, des, K, scene_scale=1.0)  # the policy's calibrated rule, as a robot gets it
    assert (own.stop_velocity, own.stop_steps) == (0.05, 2)
    assert [own.step(cur).arrived for _ in range(2)] == [False, True]
    strict = Servo(policy, des, K, scene_scale=1.0, stop_velocity=0.005)  # evaluation's eval.stop_velocity override
    assert (strict.stop_velocity, strict.stop_steps) == (0.005, 2)
    assert not any(strict.step(cur).arrived for _ in range(3))


def test_a_non_finite_step_resets_the_stop_count(episode, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    des, cur, K = episode
    policy = _policy("policy.servo.hybrid=false")
    _fixed_unit_velocity(monkeypatch, policy, np.zeros(6))
    servo = Servo(policy, des, K, scene_scale=1.0, stop_steps=2)
    assert not servo.step(cur).arrived
    monkeypatch.undo()
    _fixed_unit_velocity(monkeypatch, policy, np.full(6, np.nan))
    out = servo.step(cur)
    assert not out.ok and not out.arrived and np.array_equal(out.command, np.zeros(6))
    monkeypatch.undo()
    _fixed_unit_velocity(monkeypatch, policy, np.zeros(6))
    assert [servo.step(cur).arrived for _ in range(2)] == [False, True]


def test_servo_sets_its_thread_count(episode) -> None:  # type: ignore[no-untyped-def]
    from runtime.threads import SERVO_AUTO_THREADS

    des, _, K = episode
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        assert Servo(_policy(), des, K, scene_scale=1.0).threads == SERVO_AUTO_THREADS == torch.get_num_threads()
        assert Servo(_policy(), des, K, scene_scale=1.0, threads=2).threads == 2 == torch.get_num_threads()
        cfg = _policy().cfg.servo.model_copy(update={"threads": 3})
        assert Servo(_policy(), des, K, scene_scale=1.0, cfg=cfg).threads == 3 == torch.get_num_threads()
        with pytest.raises(ValueError, match="threads"):
            Servo(_policy(), des, K, scene_scale=1.0, threads=-1)
    finally:
        torch.set_num_threads(before)


def _fixed_prediction(monkeypatch, policy, unit: np.ndarray, g_cur: np.ndarray, g_des: np.ndarray) -> None:  # type: ignore[no-untyped-def]
    """Make the network predict `unit` and the gravity centres `g_cur`, `g_des` ((x, y) in patch units)."""
    original = type(policy).forward

    def fixed(self, c, d):  # type: ignore[no-untyped-def]
        out = original(self, c, d)
        out.vel = torch.as_tensor(unit, dtype=out.vel.dtype).expand_as(out.vel).clone()
        out.gravity_cur = torch.as_tensor(g_cur, dtype=out.gravity_cur.dtype).expand_as(out.gravity_cur).clone()
        out.gravity_des = torch.as_tensor(g_des, dtype=out.gravity_des.dtype).expand_as(out.gravity_des).clone()
        return out

    monkeypatch.setattr(type(policy), "forward", fixed)


def test_hybrid_mode_is_the_hybrid_law_of_the_true_pose_and_gravity_point(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """A network that predicts the truth: the PBVS velocity of a known dTc and the projections of one scene point at
    depth d* in the desired camera. Servo's hybrid output must then be `policy.control.hybrid` of that pose, the
    point's current normalised position and true depth, and its desired position (paper Eq. 24)."""
    from policy.control import hybrid, pbvs
    from sim.geometry import exp_so3

    policy = _policy("policy.servo.max_linear=1e3", "policy.servo.max_angular=1e3")
    W, p, d_star = 128, policy.patch, 1.5
    K = np.array([[W, 0.0, W / 2], [0.0, W, W / 2], [0.0, 0.0, 1.0]])  # the canonical camera at the input size
    dTc = np.eye(4)
    dTc[:3, :3] = exp_so3(np.array([0.05, -0.08, 0.12]))
    dTc[:3, 3] = [0.25, -0.15, 0.1]
    x_des = np.array([0.1, -0.05])
    P_c = dTc[:3, :3].T @ (d_star * np.append(x_des, 1.0) - dTc[:3, 3])  # the point in the current camera
    x_cur, Z = P_c[:2] / P_c[2], float(P_c[2])

    def patch(x: np.ndarray) -> np.ndarray:  # normalised -> pixel -> patch units (patch centres at (i + 0.5) p)
        return (K[0, 0] * x + K[0, 2] + 0.5) / p - 0.5

    v_real = pbvs(dTc)
    unit = np.concatenate([v_real[:3] / d_star, v_real[3:]])  # the label convention: [v / d*, w]
    _fixed_prediction(monkeypatch, policy, unit, patch(x_cur), patch(x_des))
    rng = np.random.default_rng(0)
    des, cur = (rng.integers(0, 256, (W, W, 3), dtype=np.uint8) for _ in range(2))
    out = Servo(policy, des, K, scene_scale=d_star).step(cur)
    expected = hybrid(dTc, x_cur, Z, x_des, 1.0)
    assert out.mode == "hybrid"
    np.testing.assert_allclose(out.velocity, expected, atol=1e-5)
    swapped = hybrid(dTc, x_des, Z, x_cur, 1.0)  # the gravity centres exchanged: a different command
    assert np.abs(swapped - expected).max() > 1e-2
    np.testing.assert_allclose(out.gravity_cur, K[:2, :2] @ x_cur + K[:2, 2], atol=1e-4)


@pytest.mark.parametrize(
    ("size", "K"),
    [
        ((256, 256), [[256.0, 0.0, 128.0], [0.0, 256.0, 128.0], [0.0, 0.0, 1.0]]),  # twice the network's input
        ((320, 240), [[300.0, 0.0, 166.0], [0.0, 290.0, 117.5], [0.0, 0.0, 1.0]]),  # fx != fy, off-centre, 4:3
    ],
)
def test_gravity_centres_come_back_in_the_callers_pixels(monkeypatch, size, K) -> None:  # type: ignore[no-untyped-def]
    """A gravity centre the network puts at a pixel of its own camera is the same ray in the caller's camera: the
    caller's pixel K_src K_t^-1 u (both cameras share the centre and orientation)."""
    policy = _policy("policy.servo.hybrid=false")
    p, K = policy.patch, np.array(K)
    g_cur, g_des = np.array([2.3, 5.1]), np.array([4.0, 1.5])  # patch units on the 8 x 8 grid
    _fixed_prediction(monkeypatch, policy, np.zeros(6), g_cur, g_des)
    rng = np.random.default_rng(1)
    des, cur = (rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8) for _ in range(2))
    servo = Servo(policy, des, K, scene_scale=1.0)
    out = servo.step(cur)
    K_t = servo.net_camera.K
    for g, got in ((g_cur, out.gravity_cur), (g_des, out.gravity_des)):
        ray = np.linalg.inv(K_t) @ np.append((g + 0.5) * p - 0.5, 1.0)
        caller = K @ ray
        np.testing.assert_allclose(got, caller[:2] / caller[2], atol=1e-3)
    assert not np.allclose(out.gravity_cur, out.gravity_des)


@pytest.mark.parametrize("d_star", [0.5, 1.5])
def test_hybrid_mode_holds_at_depths_below_and_above_one(monkeypatch, d_star: float) -> None:  # type: ignore[no-untyped-def]
    """Only a gravity point behind the camera (depth <= 0) falls back to PBVS; a depth of 0.5 m is hybrid."""
    from policy.control import hybrid, pbvs

    policy = _policy("policy.servo.max_linear=1e3", "policy.servo.max_angular=1e3")
    W, p = 128, policy.patch
    K = np.array([[W, 0.0, W / 2], [0.0, W, W / 2], [0.0, 0.0, 1.0]])
    dTc = np.eye(4)
    dTc[:3, 3] = [0.3 * d_star, 0.0, 0.0]  # a sideways offset: the gravity centres lie apart, so no PBVS latch yet
    x_des = np.array([0.0, 0.0])
    P_c = dTc[:3, :3].T @ (d_star * np.append(x_des, 1.0) - dTc[:3, 3])
    x_cur, Z = P_c[:2] / P_c[2], float(P_c[2])

    def patch(x: np.ndarray) -> np.ndarray:
        return (K[0, 0] * x + K[0, 2] + 0.5) / p - 0.5

    v = pbvs(dTc)
    _fixed_prediction(monkeypatch, policy, np.concatenate([v[:3] / d_star, v[3:]]), patch(x_cur), patch(x_des))
    img = np.zeros((W, W, 3), np.uint8)
    out = Servo(policy, img, K, scene_scale=d_star).step(img)
    assert out.mode == "hybrid" and Z == pytest.approx(d_star)
    np.testing.assert_allclose(out.velocity, hybrid(dTc, x_cur, Z, x_des, 1.0), atol=1e-5)


# The current camera 2 m ahead of the desired one (past the point at d* = 1), or exactly 1 m: the point at depth 0.
@pytest.mark.parametrize("ahead", [2.0, 1.0])
def test_a_gravity_point_behind_or_beside_the_camera_falls_back_to_pbvs(monkeypatch, ahead: float) -> None:  # type: ignore[no-untyped-def]
    from policy.control import pbvs

    policy = _policy("policy.servo.max_linear=1e3", "policy.servo.max_angular=1e3")
    W = 128
    K = np.array([[W, 0.0, W / 2], [0.0, W, W / 2], [0.0, 0.0, 1.0]])
    dTc = np.eye(4)
    dTc[:3, 3] = [0.0, 0.0, ahead]
    v = pbvs(dTc)
    _fixed_prediction(monkeypatch, policy, v, np.array([1.0, 1.0]), np.array([6.0, 6.0]))
    img = np.zeros((W, W, 3), np.uint8)
    out = Servo(policy, img, K, scene_scale=1.0).step(img)
    assert out.mode == "pbvs"
    np.testing.assert_allclose(out.velocity, v, atol=1e-6)


def test_hybrid_mode_silences_only_the_singular_law_warning(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    # Near the goal the hybrid law is singular by design and Servo falls back quietly; any other warning is news.
    import warnings

    import policy.servo
    from policy.control import SingularLawWarning, hybrid

    def noisy(*args, **kwargs):  # type: ignore[no-untyped-def]
        warnings.warn("singular", SingularLawWarning, stacklevel=2)
        warnings.warn("something else", RuntimeWarning, stacklevel=2)
        return hybrid(*args, **kwargs)

    monkeypatch.setattr(policy.servo, "hybrid", noisy)
    policy_ = _policy()
    _fixed_prediction(monkeypatch, policy_, np.full(6, 0.1), np.array([1.0, 1.0]), np.array([6.0, 6.0]))
    img = np.zeros((128, 128, 3), np.uint8)
    servo = Servo(policy_, img, np.array([[128.0, 0, 64], [0, 128.0, 64], [0, 0, 1]]), scene_scale=1.0)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        assert servo.step(img).mode == "hybrid"
    assert [str(w.message) for w in seen] == ["something else"]


def test_restart_keeps_a_pbvs_only_servo_in_pbvs(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    policy = _policy("policy.servo.hybrid=false")
    _fixed_prediction(monkeypatch, policy, np.full(6, 0.1), np.array([1.0, 1.0]), np.array([6.0, 6.0]))
    img = np.zeros((128, 128, 3), np.uint8)
    servo = Servo(policy, img, np.array([[128.0, 0, 64], [0, 128.0, 64], [0, 0, 1]]), scene_scale=1.0)
    assert servo.step(img).mode == "pbvs"
    servo.restart()
    assert servo.step(img).mode == "pbvs"


@pytest.mark.parametrize(
    ("stop_velocity", "stop_steps"), [(-0.1, 5), (0.01, 0), (0.01, True), (0.01, 2.5), (float("nan"), 5)]
)
def test_a_bad_stop_rule_is_refused(episode, stop_velocity, stop_steps) -> None:  # type: ignore[no-untyped-def]
    des, _, K = episode
    with pytest.raises(ValueError, match="stop_velocity >= 0 and stop_steps >= 1"):
        Servo(_policy(), des, K, scene_scale=1.0, stop_velocity=stop_velocity, stop_steps=stop_steps)


def test_a_zero_stop_velocity_never_arrives(episode, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    des, cur, K = episode
    policy = _policy("policy.servo.hybrid=false")
    _fixed_unit_velocity(monkeypatch, policy, np.zeros(6))  # |v| = 0 is not below 0
    servo = Servo(policy, des, K, scene_scale=1.0, stop_velocity=0.0, stop_steps=1)
    assert not any(servo.step(cur).arrived for _ in range(3))


def test_quarter_turns_need_a_square_input(episode) -> None:  # type: ignore[no-untyped-def]
    des, _, K = episode
    policy = _policy("policy.rot90=true")
    policy.cfg = policy.cfg.model_copy(update={"input_size": (128, 96)})
    with pytest.raises(ValueError, match="rot90 needs a square"):
        Servo(policy, des, K, scene_scale=1.0)


def test_the_controller_hands_servo_its_settings_and_reports_what_servo_says(episode, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from policy.servo import ServoController

    des, cur, K = episode
    policy = _policy("policy.servo.stop_velocity=0.07", "policy.servo.stop_steps=4")
    ctrl = ServoController(policy)  # no stop arguments: the policy's own rule
    assert (ctrl.name, ctrl.stop_velocity, ctrl.stop_steps) == ("cnsv2", 0.07, 4)
    pbvs_only = policy.cfg.servo.model_copy(update={"hybrid": False, "stop_velocity": 0.2, "stop_steps": 2})
    ctrl = ServoController(policy, pbvs_only, gain=3.0)
    assert (ctrl.stop_velocity, ctrl.stop_steps) == (0.07, 4)  # a config's control law never replaces the policy's stop
    ctrl.reset(des, K, 1.0)
    assert ctrl.servo is not None and ctrl.servo.cfg.hybrid is False and ctrl.servo.gain == 3.0
    seen = []
    real = ctrl.servo.step

    def spy(rgb):  # type: ignore[no-untyped-def]
        seen.append(rgb)
        return real(rgb)

    ctrl.servo.step = spy  # type: ignore[method-assign]
    out = ctrl.step(cur)
    assert seen[0] is cur
    expected = real(cur)
    np.testing.assert_allclose(out.velocity, expected.velocity)
    assert set(out.info) == {"mode", "confidence", "velocity_unit", "turn"} and out.info["mode"] == "pbvs"
    np.testing.assert_allclose(out.info["velocity_unit"], expected.velocity_unit)
    assert out.info["turn"] == 0 and 0.0 <= out.info["confidence"] <= 1.0
