"""Shared test set-up: the factories plugin, the ViSP reference cases, a deterministic hypothesis profile, and the rule
that every test says what kind it is.

Kinds (declared in pyproject.toml): `unit` runs in this process without a renderer, Ray or a training run;
`integration` starts Ray, renders with MuJoCo, trains or servos in closed loop, or runs a child process (a CLI, `make`,
spawned workers, a fresh interpreter); `slow` marks the longest of either kind. `make test-fast` runs the unit tests
that are not slow; `make test` runs everything.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

pytest_plugins = ["tests.fixtures.factories"]

FIXTURES = Path(__file__).parent / "fixtures"
KINDS = ("unit", "integration")
_STARTED = pytest.StashKey[float]()

# Derandomised so that CI is reproducible; the examples still cover near-0 and near-pi angles by construction.
settings.register_profile(
    "project", derandomize=True, deadline=None, max_examples=200, suppress_health_check=[HealthCheck.too_slow]
)
# make mutation (tests/mutation.py) runs the tests once per mutant: fewer examples, the same derandomised draw.
settings.register_profile("mutation", settings.get_profile("project"), max_examples=50)
settings.load_profile(os.environ.get("CNSV2_HYPOTHESIS_PROFILE", "project"))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Refuse the run when a test is marked neither or both of unit and integration.

    Runs before `-m` deselects anything, so a test without a kind cannot hide from `make test-fast` by being left out.
    """
    wrong = [item.nodeid for item in items if sum(item.get_closest_marker(k) is not None for k in KINDS) != 1]
    if wrong:
        listed = "\n  ".join(wrong[:20]) + (f"\n  ... and {len(wrong) - 20} more" if len(wrong) > 20 else "")
        raise pytest.UsageError(
            f"{len(wrong)} tests are marked neither or both of {' and '.join(KINDS)} (see tests/conftest.py): "
            f"mark each one, or its module with pytestmark\n  {listed}"
        )
    if "__mutmut_" in os.environ.get("MUTANT_UNDER_TEST", ""):
        _fastest_first(items)


def pytest_sessionstart(session: pytest.Session) -> None:
    session.config.stash[_STARTED] = time.monotonic()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Under a mutant, append its wall seconds and pytest's exit status to mutant-seconds.jsonl in mutants/, which
    tests/mutation.py reads to show where a module's time goes (mutmut's forkserver records no durations itself)."""
    name = os.environ.get("MUTANT_UNDER_TEST", "")
    if "__mutmut_" not in name or not Path("mutmut-stats.json").exists():
        return
    seconds = time.monotonic() - session.config.stash.get(_STARTED, time.monotonic())
    line = json.dumps({"mutant": name, "seconds": round(seconds, 2), "exit": int(exitstatus)}) + "\n"
    with open("mutant-seconds.jsonl", "a") as f:  # one short append per mutant: the two workers' lines do not mix
        f.write(line)


def _fastest_first(items: list[pytest.Item]) -> None:
    """Under a mutant (make mutation), run the selected tests in order of their measured duration.

    mutmut runs a mutant's tests with -x, in the arbitrary order of a set, so a mutant that the quickest test kills
    could first wait for the slowest one. The durations are those mutmut measured on the unmutated code
    (mutmut-stats.json, in the mutants/ folder it runs from); a test it did not time goes last.
    """
    stats = Path("mutmut-stats.json")
    if not stats.exists():
        return
    seconds = json.loads(stats.read_text()).get("duration_by_test", {})
    items.sort(key=lambda item: seconds.get(item.nodeid, float("inf")))


@pytest.fixture(scope="session")
def visp_cases() -> list[dict]:
    """ViSP 3.5's own control-law outputs (copied from shared/reference/visp_cases.json)."""
    return json.loads((FIXTURES / "visp_cases.json").read_text())["cases"]


@pytest.fixture(autouse=True)
def _torch_threads_restored():
    """Servo, producers and trainer workers set torch's process-wide thread count (runtime.threads); in the one
    pytest process that would leak into every later test (a 1-thread Servo test left the learning test 2.6x slower)."""
    torch = sys.modules.get("torch")
    before = torch.get_num_threads() if torch is not None else None
    yield
    torch = sys.modules.get("torch")
    if torch is not None and before is not None and torch.get_num_threads() != before:
        torch.set_num_threads(before)
