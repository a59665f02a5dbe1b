"""Controllers by name: the built-ins, what a setup passes on, and clear errors for unknown or taken names."""

from __future__ import annotations

import pytest

from configs import load_config
from policy import registry
from policy.classical import CONTROLLERS, MatcherIBVS, MatcherPBVS
from policy.registry import ControllerSetup, available_controllers, make_controller, register_controller
from policy.servo import ServoController

pytestmark = pytest.mark.unit


def test_the_builtins_are_registered_on_the_first_lookup() -> None:
    assert {*CONTROLLERS, "cnsv2", "cnsv2_pbvs"} <= set(available_controllers())
    assert isinstance(make_controller("sift_pbvs"), MatcherPBVS)
    assert isinstance(make_controller("sift_ibvs"), MatcherIBVS)
    assert make_controller("orb_pbvs").limits is None  # no ServoConfig, no speed limits


def test_an_unknown_name_lists_the_known_ones() -> None:
    with pytest.raises(ValueError, match=r"unknown controller 'roma_ibvs'; known: .*cnsv2.*sift_pbvs"):
        make_controller("roma_ibvs")


def test_the_setup_reaches_the_controller() -> None:
    servo = load_config("smoke").policy.servo
    assert make_controller("sift_pbvs", ControllerSetup(servo=servo)).limits == (servo.max_linear, servo.max_angular)
    network = object()  # the factories only hand it on; reset() would run it
    setup = ControllerSetup(servo=servo, stop_velocity=0.02, stop_steps=4, gain=1.5, load_policy=lambda: network)
    hybrid, pbvs_only = make_controller("cnsv2", setup), make_controller("cnsv2_pbvs", setup)
    assert isinstance(hybrid, ServoController) and hybrid.policy is network and pbvs_only.policy is network
    assert hybrid.gain == pbvs_only.gain == 1.5
    assert hybrid.cfg.model_copy(update={"hybrid": servo.hybrid}) == servo  # the setup's servo, only hybrid set
    assert (hybrid.name, hybrid.cfg.hybrid, pbvs_only.name, pbvs_only.cfg.hybrid) == (
        "cnsv2",
        True,
        "cnsv2_pbvs",
        False,
    )
    assert (hybrid.stop_velocity, hybrid.stop_steps) == (0.02, 4)
    with pytest.raises(ValueError, match=r"'cnsv2' needs the network"):
        make_controller("cnsv2")


def test_a_taken_name_is_refused_and_a_reloaded_factory_is_not(monkeypatch: pytest.MonkeyPatch) -> None:
    available_controllers()  # the built-ins register into the real table, before it is swapped for a copy
    monkeypatch.setattr(registry, "_FACTORIES", dict(registry._FACTORIES))

    def sift_pbvs(setup: ControllerSetup) -> MatcherPBVS:
        return MatcherPBVS("orb")

    with pytest.raises(ValueError, match=r"'sift_pbvs' is already registered by policy\.classical\._sift_pbvs"):
        register_controller("sift_pbvs")(sift_pbvs)
    register_controller("sift_pbvs")(registry._FACTORIES["sift_pbvs"])  # the same factory again: a reload
    register_controller("mine")(sift_pbvs)
    assert make_controller("mine").name == "orb_pbvs"


def test_without_a_servo_setup_cnsv2_takes_the_policys_own() -> None:
    from policy import build_policy

    cfg = load_config("smoke", ["policy.servo.max_linear=0.3", "policy.servo.stop_velocity=0.04"]).policy
    network = build_policy(cfg)
    ctrl = make_controller("cnsv2_pbvs", ControllerSetup(load_policy=lambda: network))
    assert (ctrl.cfg.max_linear, ctrl.cfg.hybrid, ctrl.stop_velocity) == (0.3, False, 0.04)
