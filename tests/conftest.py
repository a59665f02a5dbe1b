"""Shared test fixtures: the ViSP reference cases and a deterministic hypothesis profile."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

FIXTURES = Path(__file__).parent / "fixtures"

# Derandomised so that CI is reproducible; the examples still cover near-0 and near-pi angles by construction.
settings.register_profile(
    "project", derandomize=True, deadline=None, max_examples=200, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile("project")


@pytest.fixture(scope="session")
def visp_cases() -> list[dict]:
    """ViSP 3.5's own control-law outputs (copied from shared/reference/visp_cases.json)."""
    return json.loads((FIXTURES / "visp_cases.json").read_text())["cases"]
