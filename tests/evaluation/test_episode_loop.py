"""What `run_episode` does between reset and score, on a stand-in environment whose every view, pose and error is
known: the controller is set up with the desired view, the intrinsics and d*, sees each new observation in turn, its
commands reach the environment at the CNS gain within the speed limits, consecutive failures end the episode, and the
episode records its seed, reason, controller time (on a fake clock, never the wall clock) and trace.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

import evaluation.episodes
from evaluation.episodes import run_episode
from policy.interface import ControlOutput

pytestmark = pytest.mark.unit


class _Env:
    """Desired camera 2 m from the scene centre; each step moves the current camera 0.1 m towards it and lowers the
    pose error by (0.1 m, 5°). Every view is a distinct array; after `max_steps` steps the env ends: "step limit"."""

    def __init__(self, max_steps: int = 50) -> None:
        self.max_steps = max_steps
        self.wTd = np.eye(4)
        self.wTd[:3, 3] = (0.0, 0.0, 2.0)
        self.camera = SimpleNamespace(K=np.array([[50.0, 0, 16], [0, 50.0, 12], [0, 0, 1]]))
        self.scene_scale = 1.7  # not the desired distance either, so a swap of the two shows
        self.desired = SimpleNamespace(rgb=np.full((4, 4, 3), 200, np.uint8))
        self.received: list[np.ndarray] = []

    def reset(self, seed: int) -> SimpleNamespace:
        self.seed, self.k, self.reason = seed, 0, ""
        self.wTc = np.eye(4)
        self.wTc[:3, 3] = (0.0, 1.0, 3.0)
        self.frames = [SimpleNamespace(rgb=np.full((4, 4, 3), 0, np.uint8))]
        return self.frames[0]

    def desired_frame(self) -> SimpleNamespace:
        return self.desired

    def observe(self) -> SimpleNamespace:
        return self.frames[-1]

    def pose_error(self) -> tuple[float, float]:
        return 1.0 - 0.1 * self.k, 60.0 - 5.0 * self.k

    def step(self, vel: np.ndarray) -> SimpleNamespace:
        self.received.append(np.array(vel))
        self.k += 1
        self.wTc = self.wTc.copy()
        self.wTc[2, 3] -= 0.1
        self.frames.append(SimpleNamespace(rgb=np.full((4, 4, 3), self.k, np.uint8)))
        if self.k >= self.max_steps:
            self.reason = "step limit"
        return self.frames[-1]

    @property
    def done(self) -> bool:
        return bool(self.reason)

    @property
    def terminated(self) -> bool:
        return self.reason not in ("", "step limit")


class _Scripted:
    """Returns the scripted (velocity, stop, ok, info) outputs in turn and records what it was given."""

    name = "scripted"

    def __init__(self, outputs: list[ControlOutput], clock: list[float] | None = None) -> None:
        self.outputs, self.clock = outputs, clock
        self.seen: list[np.ndarray] = []

    def reset(self, desired_rgb: np.ndarray, K: np.ndarray, scene_scale: float) -> None:
        self.setup = (desired_rgb, K, scene_scale)

    def step(self, rgb: np.ndarray) -> ControlOutput:
        if self.clock is not None:
            self.clock[0] += 0.25  # each step takes a quarter of a second of (fake) controller time
        self.seen.append(rgb)
        return self.outputs[len(self.seen) - 1]


def _go(v: float = 0.1) -> ControlOutput:
    return ControlOutput(np.array([0.0, 0.0, -v, 0.0, 0.0, 0.0]), False, True, {})


STOP = ControlOutput(np.zeros(6), True, True, {})


def test_the_controller_gets_the_desired_view_k_and_d_star_then_each_new_observation() -> None:
    env, ctrl = _Env(), _Scripted([_go(), _go(), _go(), STOP])
    ep = run_episode(env, ctrl, seed=7)  # type: ignore[arg-type]
    desired_rgb, K, scale = ctrl.setup
    assert desired_rgb is env.desired.rgb and K is env.camera.K and scale == 1.7
    assert [id(f) for f in ctrl.seen] == [id(f.rgb) for f in env.frames]  # the initial view, then one per step
    assert (ep.steps, ep.reason, ep.seed) == (3, "stop", 7) and isinstance(ep.seed, int)
    assert (ep.initial_te_m, ep.initial_re_deg) == (1.0, 60.0)
    assert (ep.te_m, ep.re_deg) == pytest.approx((0.7, 45.0)) and not ep.success


def test_the_trace_holds_every_error_and_camera_centre_and_the_desired_centre() -> None:
    env = _Env()
    ep = run_episode(env, _Scripted([_go(), _go(), STOP]), seed=1)  # type: ignore[arg-type]
    assert ep.trace is not None
    np.testing.assert_allclose(ep.trace.errors, [[1.0, 60.0], [0.9, 55.0], [0.8, 50.0]])
    np.testing.assert_allclose(ep.trace.positions, [[0, 1, 3.0], [0, 1, 2.9], [0, 1, 2.8]])
    assert ep.trace.errors.dtype == ep.trace.positions.dtype == np.float64
    np.testing.assert_array_equal(ep.trace.desired, [0.0, 0.0, 2.0])


def test_commands_run_at_the_cns_gain_and_within_the_speed_limits_in_linear_angular_order() -> None:
    cmd = ControlOutput(np.array([3.0, 0.0, 4.0, 0.0, 0.6, 0.8]), False, True, {})  # |v| = 5 m/s, |w| = 1 rad/s
    env = _Env()
    run_episode(env, _Scripted([cmd, STOP]), seed=0)  # type: ignore[arg-type]
    np.testing.assert_allclose(env.received[0], 2.0 * cmd.velocity)  # CNS executes twice the command
    env = _Env()
    run_episode(env, _Scripted([cmd, STOP]), seed=0, gain=1.5, limits=(0.5, 0.2))  # type: ignore[arg-type]
    # One factor for the whole twist, min(0.5 / 5, 0.2 / 1) = 0.1, so |v| = 0.5 and the screw axis is kept.
    np.testing.assert_allclose(env.received[0], 1.5 * 0.1 * cmd.velocity)


def _fail(reason: str | None = None) -> ControlOutput:
    return ControlOutput(np.zeros(6), False, False, {} if reason is None else {"reason": reason})


def test_only_fail_steps_consecutive_failures_end_the_episode() -> None:
    # Two failures, a success (the count restarts), then three failures: the third in a row ends it, unexecuted.
    env = _Env()
    outs = [_fail(), _fail(), _go(), _fail(), _fail(), _fail("too few matches"), _go()]
    ep = run_episode(env, _Scripted(outs), seed=0, fail_steps=3)  # type: ignore[arg-type]
    assert ep.reason == "controller failed: too few matches" and ep.steps == 5 and not ep.success
    # With one allowed failure the first one ends the episode; a failure without a reason says so.
    ep = run_episode(_Env(), _Scripted([_go(), _fail(), _go()]), seed=0, fail_steps=1)  # type: ignore[arg-type]
    assert (ep.reason, ep.steps) == ("controller failed: no command", 1)
    with pytest.raises(ValueError, match="fail_steps must be >= 1"):
        run_episode(_Env(), _Scripted([STOP]), seed=0, fail_steps=0)  # type: ignore[arg-type]


def test_the_step_limit_is_the_reason_when_the_env_ends_the_episode() -> None:
    ep = run_episode(_Env(max_steps=4), _Scripted([_go()] * 10), seed=0)  # type: ignore[arg-type]
    assert (ep.reason, ep.steps) == ("step limit", 4)
    assert not ep.success  # a step-limit end is scored by its error: 0.6 m and 40° are outside the bounds


def test_controller_time_is_the_sum_of_its_steps_on_the_clock_the_module_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [1000.0]
    monkeypatch.setattr(evaluation.episodes, "time", SimpleNamespace(perf_counter=lambda: clock[0]))
    ep = run_episode(_Env(), _Scripted([_go(), _go(), _go(), STOP], clock), seed=0)  # type: ignore[arg-type]
    assert ep.seconds == pytest.approx(4 * 0.25)  # four calls to step, the stopping one included


def test_a_controller_s_own_command_is_executed_as_it_is() -> None:
    # CNSv2's Servo applies gain and limits itself: its command must not be scaled or clamped again.
    own = np.array([0.01, 0.0, -0.02, 0.0, 0.003, 0.0])
    out = ControlOutput(np.array([3.0, 0.0, 4.0, 0.6, 0.0, 0.8]), False, True, {}, command=own)
    env = _Env()
    run_episode(env, _Scripted([out, STOP]), seed=0, gain=2.0, limits=(0.5, 0.2))  # type: ignore[arg-type]
    np.testing.assert_array_equal(env.received[0], own)
