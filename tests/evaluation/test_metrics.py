"""Servo benchmark metrics."""

from __future__ import annotations

import math
import statistics

import numpy as np
import pytest

from evaluation.metrics import Episode, by_initial_rotation, is_success, success_interval, summarise

pytestmark = pytest.mark.unit


def test_success_rule_follows_cns() -> None:
    assert is_success(0.09, 9.9, desired_distance=1.0)
    assert not is_success(0.11, 1.0, desired_distance=1.0)
    assert not is_success(0.01, 10.0, desired_distance=1.0)
    assert is_success(0.04, 1.0, desired_distance=0.5) and not is_success(0.06, 1.0, desired_distance=0.5)


def _wilson(k: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    # The textbook formula, to check scipy's interval against an independent computation.
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return centre - half, centre + half


@pytest.mark.parametrize(
    ("k", "low", "high"),
    [(0, 0.0, 0.16113), (2, 0.02787, 0.30103), (13, 0.43285, 0.81881), (18, 0.69897, 0.97213), (20, 0.83887, 1.0)],
)
def test_success_interval_is_wilson(k: int, low: float, high: float) -> None:
    p, lo, hi = success_interval(k, 20)
    assert p == k / 20
    assert (lo, hi) == pytest.approx((low, high), abs=1e-5)  # published Wilson 95 % values for k/20
    assert (lo, hi) == pytest.approx(_wilson(k, 20), abs=1e-9)


def test_all_or_nothing_still_has_an_interval() -> None:
    # The normal approximation gave 0/20 -> (0, 0) and 20/20 -> (1, 1): no uncertainty at all.
    _, lo, hi = success_interval(0, 20)
    assert lo == 0.0 and 0.15 < hi < 0.17
    _, lo, hi = success_interval(20, 20)
    assert 0.83 < lo < 0.85 and hi == 1.0
    _, lo, hi = success_interval(1, 1)
    assert 0.2 < lo < 0.21 and hi == 1.0  # one episode says little
    with pytest.raises(ValueError, match="at least one episode"):
        success_interval(0, 0)
    with pytest.raises(ValueError, match=r"within 0\.\.20"):
        success_interval(21, 20)


def test_summary_averages_errors_over_successes_only() -> None:
    eps = [
        Episode(True, 0.001, 0.1, 100, 30.0, 1.0),
        Episode(True, 0.003, 0.3, 200, 60.0, 1.0),
        Episode(False, 0.5, 90.0, 600, 170.0, 2.0),
    ]
    row = summarise(eps)
    assert row["episodes"] == 3 and row["successes"] == 2 and row["sr"] == pytest.approx(2 / 3)
    assert row["te_mm_mean"] == pytest.approx(2.0) and row["te_mm_std"] == pytest.approx(1.0)
    assert row["re_deg_mean"] == pytest.approx(0.2) and row["steps_mean"] == pytest.approx(150.0)
    assert row["fps"] == pytest.approx(900 / 4.0)
    none = summarise([Episode(False, 1.0, 90.0, 10, 10.0)])
    assert none["sr"] == 0.0 and math.isnan(none["te_mm_mean"]) and math.isnan(none["te_mm_median"])
    skewed = summarise([Episode(True, te, 0.1, 100, 30.0, 1.0) for te in (0.001, 0.002, 0.009)])
    assert skewed["te_mm_median"] == pytest.approx(2.0) and skewed["te_mm_mean"] == pytest.approx(4.0)


def test_thirds_by_initial_rotation() -> None:
    eps = [Episode(True, 0.0, 0.0, 1, r) for r in (90.0, 10.0, 170.0, 40.0, 120.0, 60.0)]
    groups = by_initial_rotation(eps)
    assert [e.initial_re_deg for e in groups["S"]] == [10.0, 40.0]
    assert [e.initial_re_deg for e in groups["M"]] == [60.0, 90.0]
    assert [e.initial_re_deg for e in groups["L"]] == [120.0, 170.0]


# The protocol's tolerances (shared/notes/benchmark-protocol.md), written out here rather than read from the code.
TOL_FRACTION, TOL_DEG = 0.1, 10.0


@pytest.mark.parametrize("d", [0.5, 1.0, 2.0, 4.0])  # powers of two: 0.1 * d is the same float as the literal bound
def test_success_is_strict_at_both_boundaries_and_scales_with_the_desired_distance(d: float) -> None:
    bound = TOL_FRACTION * d
    below_t, below_r = math.nextafter(bound, 0.0), math.nextafter(TOL_DEG, 0.0)
    assert is_success(below_t, below_r, desired_distance=d)
    assert not is_success(bound, 0.0, desired_distance=d)  # "below", so the boundary itself fails
    assert not is_success(0.0, TOL_DEG, desired_distance=d)
    assert not is_success(bound, TOL_DEG, desired_distance=d)
    # Either error alone over its bound fails, whatever the other: the rule is an "and" of the two.
    assert not is_success(0.0, 180.0, desired_distance=d) and not is_success(10.0 * d, 0.0, desired_distance=d)


def test_success_tolerance_is_relative_to_the_desired_distance_not_absolute() -> None:
    # d* = 2: 15 cm is inside 0.1 d* = 20 cm though over the unit world's 10 cm; d* = 0.5: 6 cm is over 5 cm.
    assert is_success(0.15, 1.0, desired_distance=2.0)
    assert not is_success(0.06, 1.0, desired_distance=0.5)
    # A translation error in metres is never compared with the degree bound, nor the other way round.
    assert is_success(0.19, 9.0, desired_distance=2.0) and not is_success(9.0, 0.19, desired_distance=2.0)


def _thirds_sizes(n: int) -> tuple[int, int, int]:
    # The published split: the README's and the model card's S/M/L rows of 20 episodes are 6/6/8, so a third is
    # floor(n / 3) for S and M and the remainder goes to L.
    return n // 3, n // 3, n - 2 * (n // 3)


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 7, 8, 10, 11, 20])
def test_thirds_of_counts_that_three_does_not_divide(n: int) -> None:
    angles = [float(a) for a in np.random.default_rng(n).permutation(np.arange(n) * 7.0 + 1.0)]
    eps = [Episode(True, 0.0, 0.0, 1, r) for r in angles]
    groups = by_initial_rotation(eps)
    s, m, l_ = _thirds_sizes(n)
    assert [len(groups[k]) for k in "SML"] == [s, m, l_]
    ranked = sorted(angles)
    assert [e.initial_re_deg for e in groups["S"] + groups["M"] + groups["L"]] == ranked
    assert sorted(map(id, groups["S"] + groups["M"] + groups["L"])) == sorted(map(id, eps))  # each episode once


def test_thirds_of_seven_are_two_two_and_three() -> None:
    eps = [Episode(True, 0.0, 0.0, 1, r) for r in (70.0, 10.0, 50.0, 30.0, 60.0, 20.0, 40.0)]
    groups = by_initial_rotation(eps)
    assert [e.initial_re_deg for e in groups["S"]] == [10.0, 20.0]
    assert [e.initial_re_deg for e in groups["M"]] == [30.0, 40.0]
    assert [e.initial_re_deg for e in groups["L"]] == [50.0, 60.0, 70.0]


def test_summary_row_carries_the_wilson_interval_the_spread_and_a_sub_second_fps() -> None:
    # Two successes with different rotation errors and a failure; the controller ran 0.5 s in all, under a second.
    eps = [
        Episode(True, 0.002, 1.0, 30, 20.0, 0.1),
        Episode(True, 0.004, 4.0, 50, 50.0, 0.15),
        Episode(False, 0.9, 120.0, 20, 150.0, 0.25),
    ]
    row = summarise(eps)
    assert (row["sr_low"], row["sr_high"]) == pytest.approx(_wilson(2, 3), abs=1e-9)
    assert row["te_mm_std"] == pytest.approx(statistics.pstdev([2.0, 4.0]))
    assert row["re_deg_mean"] == pytest.approx(2.5) and row["re_deg_std"] == pytest.approx(statistics.pstdev([1, 4]))
    assert row["fps"] == pytest.approx(100 / 0.5)  # 100 controller steps in half a second
    assert math.isnan(summarise([Episode(True, 0.0, 0.0, 0, 1.0)])["fps"])  # no controller time: no rate


def test_a_row_without_successes_has_no_error_statistics() -> None:
    row = summarise([Episode(False, 1.0, 90.0, 10, 10.0, 0.5), Episode(False, 2.0, 45.0, 20, 20.0, 0.5)])
    assert row["successes"] == 0 and row["sr"] == 0.0
    stats = ("te_mm_mean", "te_mm_std", "re_deg_mean", "re_deg_std", "steps_mean")
    assert all(math.isnan(row[k]) for k in stats), {k: row[k] for k in stats}
    assert row["fps"] == pytest.approx(30 / 1.0)
