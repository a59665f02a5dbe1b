"""SO(3) and SE(3): exponential and logarithm maps, pose algebra, look-at and pose error metrics.

Conventions (DESIGN.md): a pose `aTb` is a 4x4 float64 array with P_a = aTb @ P_b; cameras use OpenCV axes
(x right, y down, z forward); the world is z-up. A twist is (vx, vy, vz, wx, wy, wz) in the moving frame,
and a step updates a pose as `wTc @ exp_se3(xi, dt)`.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from sim.validate import as_array, as_pose, as_rotation

# Below this angle the closed forms lose precision to cancellation; their Taylor series are exact to 1e-17.
_SMALL = 1e-2
# Above this angle sin(theta) is too small to carry the rotation axis; read it from the symmetric part.
_NEAR_PI = 0.75 * np.pi


def skew(v: ArrayLike) -> np.ndarray:
    """Return the 3x3 matrix [v]x with [v]x @ a = v x a."""
    x, y, z = as_array(v, (3,), "v")
    return np.array([[0.0, -z, y], [z, 0.0, -x], [-y, x, 0.0]])


def vee(S: ArrayLike) -> np.ndarray:
    """Return v from a skew-symmetric matrix [v]x (the antisymmetric part is used)."""
    S = as_array(S, (3, 3), "S")
    return 0.5 * np.array([S[2, 1] - S[1, 2], S[0, 2] - S[2, 0], S[1, 0] - S[0, 1]])


def _sinc(theta: float) -> float:
    return float(np.sinc(theta / np.pi))


def _half_one_minus_cos_over_sq(theta: float) -> float:
    # (1 - cos t) / t^2 written as sinc^2(t/2) / 2, which has no cancellation.
    return 0.5 * _sinc(0.5 * theta) ** 2


def _theta_minus_sin_over_cube(theta: float) -> float:
    if theta < _SMALL:
        t2 = theta * theta
        return 1.0 / 6.0 - t2 / 120.0 + t2 * t2 / 5040.0
    return (theta - np.sin(theta)) / theta**3


def exp_so3(w: ArrayLike) -> np.ndarray:
    """Return the rotation matrix exp([w]x) of a rotation vector w (Rodrigues)."""
    w = as_array(w, (3,), "w")
    theta = float(np.linalg.norm(w))
    W = skew(w)
    return np.eye(3) + _sinc(theta) * W + _half_one_minus_cos_over_sq(theta) * (W @ W)


def log_so3(R: ArrayLike) -> np.ndarray:
    """Return the rotation vector theta*u of a rotation matrix, with theta in [0, pi]."""
    R = as_rotation(R)
    a = vee(R)  # sin(theta) * u
    c = 0.5 * (np.trace(R) - 1.0)
    s = float(np.linalg.norm(a))
    theta = float(np.arctan2(s, c))
    if theta < _NEAR_PI:
        return a / _sinc(theta)
    # (R + R^T)/2 - cos(theta) I = (1 - cos(theta)) u u^T; its largest column gives u without dividing by sin.
    B = 0.5 * (R + R.T) - c * np.eye(3)
    k = int(np.argmax(np.diag(B)))
    u = B[:, k] / np.sqrt(B[k, k] * (1.0 - c))
    if u @ a < 0:
        u = -u
    return theta * u


def rotation_angle(R: ArrayLike) -> float:
    """Return the rotation angle of R in radians, in [0, pi], accurate near 0 and pi."""
    R = as_rotation(R)
    return float(np.arctan2(np.linalg.norm(vee(R)), 0.5 * (np.trace(R) - 1.0)))


def _left_jacobian(w: np.ndarray) -> np.ndarray:
    theta = float(np.linalg.norm(w))
    W = skew(w)
    return np.eye(3) + _half_one_minus_cos_over_sq(theta) * W + _theta_minus_sin_over_cube(theta) * (W @ W)


def exp_se3(xi: ArrayLike, dt: float = 1.0) -> np.ndarray:
    """Return the 4x4 displacement of the constant twist `xi` (v, w) held for `dt`."""
    xi = as_array(xi, (6,), "xi") * float(dt)
    T = np.eye(4)
    T[:3, :3] = exp_so3(xi[3:])
    T[:3, 3] = _left_jacobian(xi[3:]) @ xi[:3]
    return T


def log_se3(T: ArrayLike) -> np.ndarray:
    """Return the twist xi = (v, w) with exp_se3(xi) == T, rotation angle in [0, pi]."""
    T = as_pose(T)
    w = log_so3(T[:3, :3])
    theta = float(np.linalg.norm(w))
    W = skew(w)
    if theta < _SMALL:
        t2 = theta * theta
        d = 1.0 / 12.0 + t2 / 720.0 + t2 * t2 / 30240.0
    else:
        # (1 - (t/2) cot(t/2)) / t^2 stays finite up to t = pi, where cot(pi/2) = 0.
        half = 0.5 * theta
        d = (1.0 - half * np.cos(half) / np.sin(half)) / (theta * theta)
    V_inv = np.eye(3) - 0.5 * W + d * (W @ W)
    return np.concatenate([V_inv @ T[:3, 3], w])


def make_pose(R: ArrayLike, t: ArrayLike) -> np.ndarray:
    """Return the 4x4 pose [R t; 0 1]."""
    T = np.eye(4)
    T[:3, :3] = as_rotation(R)
    T[:3, 3] = as_array(t, (3,), "t")
    return T


def inv_pose(T: ArrayLike) -> np.ndarray:
    """Return the inverse of a rigid transform, [R^T, -R^T t]."""
    T = as_pose(T)
    Ti = np.eye(4)
    Ti[:3, :3] = T[:3, :3].T
    Ti[:3, 3] = -T[:3, :3].T @ T[:3, 3]
    return Ti


def relative_pose(wTd: ArrayLike, wTc: ArrayLike) -> np.ndarray:
    """Return dTc = inv(wTd) @ wTc, the current camera in the desired camera's frame."""
    return inv_pose(as_pose(wTd, "wTd")) @ as_pose(wTc, "wTc")


def rot_x(angle: float) -> np.ndarray:
    """Return the rotation by `angle` radians about x."""
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


def rot_y(angle: float) -> np.ndarray:
    """Return the rotation by `angle` radians about y."""
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def rot_z(angle: float) -> np.ndarray:
    """Return the rotation by `angle` radians about z."""
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def look_at(eye: ArrayLike, target: ArrayLike, up: ArrayLike = (0.0, 0.0, 1.0)) -> np.ndarray:
    """Return wTc of an OpenCV camera at `eye` looking at `target`, with image y pointing away from `up`."""
    eye = as_array(eye, (3,), "eye")
    target = as_array(target, (3,), "target")
    up = as_array(up, (3,), "up")
    z = target - eye
    dist = float(np.linalg.norm(z))
    if dist < 1e-12:
        raise ValueError("look_at: eye and target coincide")
    z /= dist
    x = np.cross(z, up)
    nx = float(np.linalg.norm(x))
    if nx < 1e-9 * max(float(np.linalg.norm(up)), 1e-300):
        raise ValueError("look_at: viewing direction is parallel to `up`; pass another up vector")
    x /= nx
    y = np.cross(z, x)
    return make_pose(np.stack([x, y, z], axis=1), eye)


def pose_error(T_a: ArrayLike, T_b: ArrayLike) -> tuple[float, float]:
    """Return (translation in metres, rotation in degrees) of inv(T_a) @ T_b, the error metric of CNS."""
    E = inv_pose(as_pose(T_a, "T_a")) @ as_pose(T_b, "T_b")
    return float(np.linalg.norm(E[:3, 3])), float(np.degrees(rotation_angle(E[:3, :3])))
