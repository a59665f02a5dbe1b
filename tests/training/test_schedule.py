"""The learning-rate schedule."""

from __future__ import annotations

import itertools

import pytest

from training.schedule import lr_factor

pytestmark = pytest.mark.unit


def test_warmup_then_cosine_to_the_floor() -> None:
    f = [lr_factor(s, warmup=10, total=110, min_ratio=0.1) for s in range(130)]
    assert f[0] == pytest.approx(0.1) and f[9] == pytest.approx(1.0)
    assert all(a < b for a, b in itertools.pairwise(f[:10]))  # linear warm-up
    assert f[10] == pytest.approx(1.0) and f[60] == pytest.approx(0.55)  # half way down the cosine
    assert all(a >= b for a, b in itertools.pairwise(f[10:111]))
    assert f[110] == pytest.approx(0.1) and f[129] == pytest.approx(0.1)  # stays at the floor


def test_no_warmup() -> None:
    assert lr_factor(0, warmup=0, total=10, min_ratio=0.0) == pytest.approx(1.0)
    assert lr_factor(10, warmup=0, total=10, min_ratio=0.0) == pytest.approx(0.0)
