"""Servo benchmark metrics as CNS reports them: success rate with a 95 % Wilson interval, final errors over successes,
and the split of episodes by initial rotation into thirds (S/M/L)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

CONFIDENCE = 0.95


@dataclass(frozen=True, eq=False)
class Trace:
    """What an episode went through, one row per observation (the initial one included): for the plots."""

    errors: np.ndarray  # (n, 2) translation error (metres) and rotation error (degrees)
    positions: np.ndarray  # (n, 3) camera centres, world frame
    desired: np.ndarray  # (3,) the desired camera centre


@dataclass(frozen=True)
class Episode:
    """The outcome of one servo episode."""

    success: bool
    te_m: float  # final translation error, metres
    re_deg: float  # final rotation error, degrees
    steps: int
    initial_re_deg: float  # initial rotation error, for the S/M/L split
    seconds: float = 0.0  # controller time, for FPS
    seed: int = -1
    reason: str = ""  # why it ended: "stop", "step limit", "controller failed: ...", or the env's abnormal end
    initial_te_m: float = float("nan")
    trace: Trace | None = field(default=None, compare=False, repr=False)


def is_success(te_m: float, re_deg: float, desired_distance: float) -> bool:
    """CNS's success rule: final translation error below 0.1 x |desired camera position| and rotation below 10°."""
    return te_m < 0.1 * desired_distance and re_deg < 10.0


def success_interval(successes: int, n: int) -> tuple[float, float, float]:
    """Success rate and its 95 % Wilson score interval: (rate, low, high).

    Wilson rather than the normal approximation, whose interval collapses to a point at 0/n and n/n ("20/20
    (100-100)") and overshoots [0, 1] near them; with 20 episodes, 20/20 gives 84-100 %.
    """
    if n <= 0:
        raise ValueError(f"need at least one episode, got {n}")
    if not 0 <= successes <= n:
        raise ValueError(f"successes must be within 0..{n}, got {successes}")
    from scipy.stats import binomtest

    ci = binomtest(successes, n).proportion_ci(confidence_level=CONFIDENCE, method="wilson")
    return successes / n, float(ci.low), float(ci.high)


def summarise(episodes: Sequence[Episode]) -> dict[str, float]:
    """One results row: episodes, successes, sr (+ interval), TE in mm (mean, std, median) and RE in degrees over
    successes, steps, FPS. The median because one episode that settles centimetres away moves a 20-episode mean by
    more than the rest of the row's spread."""
    n = len(episodes)
    ok = [e for e in episodes if e.success]
    sr, lo, hi = success_interval(len(ok), n)
    te = np.array([e.te_m * 1e3 for e in ok])
    re = np.array([e.re_deg for e in ok])
    steps = sum(e.steps for e in episodes)
    seconds = sum(e.seconds for e in episodes)
    nan = float("nan")
    return {
        "episodes": n,
        "successes": len(ok),
        "sr": sr,
        "sr_low": lo,
        "sr_high": hi,
        "te_mm_mean": float(te.mean()) if len(ok) else nan,
        "te_mm_std": float(te.std()) if len(ok) else nan,
        "te_mm_median": float(np.median(te)) if len(ok) else nan,
        "re_deg_mean": float(re.mean()) if len(ok) else nan,
        "re_deg_std": float(re.std()) if len(ok) else nan,
        "steps_mean": float(np.mean([e.steps for e in ok])) if ok else nan,
        "fps": steps / seconds if seconds > 0 else nan,
    }


def by_initial_rotation(episodes: Sequence[Episode]) -> dict[str, list[Episode]]:
    """Split episodes into thirds by initial rotation error, smallest first (CNS's S, M and L groups)."""
    order = sorted(episodes, key=lambda e: e.initial_re_deg)
    k = len(order) // 3
    return {"S": order[:k], "M": order[k : 2 * k], "L": order[2 * k :]}
