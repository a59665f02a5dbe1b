"""Properties of the control laws: inverses, closed-loop behaviour, essential matrices, (de)normalisation."""

from __future__ import annotations

import warnings

import cv2
import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from configs import load_config
from policy.control import (
    SingularLawWarning,
    clamp_velocity,
    decompose_essential,
    denormalize_velocity,
    essential_candidates,
    hybrid,
    ibvs,
    interaction_matrix_point,
    interaction_matrix_thetau,
    normalize_velocity,
    pbvs,
    pbvs_inverse,
    pose_from_matches,
)
from sim.camera import Camera
from sim.geometry import exp_se3, exp_so3, inv_pose, make_pose, rotation_angle, skew
from sim.poses import sample_pose_pair
from tests.strategies import pose, rotation, translation, twist

pytestmark = pytest.mark.unit

gains = st.floats(0.1, 5.0)


@given(twist(max_angle=np.radians(179.0)), gains)
def test_pbvs_inverse_round_trip(vel: np.ndarray, lam: float) -> None:
    vel = vel * lam  # |w| / lam stays below 179 degrees, where theta-u is unambiguous
    np.testing.assert_allclose(pbvs(pbvs_inverse(vel, lam), lam), vel, atol=1e-9)


@given(pose(), gains)
def test_pbvs_of_a_pose_inverts(T: np.ndarray, lam: float) -> None:
    assume(rotation_angle(T[:3, :3]) < np.radians(179.0))
    np.testing.assert_allclose(pbvs_inverse(pbvs(T, lam), lam), T, atol=1e-9)


@pytest.mark.slow
@given(pose(), st.floats(0.5, 2.0))
def test_pbvs_closed_loop_decays_exponentially_on_a_straight_path(dTc: np.ndarray, lam: float) -> None:
    assume(rotation_angle(dTc[:3, :3]) < np.radians(170.0) and np.linalg.norm(dTc[:3, 3]) > 1e-3)
    dt, T = 0.01, dTc.copy()
    t0, th0, c0 = np.linalg.norm(dTc[:3, 3]), rotation_angle(dTc[:3, :3]), dTc[:3, 3]
    for k in range(1, 201):
        T = T @ exp_se3(pbvs(T, lam), dt)
        decay = (1.0 - lam * dt) ** k
        # The rotation shrinks about a fixed axis by exactly (1 - lam dt) per step; the translation up to O(dt^2).
        assert rotation_angle(T[:3, :3]) == pytest.approx(th0 * decay, rel=1e-8, abs=1e-12)
        assert np.linalg.norm(T[:3, 3]) == pytest.approx(t0 * decay, rel=1e-3)
        # The camera centre stays on the line to the goal (measured: < 0.4 % of the start distance at dt = 0.01).
        assert np.linalg.norm(np.cross(T[:3, 3], c0)) / np.linalg.norm(c0) < 0.01 * t0


def _scene(rng: np.random.Generator, n: int = 60) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    cfg = load_config("smoke").sim.poses
    while True:
        wTd, wTc = sample_pose_pair(rng, cfg)
        P = np.concatenate([rng.uniform(-0.2, 0.2, (n, 2)), rng.uniform(0.0, 0.1, (n, 1))], axis=1)
        Pc = (P - wTc[:3, 3]) @ wTc[:3, :3]
        Pd = (P - wTd[:3, 3]) @ wTd[:3, :3]
        keep = (Pc[:, 2] > 0.1) & (Pd[:, 2] > 0.1)
        if keep.sum() >= 20:
            return inv_pose(wTd) @ wTc, Pc[keep], Pd[keep]


@pytest.mark.slow
@given(st.integers(0, 2**32 - 1), gains)
def test_hybrid_translation_is_pbvs_translation(seed: int, lam: float) -> None:
    dTc, Pc, Pd = _scene(np.random.default_rng(seed))
    xg, Zg, xg_des = Pc[0, :2] / Pc[0, 2], Pc[0, 2], Pd[0, :2] / Pd[0, 2]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SingularLawWarning)
        v = hybrid(dTc, xg, Zg, xg_des, lam)
    np.testing.assert_allclose(v[:3], pbvs(dTc, lam)[:3], atol=1e-12)


@pytest.mark.slow
@given(st.integers(0, 2**32 - 1), gains)
def test_hybrid_drives_the_gravity_centre_and_roll_exponentially(seed: int, lam: float) -> None:
    # By construction (Eq. 24) d(xg)/dt = -lam (xg - xg*) and d(tu_z)/dt = -lam tu_z; check it by a finite step.
    dTc, Pc, Pd = _scene(np.random.default_rng(seed))
    x_des = Pd[0, :2] / Pd[0, 2]
    vel, mode = hybrid(dTc, Pc[0, :2] / Pc[0, 2], Pc[0, 2], x_des, lam, return_mode=True)
    assume(mode == "hybrid" and np.abs(vel).max() < 1e3)
    h = 1e-7
    step = exp_se3(vel, h)
    P_new = inv_pose(step) @ np.append(Pc[0], 1.0)
    x_rate = (P_new[:2] / P_new[2] - Pc[0, :2] / Pc[0, 2]) / h
    np.testing.assert_allclose(
        x_rate, -lam * (Pc[0, :2] / Pc[0, 2] - x_des), rtol=1e-4, atol=1e-4 * (1 + np.abs(vel).max())
    )


def test_hybrid_falls_back_to_pbvs_where_singular() -> None:
    # Find a configuration where the 3x3 rotation block C of Eq. 24 is exactly singular (det C = 0) by bisection.
    w, y = np.array([1.01007116, -2.17897433, -1.3630568]), 0.6268903443515226

    def det_c(x: float) -> float:
        return float(
            np.linalg.det(np.vstack([interaction_matrix_point(x, y, 1.0)[:, 3:], interaction_matrix_thetau(w)[2]]))
        )

    lo, hi = -0.99, -0.97
    assert np.sign(det_c(lo)) != np.sign(det_c(hi))
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if np.sign(det_c(mid)) == np.sign(det_c(lo)) else (lo, mid)
    dTc = make_pose(exp_so3(w), [0.1, -0.2, 0.05])
    with pytest.warns(SingularLawWarning, match="falling back to PBVS"):
        vel, mode = hybrid(dTc, [lo, y], 1.0, [0.0, 0.0], return_mode=True)
    assert mode == "pbvs"
    np.testing.assert_array_equal(vel, pbvs(dTc))
    _, mode = hybrid(dTc, [lo + 0.1, y], 1.0, [0.0, 0.0], return_mode=True)
    assert mode == "hybrid"


def test_ibvs_converges_in_closed_loop() -> None:
    dTc, Pc, Pd = _scene(np.random.default_rng(5))
    dTc = exp_se3(np.array([0.05, -0.03, 0.04, 0.1, -0.05, 0.2]))  # a modest start, where IBVS is well behaved
    Pd = Pc @ dTc[:3, :3].T + dTc[:3, 3]
    T = dTc.copy()
    for _ in range(400):
        Pcur = (Pd - T[:3, 3]) @ T[:3, :3]
        pts_c = np.concatenate([Pcur[:, :2] / Pcur[:, 2:], Pcur[:, 2:]], axis=1)
        pts_d = np.concatenate([Pd[:, :2] / Pd[:, 2:], Pd[:, 2:]], axis=1)
        T = T @ exp_se3(ibvs(pts_c, pts_d, lam=1.0, mode="mean"), 0.05)
    assert np.linalg.norm(T[:3, 3]) < 1e-4 and rotation_angle(T[:3, :3]) < 1e-4


@given(rotation, translation, st.integers(0, 2**32 - 1))
def test_decompose_essential_agrees_with_cv2_recover_pose(R: np.ndarray, t: np.ndarray, seed: int) -> None:
    assume(np.linalg.norm(t) > 0.05)
    rng = np.random.default_rng(seed)
    Pc = np.concatenate([rng.uniform(-1, 1, (40, 2)), rng.uniform(2.0, 4.0, (40, 1))], axis=1)
    Pd = Pc @ R.T + t
    keep = Pd[:, 2] > 0.1
    assume(keep.sum() >= 8)
    xc, xd = Pc[keep, :2] / Pc[keep, 2:], Pd[keep, :2] / Pd[keep, 2:]
    E = skew(t) @ R
    R_ours, t_ours, votes = decompose_essential(E, xc, xd)
    _, R_cv, t_cv, _ = cv2.recoverPose(E, xc, xd, np.eye(3))
    np.testing.assert_allclose(R_ours, R_cv, atol=1e-9)
    np.testing.assert_allclose(t_ours, t_cv.ravel(), atol=1e-9)
    np.testing.assert_allclose(R_ours, R, atol=1e-9)
    np.testing.assert_allclose(t_ours, t / np.linalg.norm(t), atol=1e-9)
    assert votes == keep.sum()


def test_essential_candidates_all_satisfy_the_constraint() -> None:
    R, t = exp_so3([0.2, -0.4, 0.1]), np.array([0.3, 0.1, -0.2])
    E = skew(t) @ R
    for Rc, tc in essential_candidates(E):
        assert np.linalg.det(Rc) == pytest.approx(1.0)
        Ec = skew(tc) @ Rc
        np.testing.assert_allclose(np.abs(Ec / np.linalg.norm(Ec)), np.abs(E / np.linalg.norm(E)), atol=1e-12)


def test_pose_from_matches_recovers_the_pose_despite_outliers() -> None:
    rng = np.random.default_rng(0)
    cam = Camera.canonical(256)
    dTc, Pc, Pd = _scene(rng, n=200)
    uv_c, _ = cam.project(Pc)
    uv_d, _ = cam.project(Pd)
    bad = rng.choice(len(uv_c), size=len(uv_c) // 5, replace=False)
    uv_d[bad] = rng.uniform(0, 256, (len(bad), 2))
    est = pose_from_matches(uv_c, uv_d, cam.K, threshold_px=0.5)
    assert not est.failed
    assert np.degrees(rotation_angle(est.R.T @ dTc[:3, :3])) < 0.05
    assert np.degrees(np.arccos(np.clip(est.t @ dTc[:3, 3] / np.linalg.norm(dTc[:3, 3]), -1, 1))) < 0.2
    assert est.inliers.sum() >= 0.9 * (len(uv_c) - len(bad)) and not est.inliers[bad].any()


def test_pose_from_matches_reports_failure_without_a_result() -> None:
    est = pose_from_matches(np.zeros((4, 2)), np.zeros((4, 2)), Camera.canonical(64).K)
    assert est.failed and "need at least" in est.reason
    assert np.isnan(est.R).all() and np.isnan(est.t).all() and not est.inliers.any()


@given(twist(), st.floats(0.05, 20.0))
def test_normalisation_round_trip(vel: np.ndarray, d: float) -> None:
    np.testing.assert_allclose(denormalize_velocity(normalize_velocity(vel, d), d), vel, atol=1e-12)
    np.testing.assert_allclose(normalize_velocity(vel, d)[3:], vel[3:])


def _canonical_estimate(dTc: np.ndarray, d: float, sf: float) -> np.ndarray:
    # What a perfect unit-world network predicts from images taken with f = sf * W: the canonical reading of
    # those pixels, x~ = S x, fits E~ = S^-1 [t]x R S^-1, which it sees as the nearest essential matrix.
    R, t = dTc[:3, :3], dTc[:3, 3]
    S, S_inv = np.diag([sf, sf, 1.0]), np.diag([1.0 / sf, 1.0 / sf, 1.0])
    U, _, Vt = np.linalg.svd(S_inv @ skew(t) @ R @ S_inv)
    t_dir = S @ t / np.linalg.norm(S @ t)
    cands = [Rc for Rc, tc in essential_candidates(U @ np.diag([1.0, 1.0, 0.0]) @ Vt) if tc @ t_dir > 0]
    R_u = min(cands, key=lambda Rc: rotation_angle(Rc.T @ R))
    return pbvs(make_pose(R_u, t_dir * np.linalg.norm(t) / d))


def test_denormalisation_recovers_the_true_velocity() -> None:
    """Scene scale 0.5-2 is exact. For focal scale 0.5-1.5 the translation is exact and the rotation is close.

    Measured on 4000 pairs of the training distribution (this test runs 600): the rotation error of the
    corrected velocity is at most 7.1 deg (median 0.69) for s_f in [0.5, 0.6), 3.1 deg (0.27) in [0.6, 0.8),
    0.57 deg (0.04) in [0.8, 0.95), 0.03 deg around 1, 1.4 deg (0.21) in [1.2, 1.4) and 2.0 deg (0.47) in
    [1.4, 1.5]. Without the correction the medians are 21, 12, 3.5, 0.7, 7.5 and 11 deg. The tolerance is
    15 |ln s_f| deg (10.4 deg at 0.5, 6.1 at 1.5), plus 1e-6 relative on the translational velocity.
    """
    rng = np.random.default_rng(0)
    cfg = load_config("smoke").sim.poses
    err, naive_err, sfs = [], [], []
    for _ in range(600):
        wTd, wTc = sample_pose_pair(rng, cfg)
        d, sf = rng.uniform(0.5, 2.0), rng.uniform(0.5, 1.5)
        k = d / np.linalg.norm(wTd[:3, 3])  # zoom the world so that the desired camera sits at d*
        wTd[:3, 3] *= k
        wTc[:3, 3] *= k
        dTc = inv_pose(wTd) @ wTc
        truth = pbvs(dTc)
        unit = _canonical_estimate(dTc, d, sf)
        est = denormalize_velocity(unit, d, sf)
        np.testing.assert_allclose(est[:3], truth[:3], rtol=0, atol=1e-6 * np.linalg.norm(truth[:3]))
        err.append(np.degrees(rotation_angle(exp_so3(est[3:]).T @ exp_so3(truth[3:]))))
        naive_err.append(np.degrees(rotation_angle(exp_so3(unit[3:]).T @ exp_so3(truth[3:]))))
        sfs.append(sf)
    err, naive_err, sfs = map(np.asarray, (err, naive_err, sfs))
    assert np.all(err <= 15.0 * np.abs(np.log(sfs)) + 1e-6)
    far = np.abs(np.log(sfs)) > np.log(1.2)
    assert np.median(err[far]) < 0.1 * np.median(naive_err[far])


@given(twist(), st.floats(0.5, 2.0))
def test_denormalisation_with_the_canonical_focal_length_is_the_scene_scale(vel: np.ndarray, d: float) -> None:
    np.testing.assert_allclose(denormalize_velocity(vel, d, 1.0), [*(d * vel[:3]), *vel[3:]], atol=1e-15)


@pytest.mark.parametrize("sf", [1.0, 0.8, 1.3])
def test_a_predicted_rotation_beyond_pi_is_wrapped_the_same_way_at_every_focal_scale(sf: float) -> None:
    # 3.44 rad about z is -2.84 rad about z as a pose; PBVS of that pose goes the short way round. Roll about the
    # optical axis commutes with the focal correction, so every scale must give exactly that.
    out = denormalize_velocity([0.1, 0.0, 0.0, 0.0, 0.0, 3.44], 1.0, sf)
    np.testing.assert_allclose(out[3:], [0.0, 0.0, 3.44 - 2 * np.pi], atol=1e-9)
    if sf == 1.0:
        np.testing.assert_allclose(out[:3], [0.1, 0.0, 0.0], atol=1e-12)


@given(twist(max_angle=3 * np.pi), st.floats(0.5, 2.0), st.sampled_from([0.7, 1.0, 1.4]))
def test_denormalised_rotation_never_exceeds_pi(vel: np.ndarray, d: float, sf: float) -> None:
    assert np.linalg.norm(denormalize_velocity(vel, d, sf)[3:]) <= np.pi + 1e-9


def test_denormalisation_of_a_pure_rotation() -> None:
    w = np.array([0.0, 0.0, 0.3])  # roll about the optical axis commutes with S, so it is unchanged
    np.testing.assert_allclose(denormalize_velocity([0, 0, 0, *w], 1.0, 0.6), [0, 0, 0, *w], atol=1e-12)


@given(twist(), st.floats(0.01, 2.0), st.floats(0.01, 2.0))
def test_clamp_velocity_bounds_and_keeps_the_screw_axis(vel: np.ndarray, ml: float, ma: float) -> None:
    out = clamp_velocity(vel, ml, ma)
    assert np.linalg.norm(out[:3]) <= ml + 1e-12 and np.linalg.norm(out[3:]) <= ma + 1e-12
    k = np.linalg.norm(out) / max(np.linalg.norm(vel), 1e-300)
    np.testing.assert_allclose(out, k * vel, atol=1e-15)
    if np.linalg.norm(vel[:3]) <= ml and np.linalg.norm(vel[3:]) <= ma:
        np.testing.assert_array_equal(out, vel)


BAD = [
    (lambda: pbvs(np.diag([1.0, 2.0, 1.0, 1.0])), "not a rotation"),
    (lambda: pbvs(np.eye(3)), "shape"),
    (lambda: pbvs(np.full((4, 4), np.nan)), "NaN"),
    (lambda: pbvs(np.eye(4), lam=0.0), "lam"),
    (lambda: pbvs_inverse(np.zeros(5)), "shape"),
    (lambda: interaction_matrix_point(0.1, 0.2, 0.0), "Z"),
    (lambda: interaction_matrix_point(0.1, np.nan, 1.0), "NaN"),
    (lambda: ibvs(np.ones((4, 3)) * [1, 1, -1], np.ones((4, 3)), mode="mean"), "Z must be > 0"),
    (lambda: ibvs(np.ones((4, 3)), np.ones((5, 3))), "same shape"),
    (lambda: ibvs(np.ones((2, 3)), np.ones((2, 3))), "at least 3"),
    (lambda: ibvs(np.ones((4, 3)), np.ones((4, 3)), mode="avg"), "mode"),
    (lambda: ibvs(np.ones((4, 2)), np.ones((4, 2))), "shape"),
    (lambda: hybrid(np.eye(4), [0.0, 0.0], -1.0, [0.0, 0.0]), "Z"),
    (lambda: hybrid(np.eye(4), [0.0, 0.0, 1.0], 1.0, [0.0, 0.0]), "xg: expected shape"),
    (lambda: denormalize_velocity(np.zeros(6), 0.0), "scene_scale"),
    (lambda: denormalize_velocity(np.zeros(6), 1.0, -1.0), "focal_scale"),
    (lambda: normalize_velocity(np.zeros(6), np.nan), "scene_scale"),
    (lambda: clamp_velocity(np.zeros(6), 0.0, 1.0), "max_linear"),
    (lambda: decompose_essential(np.zeros((3, 3)), np.zeros((3, 2)), np.zeros((3, 2))), "zero matrix"),
    (lambda: pose_from_matches(np.zeros((9, 2)), np.zeros((8, 2)), np.eye(3)), "same shape"),
]


@pytest.mark.parametrize(("call", "match"), BAD)
def test_bad_input_raises_a_named_value_error(call, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        call()
