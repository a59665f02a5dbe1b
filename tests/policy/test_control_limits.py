"""The twist a servo loop executes (`executed_velocity`): the command clamped by one common factor to the speed
limits, then times the gain; without limits only scaled. Checked on hand-computed twists."""

from __future__ import annotations

import numpy as np
import pytest

from policy.control import clamp_velocity, executed_velocity

pytestmark = pytest.mark.unit

# |v| = 5 m/s along (3, 0, 4), |w| = 1 rad/s along (0.6, 0, 0.8).
CMD = np.array([3.0, 0.0, 4.0, 0.6, 0.0, 0.8])


def test_without_limits_the_command_is_only_scaled_by_the_gain() -> None:
    np.testing.assert_allclose(executed_velocity(CMD, 2.0), [6.0, 0.0, 8.0, 1.2, 0.0, 1.6])
    np.testing.assert_allclose(executed_velocity(list(CMD), 0.5), 0.5 * CMD)
    # Both limits are needed to clamp: one alone leaves the command as it is.
    np.testing.assert_allclose(executed_velocity(CMD, 2.0, 0.5, None), 2.0 * CMD)
    np.testing.assert_allclose(executed_velocity(CMD, 2.0, None, 0.2), 2.0 * CMD)


@pytest.mark.parametrize(
    ("ml", "ma", "k"),
    [(0.5, 0.2, 0.1), (0.5, 0.05, 0.05), (10.0, 2.0, 1.0), (1.0, 0.5, 0.2)],  # k = min(1, ml / 5, ma / 1)
)
def test_limits_clamp_the_whole_twist_by_one_factor_before_the_gain(ml: float, ma: float, k: float) -> None:
    np.testing.assert_allclose(clamp_velocity(CMD, ml, ma), k * CMD)
    np.testing.assert_allclose(executed_velocity(CMD, 1.5, ml, ma), 1.5 * k * CMD)
    v = executed_velocity(CMD, 1.0, ml, ma)
    assert np.linalg.norm(v[:3]) <= ml * (1 + 1e-12) and np.linalg.norm(v[3:]) <= ma * (1 + 1e-12)


def test_a_pure_translation_or_rotation_is_clamped_by_its_own_limit_only() -> None:
    v = np.array([0.0, 0.0, 2.0, 0.0, 0.0, 0.0])
    np.testing.assert_allclose(clamp_velocity(v, 0.5, 1e-6), [0, 0, 0.5, 0, 0, 0])
    w = np.array([0.0, 0.0, 0.0, 0.0, 0.0, 3.0])
    np.testing.assert_allclose(clamp_velocity(w, 1e-6, 1.5), [0, 0, 0, 0, 0, 1.5])
    np.testing.assert_array_equal(clamp_velocity(np.zeros(6), 0.1, 0.1), np.zeros(6))


def test_a_gain_that_is_not_positive_is_refused() -> None:
    with pytest.raises(ValueError, match="gain"):
        executed_velocity(CMD, 0.0)
