"""Hypothesis strategies for rotations, poses and twists, weighted towards the numerically hard angles."""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

from sim.geometry import exp_so3

finite = st.floats(-1.0, 1.0, allow_nan=False)
unit_axis = (
    st.tuples(finite, finite, finite)
    .filter(lambda v: np.linalg.norm(v) > 0.1)
    .map(lambda v: np.asarray(v) / np.linalg.norm(v))
)
# Angles near 0 and near pi exercise the series expansions and the symmetric-part branch of the logarithm.
angle = st.one_of(
    st.floats(0.0, np.pi - 1e-3),
    st.floats(0.0, 1e-6),
    st.floats(np.pi - 1e-6, np.pi - 1e-9),
)
rotvec = st.builds(lambda u, a: u * a, unit_axis, angle)
rotation = rotvec.map(exp_so3)
translation = st.tuples(finite, finite, finite).map(np.asarray)


@st.composite
def pose(draw: st.DrawFn) -> np.ndarray:
    """A rigid transform with any rotation below pi and translation in [-1, 1]^3."""
    T = np.eye(4)
    T[:3, :3] = draw(rotation)
    T[:3, 3] = draw(translation)
    return T


@st.composite
def twist(draw: st.DrawFn, max_angle: float = np.pi - 1e-3) -> np.ndarray:
    """A twist (v, w) with |w| <= max_angle."""
    w = draw(unit_axis) * draw(st.floats(0.0, max_angle))
    return np.concatenate([draw(translation), w])
