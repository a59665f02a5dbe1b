"""Deterministic seeds from explicit integers (run, producer, round, shard, episode)."""

from __future__ import annotations

import numpy as np

PRODUCER_IDS = {"hemisphere": 0, "dagger": 1}


def derive_seed(*parts: int) -> int:
    """A non-negative 63-bit seed that depends on every part; the same parts always give the same seed."""
    state = np.random.SeedSequence([int(p) for p in parts]).generate_state(2, np.uint32)
    return int((int(state[0]) << 31) ^ int(state[1])) & ((1 << 63) - 1)


def rng_for(*parts: int) -> np.random.Generator:
    """A Generator seeded from `parts`."""
    return np.random.default_rng([int(p) for p in parts])
