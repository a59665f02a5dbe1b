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
