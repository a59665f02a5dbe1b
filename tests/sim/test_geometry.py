"""SO(3)/SE(3) maps, pose algebra, look-at and error metrics."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from sim.geometry import (
    exp_se3,
    exp_so3,
    inv_pose,
    log_se3,
    log_so3,
    look_at,
    make_pose,
    pose_error,
    relative_pose,
    rotation_angle,
    skew,
    vee,
)
from tests.strategies import pose, rotation, rotvec, translation, twist

pytestmark = pytest.mark.unit


@given(rotvec)
def test_so3_log_inverts_exp(w: np.ndarray) -> None:
    np.testing.assert_allclose(log_so3(exp_so3(w)), w, atol=1e-9)


@given(rotation)
def test_so3_exp_inverts_log(R: np.ndarray) -> None:
    np.testing.assert_allclose(exp_so3(log_so3(R)), R, atol=1e-12)
    assert 0.0 <= np.linalg.norm(log_so3(R)) <= np.pi + 1e-12


@given(twist())
def test_se3_log_inverts_exp(xi: np.ndarray) -> None:
    np.testing.assert_allclose(log_se3(exp_se3(xi)), xi, atol=1e-8)


@given(pose())
def test_se3_exp_inverts_log(T: np.ndarray) -> None:
    np.testing.assert_allclose(exp_se3(log_se3(T)), T, atol=1e-9)


@given(twist(), st.floats(0.001, 2.0))
def test_exp_se3_dt_scales_the_twist(xi: np.ndarray, dt: float) -> None:
    np.testing.assert_allclose(exp_se3(xi, dt), exp_se3(xi * dt), atol=1e-12)


def test_exp_so3_is_a_rotation_at_pi() -> None:
    R = exp_so3([0.0, 0.0, np.pi])
    np.testing.assert_allclose(R, np.diag([-1.0, -1.0, 1.0]), atol=1e-15)
    np.testing.assert_allclose(np.abs(log_so3(R)), [0.0, 0.0, np.pi], atol=1e-12)


def test_log_so3_exactly_pi_about_a_tilted_axis() -> None:
    u = np.array([1.0, 2.0, -2.0]) / 3.0
    R = 2.0 * np.outer(u, u) - np.eye(3)  # rotation by pi about u
    w = log_so3(R)
    assert np.linalg.norm(w) == pytest.approx(np.pi, abs=1e-12)
    np.testing.assert_allclose(np.abs(w / np.pi), np.abs(u), atol=1e-12)


def test_small_angles_keep_relative_precision() -> None:
    w = np.array([3e-10, -1e-10, 2e-10])
    np.testing.assert_allclose(log_so3(exp_so3(w)), w, rtol=1e-6)
    assert rotation_angle(exp_so3(w)) == pytest.approx(np.linalg.norm(w), rel=1e-6)


@given(translation, translation)
def test_skew_is_the_cross_product(a: np.ndarray, b: np.ndarray) -> None:
    np.testing.assert_allclose(skew(a) @ b, np.cross(a, b), atol=1e-15)
    np.testing.assert_allclose(vee(skew(a)), a)


@given(pose())
def test_inverse_pose(T: np.ndarray) -> None:
    np.testing.assert_allclose(inv_pose(T) @ T, np.eye(4), atol=1e-12)
    np.testing.assert_allclose(inv_pose(T), np.linalg.inv(T), atol=1e-10)


def test_look_at_uses_opencv_axes() -> None:
    wTc = look_at(eye=[1.0, 0.0, 0.0], target=[0.0, 0.0, 0.0])
    R = wTc[:3, :3]
    np.testing.assert_allclose(R[:, 2], [-1.0, 0.0, 0.0])  # z forward, towards the target
    np.testing.assert_allclose(R[:, 1], [0.0, 0.0, -1.0])  # y down
    np.testing.assert_allclose(R[:, 0], [0.0, 1.0, 0.0], atol=1e-15)  # x: right of the viewing direction
    np.testing.assert_allclose(wTc[:3, 3], [1.0, 0.0, 0.0])
    assert np.linalg.det(R) == pytest.approx(1.0)


def test_look_at_target_projects_to_the_optical_axis() -> None:
    wTc = look_at([0.3, -0.4, 0.9], [0.05, 0.02, 0.0])
    p = inv_pose(wTc) @ np.array([0.05, 0.02, 0.0, 1.0])
    np.testing.assert_allclose(p[:2], 0.0, atol=1e-12)
    assert p[2] > 0


def test_look_at_rejects_degenerate_views() -> None:
    with pytest.raises(ValueError, match="parallel"):
        look_at([0.0, 0.0, 1.0], [0.0, 0.0, 0.0])
    with pytest.raises(ValueError, match="coincide"):
        look_at([1.0, 2.0, 3.0], [1.0, 2.0, 3.0])


def test_pose_error_in_metres_and_degrees() -> None:
    a = make_pose(np.eye(3), [0.0, 0.0, 1.0])
    b = a @ make_pose(exp_so3([0.0, np.radians(30.0), 0.0]), [0.003, -0.004, 0.0])
    te, re = pose_error(a, b)
    assert te == pytest.approx(0.005)
    assert re == pytest.approx(30.0)
    assert pose_error(b, a) == pytest.approx((te, re))


def test_relative_pose_maps_current_into_desired() -> None:
    wTd = look_at([0.0, 0.0, 1.0], [0.0, 0.0, 0.0], up=[0.0, 1.0, 0.0])
    wTc = look_at([0.2, 0.1, 0.8], [0.0, 0.0, 0.0])
    dTc = relative_pose(wTd, wTc)
    np.testing.assert_allclose(wTd @ dTc, wTc, atol=1e-12)


@pytest.mark.parametrize(
    ("fn", "arg", "match"),
    [
        (log_so3, np.diag([1.0, 1.0, 2.0]), "not a rotation"),
        (log_so3, np.diag([1.0, 1.0, -1.0]), "reflection"),
        (log_so3, np.eye(4), "shape"),
        (log_so3, np.full((3, 3), np.nan), "NaN"),
        (exp_so3, [1.0, 2.0], "shape"),
        (exp_se3, [0.0, 0.0, 0.0, 0.0, 0.0, np.inf], "NaN or inf"),
        (inv_pose, np.eye(3), "shape"),
        (inv_pose, np.vstack([np.eye(4)[:3], [1.0, 0.0, 0.0, 1.0]]), "last row"),
        (skew, "abc", "numeric"),
    ],
)
def test_bad_input_raises_a_named_value_error(fn, arg, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        fn(arg)
