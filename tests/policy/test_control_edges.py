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
