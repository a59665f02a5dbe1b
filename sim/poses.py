"""The CNS pose sampler: cameras on the upper hemisphere looking at the scene centre, drawn in pairs.

A camera sits at distance r from the scene centre at azimuth a and elevation e (sin e uniform, so positions are
uniform in area on the sphere band), looks at the centre with its image y axis pointing down the meridian, then
turns by a small extra rotation Rz Ry Rx about its own axes (shared/notes/benchmark-protocol.md).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from configs.schema import PoseDistribution, PosePairConfig
from sim.geometry import exp_so3, make_pose, pose_error, rot_x, rot_y, rot_z
from sim.validate import as_array


def hemisphere_pose(radius: float, azimuth: float, elevation: float, center: ArrayLike = (0.0, 0.0, 0.0)) -> np.ndarray:
    """Return wTc of an OpenCV camera on the sphere looking at `center`, image y down the meridian (radians)."""
    c = as_array(center, (3,), "center")
    ca, sa, ce, se = np.cos(azimuth), np.sin(azimuth), np.cos(elevation), np.sin(elevation)
    outward = np.array([ce * ca, ce * sa, se])
    z = -outward
    # Downhill along the meridian, -d(outward)/d(elevation); well defined at the pole, unlike look_at's up vector.
    y = np.array([se * ca, se * sa, -ce])
    x = np.cross(y, z)
    return make_pose(np.stack([x, y, z], axis=1), c + radius * outward)


def sample_pose(rng: np.random.Generator, dist: PoseDistribution, center: ArrayLike = (0.0, 0.0, 0.0)) -> np.ndarray:
    """Draw one camera pose wTc from a CNS pose distribution."""
    r = rng.uniform(*dist.radius)
    az = np.radians(rng.uniform(*dist.azimuth_deg))
    s_lo, s_hi = np.sin(np.radians(dist.elevation_deg))
    el = np.arcsin(rng.uniform(s_lo, s_hi))
    ext = dist.extra_rotation_deg
    gz, gy, gx = (np.radians(rng.uniform(-m, m)) for m in (ext.z, ext.y, ext.x))
    T = hemisphere_pose(r, az, el, center)
    T[:3, :3] = T[:3, :3] @ rot_z(gz) @ rot_y(gy) @ rot_x(gx)
    return T


def sample_pose_pair(
    rng: np.random.Generator, cfg: PosePairConfig, center: ArrayLike = (0.0, 0.0, 0.0)
) -> tuple[np.ndarray, np.ndarray]:
    """Draw (wTd, wTc): a desired and an initial pose, rejecting initial poses that already sit at the goal."""
    wTd = sample_pose(rng, cfg.desired, center)
    return wTd, sample_initial(rng, cfg, wTd, center)


def sample_initial(
    rng: np.random.Generator, cfg: PosePairConfig, wTd: np.ndarray, center: ArrayLike = (0.0, 0.0, 0.0)
) -> np.ndarray:
    """Draw an initial pose for the desired pose wTd, rejecting draws within the configured distance of it."""
    for _ in range(cfg.max_tries):
        wTc = sample_pose(rng, cfg.initial, center)
        te, re = pose_error(wTc, wTd)
        if not (te < cfg.min_translation and re < cfg.min_rotation_deg):
            return wTc
    raise RuntimeError(
        f"sample_pose_pair: {cfg.max_tries} initial poses all fell within {cfg.min_rotation_deg} deg and "
        f"{cfg.min_translation} m of the desired pose; widen sim.poses.initial"
    )


def scene_scale(wTd: ArrayLike, center: ArrayLike = (0.0, 0.0, 0.0)) -> float:
    """Return d*, the distance from the desired camera to the scene centre (1 in the unit world)."""
    T = as_array(wTd, (4, 4), "wTd")
    return float(np.linalg.norm(T[:3, 3] - as_array(center, (3,), "center")))


def _log_uniform(rng: np.random.Generator, lo: float, hi: float, name: str) -> float:
    if not 0 < lo <= hi:
        raise ValueError(f"{name}: a log-uniform range needs 0 < low <= high, got [{lo}, {hi}]")
    return float(np.exp(rng.uniform(np.log(lo), np.log(hi))))


def _unit_vector(rng: np.random.Generator) -> np.ndarray:
    v = rng.normal(size=3)
    return v / np.linalg.norm(v)


def sample_near(
    rng: np.random.Generator,
    wTd: ArrayLike,
    translation: tuple[float, float],
    rotation_deg: tuple[float, float],
) -> np.ndarray:
    """Draw a current pose wTc close to the desired pose wTd: the last metres and degrees of an episode.

    The offset (in units of d*, the desired camera's distance to the scene centre) and the rotation angle are
    log-uniform in their ranges, so every scale down to sub-millimetre is equally represented; directions and axes
    are uniform. The hemisphere distributions never come this close (their labels stay above |v| ~ 0.3).
    """
    T = as_array(wTd, (4, 4), "wTd")
    d = scene_scale(T)
    t = _log_uniform(rng, *translation, "near_goal_translation") * d * _unit_vector(rng)
    angle = np.radians(_log_uniform(rng, *rotation_deg, "near_goal_rotation_deg"))
    return T @ make_pose(exp_so3(angle * _unit_vector(rng)), t)


def orbit_pose(wTd: ArrayLike, rotvec: ArrayLike) -> np.ndarray:
    """Turn the camera wTd by the rotation vector `rotvec` (world frame, rad) about the point d* ahead of it.

    c = t_d + d* z_d is the point the optical axis meets at the scene's distance; wTc = [R, (I - R) c] wTd with
    R = exp(rotvec). For an axis normal to z_d the camera keeps looking at c from distance d*, so translation and tilt
    nearly cancel in the image: TE = 2 d* sin(theta / 2), RE = theta.
    """
    T = as_array(wTd, (4, 4), "wTd")
    R = exp_so3(as_array(rotvec, (3,), "rotvec"))
    c = T[:3, 3] + scene_scale(T) * T[:3, 2]
    return make_pose(R, c - R @ c) @ T


def sample_orbit(rng: np.random.Generator, wTd: ArrayLike, rotation_deg: tuple[float, float]) -> np.ndarray:
    """Draw wTc on the orbit through wTd about the point d* ahead (`orbit_pose`), the angle log-uniform.

    The axis is uniform among those normal to the optical axis. TE/RE is about 1 d* per radian there: the ambiguity in
    which a coarse matcher stops short of the goal (docs/cpu-recipe.md); `sample_near` almost never draws it.
    """
    T = as_array(wTd, (4, 4), "wTd")
    z = T[:3, 2]
    a = _unit_vector(rng)
    a = a - (a @ z) * z
    a /= np.linalg.norm(a)
    return orbit_pose(T, np.radians(_log_uniform(rng, *rotation_deg, "near_goal_rotation_deg")) * a)
