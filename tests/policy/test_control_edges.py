"""Edges of the control laws that the ViSP cases and the properties do not reach: the defaults (lam = 1, the mean
interaction matrix), the smallest valid inputs, the hybrid law's fallback to PBVS, and relative pose from exact
synthetic matches."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

from policy.control import (
    SingularLawWarning,
    hybrid,
    ibvs,
    interaction_matrix_thetau,
    malis_25d,
    pbvs,
    pose_from_matches,
)
from sim.geometry import exp_so3, make_pose

pytestmark = pytest.mark.unit

PTS_DES = np.array([[-0.1, -0.1, 1.0], [0.1, -0.1, 1.0], [0.1, 0.1, 1.0], [-0.1, 0.1, 1.0]])
PTS_CUR = PTS_DES + np.array([0.02, -0.01, 0.2])


def test_ibvs_defaults_are_unit_gain_and_the_mean_matrix() -> None:
    np.testing.assert_array_equal(ibvs(PTS_CUR, PTS_DES), ibvs(PTS_CUR, PTS_DES, 1.0, "mean"))
    assert not np.allclose(ibvs(PTS_CUR, PTS_DES), ibvs(PTS_CUR, PTS_DES, 1.0, "current"))


def test_three_points_are_enough_and_a_point_on_the_camera_plane_is_refused() -> None:
    v = ibvs(PTS_CUR[:3], PTS_DES[:3])
    assert v.shape == (6,) and np.all(np.isfinite(v))
    bad = PTS_CUR.copy()
    bad[1, 2] = 0.0
    with pytest.raises(ValueError, match=r"depth Z must be > 0.*rows \[1\]"):
        ibvs(bad, PTS_DES)


def test_malis_default_gain_is_one() -> None:
    dTc = make_pose(exp_so3([0.0, 0.1, 0.2]), [0.1, 0.0, 0.3])
    np.testing.assert_array_equal(malis_25d(dTc, [0.1, 0.0, 1.2], 1.0, [0.0, 0.0]),
                                  malis_25d(dTc, [0.1, 0.0, 1.2], 1.0, [0.0, 0.0], lam=1.0))  # fmt: skip


def test_thetau_interaction_is_the_identity_at_zero_rotation() -> None:
    np.testing.assert_array_equal(interaction_matrix_thetau(np.zeros(3)), np.eye(3))


def test_a_singular_hybrid_law_falls_back_to_pbvs_with_the_same_gain() -> None:
    dTc = make_pose(exp_so3([0.05, -0.1, 0.3]), [0.2, -0.1, 0.4])
    with pytest.warns(SingularLawWarning) as caught:
        vel = hybrid(dTc, [0.2, 0.1], 1.5, [0.0, 0.0], lam=0.5, max_cond=1.0)  # every real C is above 1
    # The warning points at the caller's line, not into the control law (under mutation testing, a trampoline of
    # mutmut's sits between this file and the law, so the test asks only that it is not control.py).
    assert Path(caught[0].filename).name != "control.py"
    assert isinstance(vel, np.ndarray)
    np.testing.assert_allclose(vel, pbvs(dTc, 0.5))
    with pytest.warns(SingularLawWarning):
        vel, mode = hybrid(dTc, [0.2, 0.1], 1.5, [0.0, 0.0], lam=0.5, max_cond=1.0, return_mode=True)
    assert mode == "pbvs"


def test_the_hybrid_law_falls_back_only_above_the_bound() -> None:
    # No rotation and the gravity centre at the principal point: the rotation block is orthogonal, condition 1.
    with warnings.catch_warnings():
        warnings.simplefilter("error", SingularLawWarning)
        _, mode = hybrid(make_pose(np.eye(3), [0.1, 0.0, 0.2]), [0.0, 0.0], 1.0, [0.0, 0.0], max_cond=1.0,
                         return_mode=True)  # fmt: skip
    assert mode == "hybrid"


def _project(P: np.ndarray, cTw: np.ndarray, K: np.ndarray) -> np.ndarray:
    Pc = P @ cTw[:3, :3].T + cTw[:3, 3]
    uv = Pc @ K.T
    return uv[:, :2] / uv[:, 2:]


def _scene(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    K = np.array([[300.0, 0, 160], [0, 300.0, 120], [0, 0, 1]])
    P = np.column_stack([rng.uniform(-1, 1, n), rng.uniform(-1, 1, n), rng.uniform(3, 5, n)])  # desired frame
    dTc = make_pose(exp_so3([0.05, -0.08, 0.1]), [0.3, -0.1, 0.2])  # P_d = R P_c + t
    cTd = np.linalg.inv(dTc)
    return _project(P, cTd, K), _project(P, np.eye(4), K), K, dTc


def test_pose_from_exact_matches_is_the_true_relative_pose_up_to_scale() -> None:
    px_cur, px_des, K, dTc = _scene(40)
    est = pose_from_matches(px_cur, px_des, K)
    assert not est.failed and est.reason == ""
    assert est.R.shape == (3, 3) and est.t.shape == (3,) and est.R.dtype == est.t.dtype == np.float64
    np.testing.assert_allclose(est.R, dTc[:3, :3], atol=1e-4)
    np.testing.assert_allclose(est.t, dTc[:3, 3] / np.linalg.norm(dTc[:3, 3]), atol=1e-4)
    assert est.inliers.dtype == bool and est.inliers.all()


def test_pose_from_too_few_matches_fails_with_nan_and_says_why() -> None:
    px_cur, px_des, K, _ = _scene(7)
    est = pose_from_matches(px_cur, px_des, K)  # the default needs 8 inliers
    assert est.failed and est.reason == "7 matches, need at least 8"
    assert est.R.shape == (3, 3) and np.isnan(est.R).all() and est.t.shape == (3,) and np.isnan(est.t).all()
    assert est.inliers.dtype == bool and est.inliers.shape == (7,) and not est.inliers.any()
    px_cur, px_des, K, _ = _scene(8)
    assert not pose_from_matches(px_cur, px_des, K).failed  # eight exact matches are enough
    est = pose_from_matches(px_cur[:4], px_des[:4], K, min_inliers=1)
    assert est.failed and est.reason == "4 matches, need at least 5"  # the five-point algorithm's minimum


def test_triangulated_depths_of_exact_correspondences_are_the_true_depths() -> None:
    from policy.control import _triangulated_depths

    rng = np.random.default_rng(3)
    Pc = np.column_stack([rng.uniform(-1, 1, 20), rng.uniform(-1, 1, 20), rng.uniform(2, 6, 20)])  # current frame
    dTc = make_pose(exp_so3([0.1, 0.3, -0.2]), [0.5, -0.2, 0.3])
    Pd = Pc @ dTc[:3, :3].T + dTc[:3, 3]
    z = _triangulated_depths(dTc[:3, :3], dTc[:3, 3], Pc / Pc[:, 2:], Pd / Pd[:, 2:])
    np.testing.assert_allclose(z, np.column_stack([Pc[:, 2], Pd[:, 2]]), rtol=1e-9)


def test_essential_decomposition_needs_matching_non_empty_points() -> None:
    from policy.control import decompose_essential

    px_cur, px_des, K, dTc = _scene(12)
    xc, xd = (np.linalg.solve(K, np.column_stack([p, np.ones(len(p))]).T).T[:, :2] for p in (px_cur, px_des))
    t = dTc[:3, 3] / np.linalg.norm(dTc[:3, 3])
    E = np.array([[0, -t[2], t[1]], [t[2], 0, -t[0]], [-t[1], t[0], 0]]) @ dTc[:3, :3]
    R, t_hat, votes = decompose_essential(E, xc[:1], xd[:1])  # one point is enough to vote
    assert votes == 1
    np.testing.assert_allclose(R, dTc[:3, :3], atol=1e-9)
    np.testing.assert_allclose(t_hat, t, atol=1e-9)
    # Points nearer than 1 in front of both cameras vote as well as far ones (E's unit t: depths in units of |t|).
    Pc = np.column_stack([[0.02, -0.03, 0.01, 0.03], [0.01, 0.02, -0.02, 0.0], [0.12, 0.2, 0.15, 0.25]])
    Pd = Pc @ dTc[:3, :3].T + dTc[:3, 3]
    near_c, near_d = Pc[:, :2] / Pc[:, 2:], Pd[:, :2] / Pd[:, 2:]
    assert (Pd[:, 2] > 0).all() and (Pc[:, 2] / np.linalg.norm(dTc[:3, 3]) < 1).all()
    assert decompose_essential(E, near_c, near_d)[2] == 4
    with pytest.raises(ValueError, match="matching non-empty"):
        decompose_essential(E, xc[:3], xd[:2])
    with pytest.raises(ValueError, match="matching non-empty"):
        decompose_essential(E, xc[:0], xd[:0])


def test_of_several_five_point_solutions_the_one_most_points_support_wins() -> None:
    # Five matches are the five-point algorithm's minimum and give up to ten stacked essential matrices; the estimate
    # must be one that puts the most points in front of both cameras, whichever place OpenCV stacked it in.
    import cv2

    later = 0
    for seed in range(40):
        px_cur, px_des, K, _ = _scene(5, seed)
        E, mask = cv2.findEssentialMat(px_cur, px_des, K, method=cv2.RANSAC, prob=0.999, threshold=3.0)
        if E is None:
            continue
        support = [cv2.recoverPose(E[3 * k : 3 * k + 3], px_cur, px_des, K, mask=mask.copy())[0]
                   for k in range(len(E) // 3)]  # fmt: skip
        later += support[0] < max(support)
        est = pose_from_matches(px_cur, px_des, K, min_inliers=1)
        assert not est.failed and est.inliers.sum() == max(support), (seed, support)
    assert later >= 3  # the best was not the first solution in some of them


def test_too_few_inliers_after_ransac_fail_and_keep_the_inlier_mask() -> None:
    px_cur, px_des, K, _ = _scene(30)
    rng = np.random.default_rng(5)
    junk_c, junk_d = rng.uniform(0, 320, (10, 2)), rng.uniform(0, 240, (10, 2))
    pc, pd = np.vstack([px_cur, junk_c]), np.vstack([px_des, junk_d])
    est = pose_from_matches(pc, pd, K, min_inliers=35)  # 40 matches pass the count; only the 30 exact ones fit
    assert est.failed and est.reason.startswith("30 inliers") and np.isnan(est.R).all()
    assert est.inliers[:30].all() and not est.inliers[30:].any()


def test_the_default_ransac_threshold_is_the_cns_baselines_3_px() -> None:
    # Desired points pushed along their epipolar line's normal until their Sampson distance (OpenCV's RANSAC error
    # for E) is 2.5 px stay inliers; pushed to 3.5 px they do not.
    px_cur, px_des, K, dTc = _scene(60, seed=2)
    t = dTc[:3, 3]
    E = np.array([[0, -t[2], t[1]], [t[2], 0, -t[0]], [-t[1], t[0], 0]]) @ dTc[:3, :3]
    F = np.linalg.inv(K).T @ E @ np.linalg.inv(K)  # x_des^T F x_cur = 0 in pixels
    hc = np.column_stack([px_cur, np.ones(len(px_cur))])

    def sampson(pd: np.ndarray) -> np.ndarray:
        hd = np.column_stack([pd, np.ones(len(pd))])
        Fx, Ftx = hc @ F.T, hd @ F
        return np.abs(np.sum(hd * Fx, axis=1)) / np.sqrt(
            Fx[:, 0] ** 2 + Fx[:, 1] ** 2 + Ftx[:, 0] ** 2 + Ftx[:, 1] ** 2
        )

    lines = hc @ F.T
    normals = lines[:, :2] / np.linalg.norm(lines[:, :2], axis=1, keepdims=True)
    target = np.zeros(len(px_des))
    target[:8], target[8:16] = 2.5, 3.5
    push = target.copy()
    for _ in range(5):  # the distance is nearly linear in the push; a few rescalings hit the target
        pushed = px_des + normals * push[:, None]
        push[:16] *= target[:16] / sampson(pushed)[:16]
    pushed = px_des + normals * push[:, None]
    np.testing.assert_allclose(sampson(pushed)[:16], target[:16], rtol=1e-6)
    est = pose_from_matches(px_cur, pushed, K)
    assert not est.failed
    assert est.inliers[:8].all() and not est.inliers[8:16].any() and est.inliers[16:].all()


Views = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, float]


def _plane_views(offset: float, seed: int = 0, n: int = 60) -> Views:
    """Pixels of n points of the ground plane z = 0 seen from a desired camera 1 m above it looking down and from a
    current camera `offset` away (translation and rotation scaled together); returns px_cur, px_des, K, dTc, the
    plane's normal in the current camera and its distance from it."""
    rng = np.random.default_rng(seed)
    K = np.array([[512.0, 0, 256], [0, 512.0, 256], [0, 0, 1]])
    wTd = make_pose(np.diag([1.0, -1.0, -1.0]), [0.0, 0.0, 1.0])  # camera z pointing down
    dTc = make_pose(exp_so3(np.array([0.3, -0.2, 0.5]) * offset), np.array([1.0, -0.5, 0.3]) * offset)
    wTc = wTd @ dTc
    P = np.column_stack([rng.uniform(-0.4, 0.4, n), rng.uniform(-0.4, 0.4, n), np.zeros(n)])
    cTw = np.linalg.inv(wTc)
    normal = cTw[:3, :3] @ np.array([0.0, 0.0, -1.0])  # the plane's normal, pointing away from the camera
    return _project(P, cTw, K), _project(P, np.linalg.inv(wTd), K), K, dTc, normal, float(normal @ cTw[:3, 3])


@pytest.mark.parametrize("offset", [0.1, 0.01])
def test_a_plane_homography_gives_the_relative_pose_and_the_plane(offset: float) -> None:
    from policy.control import pose_from_homography

    px_cur, px_des, K, dTc, normal, d = _plane_views(offset)
    est = pose_from_homography(px_cur, px_des, K)
    assert not est.failed and est.reason == "" and est.inliers.all()
    np.testing.assert_allclose(est.R, dTc[:3, :3], atol=1e-6)
    np.testing.assert_allclose(est.t_over_d * d, dTc[:3, 3], atol=1e-6)
    np.testing.assert_allclose(est.n, normal, atol=1e-5)


def test_at_the_goal_the_homography_gives_a_rotation_and_no_translation() -> None:
    from policy.control import pose_from_homography

    px_cur, px_des, K, dTc, _, _ = _plane_views(1e-4)
    est = pose_from_homography(px_cur + np.random.default_rng(1).normal(0, 0.02, px_cur.shape), px_des, K)
    assert not est.failed
    np.testing.assert_allclose(est.R.T @ est.R, np.eye(3), atol=1e-12)  # a rotation, though H is noisy
    assert np.degrees(np.arccos(np.clip((np.trace(est.R.T @ dTc[:3, :3]) - 1) / 2, -1, 1))) < 0.05
    assert np.linalg.norm(est.t_over_d) < 1e-3


def test_points_off_the_plane_are_outliers_and_too_few_inliers_fail() -> None:
    from policy.control import pose_from_homography

    px_cur, px_des, K, dTc, _, _ = _plane_views(0.1, n=40)
    px_cur[:6] += 15.0  # six matches far off the plane's homography
    est = pose_from_homography(px_cur, px_des, K)
    assert not est.failed and not est.inliers[:6].any() and est.inliers[6:].all()
    np.testing.assert_allclose(est.R, dTc[:3, :3], atol=1e-6)
    short = pose_from_homography(px_cur, px_des, K, min_inliers=36)  # 40 matches, 34 on the plane
    assert short.failed and short.reason.startswith("34 homography inliers") and np.isnan(short.R).all()
    assert short.inliers.sum() == 34
    few = pose_from_homography(px_cur[:3], px_des[:3], K, min_inliers=1)
    assert few.failed and few.reason == "3 matches, need at least 4" and not few.inliers.any()


def test_a_rotation_beyond_pi_about_any_axis_is_wrapped() -> None:
    from policy.control import denormalize_velocity

    for axis in range(3):
        w = np.zeros(3)
        w[axis] = 3.44  # the same pose as -2.84 rad about that axis: PBVS goes the short way round
        out = denormalize_velocity(np.concatenate([[0.1, 0.0, 0.0], w]), 1.0)
        np.testing.assert_allclose(out[3:], w * (3.44 - 2 * np.pi) / 3.44, atol=1e-9)


@pytest.mark.parametrize("sf", [0.5, 2.0])
def test_the_focal_correction_applies_at_every_scale_but_one(sf: float) -> None:
    # Only s_f = 1 is the plain [d* v, w]; any other focal scale re-expresses the pose (Eq. 19-21), which moves a
    # generic prediction's rotation.
    from policy.control import denormalize_velocity

    unit = np.array([0.2, -0.1, 0.3, 0.15, -0.2, 0.1])
    np.testing.assert_allclose(denormalize_velocity(unit, 1.5, 1.0), [0.3, -0.15, 0.45, 0.15, -0.2, 0.1], atol=1e-12)
    assert np.abs(denormalize_velocity(unit, 1.5, sf)[3:] - unit[3:]).max() > 1e-3


def test_a_plane_pose_failure_is_all_nan_and_the_smallest_sets_are_named() -> None:
    from policy.control import pose_from_homography

    px_cur, px_des, K, dTc, _, _ = _plane_views(0.1, n=8)
    assert not pose_from_homography(px_cur, px_des, K).failed  # eight exact matches meet the default min_inliers
    four = pose_from_homography(px_cur[:4], px_des[:4], K, min_inliers=4)  # a homography's minimum
    assert not four.failed
    np.testing.assert_allclose(four.R, dTc[:3, :3], atol=1e-6)
    est = pose_from_homography(px_cur[:7], px_des[:7], K)
    assert est.failed and est.reason == "7 matches, need at least 8"
    assert est.R.shape == (3, 3) and est.t_over_d.shape == est.n.shape == (3,)
    assert np.isnan(est.R).all() and np.isnan(est.t_over_d).all() and np.isnan(est.n).all()
    assert est.inliers.dtype == bool and est.inliers.shape == (7,) and not est.inliers.any()


def test_the_default_homography_threshold_is_one_pixel() -> None:
    from policy.control import pose_from_homography

    px_cur, px_des, K, _, _, _ = _plane_views(0.1, n=40)
    moved = px_des.copy()
    moved[:5, 0] += 0.6  # within a pixel of the plane's homography
    moved[5:10, 0] += 1.6  # beyond it
    est = pose_from_homography(px_cur, moved, K)
    assert est.inliers[:5].all() and not est.inliers[5:10].any() and est.inliers[10:].all()
