"""Classical visual-servo control laws, velocity (de)normalisation and relative pose from matches.

All laws return the current camera's twist (vx, vy, vz, wx, wy, wz) in its own frame and agree with ViSP 3.5
to 1e-8 (tests/data/visp_cases.json). (R, t) is dTc: P_d = R P_c + t. Image points are normalised coordinates
x = X/Z, y = Y/Z. Equations: shared/notes/servo-control.md and the CNSv2 paper (Eq. 2-5, 18-24).
"""

from __future__ import annotations

import warnings
from typing import Literal, NamedTuple

import numpy as np
from numpy.typing import ArrayLike

from sim.geometry import exp_se3, exp_so3, log_so3, rotation_angle, skew
from sim.validate import as_array, as_pose, as_positive

__all__ = [
    "CNS_GAIN",
    "PlanePose",
    "PoseEstimate",
    "SingularLawWarning",
    "clamp_velocity",
    "decompose_essential",
    "denormalize_velocity",
    "executed_velocity",
    "exp_se3",
    "hybrid",
    "ibvs",
    "interaction_matrix_point",
    "interaction_matrix_thetau",
    "malis_25d",
    "normalize_velocity",
    "pbvs",
    "pbvs_inverse",
    "pose_from_homography",
    "pose_from_matches",
    "theta_u",
]

IbvsMode = Literal["current", "desired", "mean"]
# CNS executes twice the commanded velocity; the benchmark, DAgger rollouts and Servo's `command` all use this gain.
CNS_GAIN = 2.0
# A hybrid law whose rotation block is this ill-conditioned would command huge, meaningless rotations.
HYBRID_MAX_COND = 1e8


class SingularLawWarning(RuntimeWarning):
    """A control law was singular at this configuration and a fallback law was used instead."""


def theta_u(R: ArrayLike) -> np.ndarray:
    """Return the theta-u (axis-angle) vector of a rotation matrix, theta in [0, pi]."""
    return log_so3(R)


def _split_pose(dTc: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    T = as_pose(dTc, "dTc")
    return T[:3, :3], T[:3, 3]


def _gain(lam: float) -> float:
    return as_positive(lam, "lam")


def interaction_matrix_thetau(tu: ArrayLike) -> np.ndarray:
    """Return L_tu = I + (theta/2)[u]x + (1 - sinc(theta)/sinc^2(theta/2))[u]x^2 for the theta-u feature."""
    tu = as_array(tu, (3,), "tu")
    theta = float(np.linalg.norm(tu))
    if theta < 1e-12:
        return np.eye(3)
    U = skew(tu / theta)
    sinc = np.sinc(theta / np.pi)
    sinc_half = np.sinc(theta / (2.0 * np.pi))
    return np.eye(3) + 0.5 * theta * U + (1.0 - sinc / sinc_half**2) * (U @ U)


def pbvs(dTc: ArrayLike, lam: float = 1.0) -> np.ndarray:
    """Position-based servo (paper Eq. 5): v = -lam R^T t, w = -lam theta-u(R)."""
    lam = _gain(lam)
    R, t = _split_pose(dTc)
    return np.concatenate([-lam * R.T @ t, -lam * log_so3(R)])


def pbvs_inverse(vel: ArrayLike, lam: float = 1.0) -> np.ndarray:
    """Invert PBVS (paper Eq. 18): return the dTc whose PBVS velocity is `vel`."""
    lam = _gain(lam)
    vel = as_array(vel, (6,), "vel")
    R = exp_so3(-vel[3:] / lam)
    T = np.eye(4)
    T[:3, :3] = R
    T[:3, 3] = -R @ vel[:3] / lam
    return T


def _interaction_rows(x: np.ndarray, y: np.ndarray, Z: np.ndarray) -> np.ndarray:
    # (N, 2, 6) point interaction matrices, vectorised over points.
    iz, o, z = 1.0 / Z, np.ones_like(x), np.zeros_like(x)
    rx = [-iz, z, x * iz, x * y, -(o + x * x), y]
    ry = [z, -iz, y * iz, o + y * y, -x * y, -x]
    return np.stack([np.stack(rx, axis=-1), np.stack(ry, axis=-1)], axis=1)


def interaction_matrix_point(x: float, y: float, Z: float) -> np.ndarray:
    """Return the 2x6 interaction matrix of an image point (normalised x, y) at depth Z > 0."""
    x, y = as_array([x, y], (2,), "point (x, y)")
    Z = as_positive(Z, "Z (point depth)")
    return _interaction_rows(np.array([x]), np.array([y]), np.array([Z]))[0]


def _points(pts: ArrayLike, name: str) -> np.ndarray:
    P = as_array(pts, (None, 3), name)
    if P.shape[0] < 3:
        raise ValueError(f"{name}: need at least 3 points to constrain 6 DOF, got {P.shape[0]}")
    bad = np.flatnonzero(P[:, 2] <= 0)
    if bad.size:
        raise ValueError(f"{name}: depth Z must be > 0, got Z <= 0 at rows {bad[:10].tolist()}")
    return P


def _stack_interaction(P: np.ndarray) -> np.ndarray:
    return _interaction_rows(P[:, 0], P[:, 1], P[:, 2]).reshape(-1, 6)


def ibvs(pts_cur: ArrayLike, pts_des: ArrayLike, lam: float = 1.0, mode: IbvsMode = "mean") -> np.ndarray:
    """Image-based servo on point features: v = -lam pinv(L) (s - s*), with L at the current, desired or mean.

    Points are (N, 3) rows [x, y, Z] in normalised coordinates; row i of both arrays is the same 3-D point.
    """
    lam = _gain(lam)
    cur = _points(pts_cur, "pts_cur")
    des = _points(pts_des, "pts_des")
    if cur.shape != des.shape:
        raise ValueError(f"pts_cur and pts_des must have the same shape, got {cur.shape} and {des.shape}")
    if mode == "current":
        L = _stack_interaction(cur)
    elif mode == "desired":
        L = _stack_interaction(des)
    elif mode == "mean":
        L = 0.5 * (_stack_interaction(cur) + _stack_interaction(des))
    else:
        raise ValueError(f"mode: expected 'current', 'desired' or 'mean', got {mode!r}")
    e = (cur[:, :2] - des[:, :2]).reshape(-1)
    return -lam * np.linalg.pinv(L) @ e


def hybrid(
    dTc: ArrayLike,
    xg: ArrayLike,
    Zg: float,
    xg_des: ArrayLike,
    lam: float = 1.0,
    *,
    return_mode: bool = False,
    max_cond: float = HYBRID_MAX_COND,
) -> np.ndarray | tuple[np.ndarray, str]:
    """The paper's hybrid law (Eq. 24): straight camera path (PBVS translation) with an image-centred rotation.

    e = [t; xg - xg*; tu_z] and L = [[R, 0]; L_x(xg, Zg); [0, L_tu row 3]], v = -lam L^-1 e. When the rotation
    block is singular (condition number above `max_cond`) it warns (SingularLawWarning) and returns PBVS.
    With `return_mode=True` it returns (velocity, "hybrid" or "pbvs").
    """
    lam = _gain(lam)
    R, t = _split_pose(dTc)
    xg = as_array(xg, (2,), "xg")
    xg_des = as_array(xg_des, (2,), "xg_des")
    Lx = interaction_matrix_point(xg[0], xg[1], Zg)
    tu = log_so3(R)
    Ltu_z = interaction_matrix_thetau(tu)[2]
    # L is block lower-triangular, so the translation is exactly PBVS's and the rotation solves a 3x3 system.
    v = -lam * R.T @ t
    C = np.vstack([Lx[:, 3:], Ltu_z])
    if not np.isfinite(cond := np.linalg.cond(C)) or cond > max_cond:
        warnings.warn(
            f"hybrid law singular (cond {cond:.1e} > {max_cond:.0e}); falling back to PBVS",
            SingularLawWarning,
            stacklevel=2,
        )
        vel = pbvs(dTc, lam)
        return (vel, "pbvs") if return_mode else vel
    rhs = -lam * np.array([xg[0] - xg_des[0], xg[1] - xg_des[1], tu[2]]) - np.concatenate([Lx[:, :3] @ v, [0.0]])
    vel = np.concatenate([v, np.linalg.solve(C, rhs)])
    return (vel, "hybrid") if return_mode else vel


def malis_25d(dTc: ArrayLike, point_cur: ArrayLike, Z_des: float, x_des: ArrayLike, lam: float = 1.0) -> np.ndarray:
    """Malis-Chaumette-Boudet 2.5-D servo: e = [x - x*, y - y*, log(Z/Z*), theta-u], v = -lam L^-1 e.

    Straight image path, curved camera path; kept as a classical reference, not used by CNSv2 (see notes).
    `point_cur` is [x, y, Z] of one point in the current camera; `x_des` its (x*, y*) in the desired one.
    """
    lam = _gain(lam)
    R, _ = _split_pose(dTc)
    x, y, Z = as_array(point_cur, (3,), "point_cur")
    xd = as_array(x_des, (2,), "x_des")
    Zd = as_positive(Z_des, "Z_des")
    tu = log_so3(R)
    L = np.zeros((6, 6))
    L[:2] = interaction_matrix_point(x, y, Z)
    L[2] = [0.0, 0.0, -1.0 / Z, -y, x, 0.0]
    L[3:, 3:] = interaction_matrix_thetau(tu)
    e = np.concatenate([[x - xd[0], y - xd[1], np.log(Z / Zd)], tu])
    return -lam * np.linalg.solve(L, e)


def _triangulated_depths(R: np.ndarray, t: np.ndarray, x_cur: np.ndarray, x_des: np.ndarray) -> np.ndarray:
    # Depths (Z_c, Z_d) with Z_d x_d = Z_c R x_c + t, in the least-squares sense per point: (N, 2).
    A = np.stack([x_cur @ R.T, -x_des], axis=2)  # (N, 3, 2): columns multiply Z_c and Z_d
    AtA = np.einsum("nki,nkj->nij", A, A)
    Atb = np.einsum("nki,k->ni", A, -t)
    det = AtA[:, 0, 0] * AtA[:, 1, 1] - AtA[:, 0, 1] ** 2
    ok = np.abs(det) > 1e-14
    det = np.where(ok, det, 1.0)
    zc = (AtA[:, 1, 1] * Atb[:, 0] - AtA[:, 0, 1] * Atb[:, 1]) / det
    zd = (AtA[:, 0, 0] * Atb[:, 1] - AtA[:, 0, 1] * Atb[:, 0]) / det
    return np.where(ok[:, None], np.stack([zc, zd], axis=1), np.nan)


def essential_candidates(E: ArrayLike) -> list[tuple[np.ndarray, np.ndarray]]:
    """Return the four (R, unit t) solutions of an essential matrix E = [t]x R (paper Eq. 3-4)."""
    E = as_array(E, (3, 3), "E")
    if np.linalg.norm(E) < 1e-12:
        raise ValueError("E: the zero matrix has no decomposition (no translation)")
    U, _, Vt = np.linalg.svd(E)
    # E is defined up to sign, so flipping U or V keeps it valid and makes the candidate R proper rotations.
    if np.linalg.det(U) < 0:
        U = -U
    if np.linalg.det(Vt) < 0:
        Vt = -Vt
    Rz = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])  # Rz(pi/2)
    out = []
    for Rzs in (Rz, Rz.T):  # Rz(+pi/2), Rz(-pi/2)
        R = U @ Rzs.T @ Vt
        S = U @ Rzs @ np.diag([1.0, 1.0, 0.0]) @ U.T  # [t]x with sigma normalised to (1, 1, 0)
        t = np.array([S[2, 1], S[0, 2], S[1, 0]])
        out.append((R, t / np.linalg.norm(t)))
    # The two [t]x solutions are negatives of each other; pair each R with both signs.
    R1, t1 = out[0]
    R2, _ = out[1]
    return [(R1, t1), (R1, -t1), (R2, t1), (R2, -t1)]


def decompose_essential(E: ArrayLike, x_cur: ArrayLike, x_des: ArrayLike) -> tuple[np.ndarray, np.ndarray, int]:
    """Decompose E (x_des^T E x_cur = 0) into (R, unit t, votes) by the positive-depth vote (paper Eq. 3-4).

    x_cur, x_des are (N, 2) normalised coordinates of matched points. The candidate that puts the most points in
    front of both cameras wins, as cv2.recoverPose does.
    """
    xc = as_array(x_cur, (None, 2), "x_cur")
    xd = as_array(x_des, (None, 2), "x_des")
    if xc.shape != xd.shape or xc.shape[0] == 0:
        raise ValueError(f"x_cur and x_des must be matching non-empty (N, 2) arrays, got {xc.shape}, {xd.shape}")
    hc = np.concatenate([xc, np.ones((len(xc), 1))], axis=1)
    hd = np.concatenate([xd, np.ones((len(xd), 1))], axis=1)
    best = None
    for R, t in essential_candidates(E):
        z = _triangulated_depths(R, t, hc, hd)
        votes = int(np.sum((z[:, 0] > 0) & (z[:, 1] > 0)))
        if best is None or votes > best[2]:
            best = (R, t, votes)
    assert best is not None
    return best


class PoseEstimate(NamedTuple):
    """Relative pose dTc from image matches: R, the unit translation t, the inlier mask and a failure flag.

    On failure R and t are NaN (so they cannot be used by mistake) and `reason` says why.
    """

    R: np.ndarray
    t: np.ndarray
    inliers: np.ndarray
    failed: bool
    reason: str = ""


def _matched_pixels(px_cur: ArrayLike, px_des: ArrayLike, K: ArrayLike) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    pc = as_array(px_cur, (None, 2), "px_cur")
    pd = as_array(px_des, (None, 2), "px_des")
    if pc.shape != pd.shape:
        raise ValueError(f"px_cur and px_des must have the same shape, got {pc.shape} and {pd.shape}")
    return pc, pd, as_array(K, (3, 3), "K")


def _nearest_rotation(M: np.ndarray) -> np.ndarray:
    # The rotation closest to M in the Frobenius norm (its polar factor, with the sign that keeps det = +1).
    U, _, Vt = np.linalg.svd(M)
    return U @ np.diag([1.0, 1.0, np.linalg.det(U @ Vt)]) @ Vt


def pose_from_matches(
    px_cur: ArrayLike,
    px_des: ArrayLike,
    K: ArrayLike,
    *,
    prob: float = 0.999,
    threshold_px: float = 3.0,
    min_inliers: int = 8,
) -> PoseEstimate:
    """Estimate dTc (R, unit t) from matched pixels with OpenCV's essential matrix, RANSAC and recoverPose.

    The defaults (p = 0.999, 3 px) are those of the CNS classical baselines.
    """
    import cv2  # OpenCV is only needed by matcher-based controllers, keep `import policy` light.

    pc, pd, K = _matched_pixels(px_cur, px_des, K)
    n = len(pc)

    def fail(reason: str, mask: np.ndarray | None = None) -> PoseEstimate:
        m = np.zeros(n, bool) if mask is None else mask
        return PoseEstimate(np.full((3, 3), np.nan), np.full(3, np.nan), m, True, reason)

    if n < max(5, min_inliers):
        return fail(f"{n} matches, need at least {max(5, min_inliers)}")
    E, mask = cv2.findEssentialMat(pc, pd, K, method=cv2.RANSAC, prob=prob, threshold=threshold_px)
    if E is None or mask is None:
        return fail("findEssentialMat found no model")
    mask = mask.ravel().astype(bool)
    best = None
    # findEssentialMat may return several stacked 3x3 solutions; keep the one recoverPose supports best.
    for k in range(E.shape[0] // 3):
        count, R, t, m = cv2.recoverPose(E[3 * k : 3 * k + 3], pc, pd, K, mask=mask.astype(np.uint8).copy())
        if best is None or count > best[0]:
            best = (count, R, t, m)
    assert best is not None
    count, R, t, m = best
    inliers = m.ravel().astype(bool)
    if count < min_inliers:
        return fail(f"{count} inliers after the cheirality check, need {min_inliers}", inliers)
    return PoseEstimate(np.asarray(R, np.float64), np.asarray(t, np.float64).ravel(), inliers, False)


class PlanePose(NamedTuple):
    """Relative pose dTc from a homography of a plane: R, t / d (d: the plane's distance from the current camera),
    the plane's unit normal n in the current camera (n^T X = d for its points X, so n points away from the camera),
    the inlier mask and a failure flag; on failure R, t and n are NaN and `reason` says why."""

    R: np.ndarray
    t_over_d: np.ndarray
    n: np.ndarray
    inliers: np.ndarray
    failed: bool
    reason: str = ""


def pose_from_homography(
    px_cur: ArrayLike,
    px_des: ArrayLike,
    K: ArrayLike,
    *,
    threshold_px: float = 1.0,
    min_inliers: int = 8,
) -> PlanePose:
    """Estimate dTc from matched pixels of a plane: H ~ K (R + t n^T / d) K^-1 maps current to desired pixels.

    RANSAC homography (`threshold_px`, reprojection error in the desired image), then the up to four decompositions
    (cv2.decomposeHomographyMat, Malis & Vargas 2007), kept if every inlier lies in front of both cameras
    (cv2.filterHomographyDecompByVisibleRefpoints; all of them when that keeps none, as happens when t ~ 0); of those
    the one whose normal faces the camera most (largest n_z) wins. Unlike the essential matrix, H does not
    degenerate as t -> 0, which is where PBVS needs it. Raises ValueError for arrays of the wrong shape.
    """
    import cv2

    pc, pd, K = _matched_pixels(px_cur, px_des, K)
    n = len(pc)

    def fail(reason: str, mask: np.ndarray | None = None) -> PlanePose:
        m = np.zeros(n, bool) if mask is None else mask
        return PlanePose(np.full((3, 3), np.nan), np.full(3, np.nan), np.full(3, np.nan), m, True, reason)

    if n < max(4, min_inliers):
        return fail(f"{n} matches, need at least {max(4, min_inliers)}")
    H, mask = cv2.findHomography(pc, pd, cv2.RANSAC, threshold_px)
    if H is None or mask is None:
        return fail("findHomography found no model")
    inliers = mask.ravel().astype(bool)
    if inliers.sum() < min_inliers:
        return fail(f"{int(inliers.sum())} homography inliers, need {min_inliers}", inliers)
    _, rotations, translations, normals = cv2.decomposeHomographyMat(H, K)
    # OpenCV wants the inliers as normalised image coordinates, float32, shaped (N, 1, 2).
    before, after = (cv2.undistortPoints(p[inliers].reshape(-1, 1, 2), K, None).astype(np.float32) for p in (pc, pd))
    kept = cv2.filterHomographyDecompByVisibleRefpoints(rotations, normals, before, after)
    # As t -> 0 every decomposition has the same R and a vanishing t, and the visibility test can drop them all;
    # then any will do, and the normal facing the camera is chosen as always.
    candidates = kept.ravel().tolist() if kept is not None and len(kept) else list(range(len(rotations)))
    best = max(candidates, key=lambda i: float(np.ravel(normals[i])[2]))
    # With t ~ 0 OpenCV returns the normalised H itself as R, orthonormal only to the noise: project it onto SO(3).
    return PlanePose(
        _nearest_rotation(np.asarray(rotations[best], np.float64)),
        np.asarray(translations[best], np.float64).ravel(),
        np.asarray(normals[best], np.float64).ravel(),
        inliers,
        False,
    )


def normalize_velocity(vel: ArrayLike, scene_scale: float) -> np.ndarray:
    """Map a real velocity to the unit world (d* = 1): [v / d*, w]."""
    vel = as_array(vel, (6,), "vel")
    s = as_positive(scene_scale, "scene_scale")
    return np.concatenate([vel[:3] / s, vel[3:]])


def denormalize_velocity(vel_unit: ArrayLike, scene_scale: float, focal_scale: float = 1.0) -> np.ndarray:
    """Map a unit-world prediction to a real camera (paper Eq. 18-21): scene scale d*, focal f = focal_scale * W.

    The prediction is read as the PBVS velocity of a relative pose at every focal scale, so a rotation part with
    |w| > pi (a network can output anything) is first wrapped to the equivalent theta-u with theta in [0, pi]: the
    short way round, as PBVS itself (Eq. 5) would command for that pose; the linear part is unchanged by the wrap.

    The principal point is assumed at the image centre. For focal_scale != 1 the pose is recovered with
    PBVS^-1, its essential matrix is re-expressed for the real focal length (E^ = S [t]x R S,
    S = diag(s_f, s_f, 1)), projected onto the essential manifold, decomposed (Eq. 4) and fed to PBVS with
    |t^| = d* |t~|.
    """
    vel_unit = as_array(vel_unit, (6,), "vel_unit")
    d = as_positive(scene_scale, "scene_scale")
    sf = as_positive(focal_scale, "focal_scale")
    if np.linalg.norm(vel_unit[3:]) > np.pi:
        vel_unit = np.concatenate([vel_unit[:3], -log_so3(exp_so3(-vel_unit[3:]))])
    if sf == 1.0:
        return np.concatenate([d * vel_unit[:3], vel_unit[3:]])
    T = pbvs_inverse(vel_unit)
    R_u, t_u = T[:3, :3], T[:3, 3]
    S = np.diag([sf, sf, 1.0])
    S_inv = np.diag([1.0 / sf, 1.0 / sf, 1.0])
    norm_t = float(np.linalg.norm(t_u))
    T_hat = np.eye(4)
    if norm_t < 1e-12:
        # No translation, no epipolar geometry: the rotation is seen through the homography S^-1 R S;
        # take the nearest rotation to it.
        T_hat[:3, :3] = _nearest_rotation(S_inv @ R_u @ S)
        return pbvs(T_hat)
    # The left null vector of E^ is S^-1 t~, so the translation direction, sign included, is known exactly.
    # Of the twisted pair of rotations, the one nearer to R~ is right whenever the focal correction turns the
    # camera by less than 90 degrees: the other lies 180 degrees away about the baseline. A positive-depth vote
    # on virtual points (the notes' recipe) picked the wrong sign at s_f ~ 0.5 and large rotations.
    t_dir = S_inv @ t_u
    t_dir /= np.linalg.norm(t_dir)
    candidates = [R for R, t in essential_candidates(S @ skew(t_u) @ R_u @ S) if t @ t_dir > 0]
    T_hat[:3, :3] = min(candidates, key=lambda R: rotation_angle(R.T @ R_u))
    T_hat[:3, 3] = d * norm_t * t_dir
    return pbvs(T_hat)


def clamp_velocity(vel: ArrayLike, max_linear: float, max_angular: float) -> np.ndarray:
    """Scale the whole twist down so that |v| <= max_linear and |w| <= max_angular.

    One common factor keeps the screw axis, so a PBVS command still moves the camera along a straight line.
    """
    vel = as_array(vel, (6,), "vel")
    ml = as_positive(max_linear, "max_linear")
    ma = as_positive(max_angular, "max_angular")
    nv, nw = float(np.linalg.norm(vel[:3])), float(np.linalg.norm(vel[3:]))
    k = min(1.0, ml / nv if nv > 0 else np.inf, ma / nw if nw > 0 else np.inf)
    return vel * k


def executed_velocity(
    vel: ArrayLike, gain: float, max_linear: float | None = None, max_angular: float | None = None
) -> np.ndarray:
    """The twist a servo loop executes for a commanded velocity (6,): clamped to the speed limits, then times `gain`.

    CNS executes twice the command (gain 2). Evaluation (`evaluation.episodes.run_episode`) and DAgger rollouts both go
    through this, so the policy is trained on the states it will meet when it is evaluated. Without limits (None) the
    command is only scaled.
    """
    g = as_positive(gain, "gain")
    if max_linear is None or max_angular is None:
        return g * as_array(vel, (6,), "vel")
    return g * clamp_velocity(vel, max_linear, max_angular)
