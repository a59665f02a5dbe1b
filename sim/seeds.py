"""Seeds: every random stream of an episode named once, and seeds derived from explicit integers.

An episode (a hemisphere scene, a DAgger rollout, a benchmark episode) has one integer seed. Each kind of random
choice made in it draws from its own `Stream` of that seed, `rng_for(seed, Stream.X)`, so changing how much one part
draws (another light, a longer rollout) never shifts the numbers of another part. The seeds themselves come from
`derive_seed(run seed, producer, round, shard index, episode)`, so a shard is a pure function of the run's seed.

The stream numbers are part of the data: hemisphere shards on disk were drawn with them, and reruns fill holes
with the same samples only while they stay put. Add a stream with a new number; never renumber one.
"""

from __future__ import annotations

import enum
import operator

import numpy as np


@enum.unique
class Stream(enum.IntEnum):
    """The independent random streams of one episode seed. The values are fixed forever (see the module docstring)."""

    SCENE = 0  # the scene sampler: objects, materials, ground, sky, lights, ambient, effect strengths
    POSES = 1  # desired and initial camera poses
    EFFECTS = 2  # per-image camera effects (sensor noise)
    LIGHTS = 3  # the relit desired view of the lighting-change case
    DAGGER_COIN = 4  # DAgger's per-step coin: does the expert or the policy act
    STOP_CALIBRATION = 7  # evaluation.openloop's poses near and beyond the goal
    AMBIGUITY_PROBE = 8  # evaluation.openloop's axes of the translation-tilt ambiguity probe


# The producer part of a derived seed, so that hemisphere and DAgger never draw the same episode seeds.
PRODUCER_IDS = {"hemisphere": 0, "dagger": 1}


def derive_seed(*parts: int) -> int:
    """A non-negative 63-bit seed that depends on every part; the same parts always give the same seed."""
    state = np.random.SeedSequence([int(p) for p in parts]).generate_state(2, np.uint32)
    return int((int(state[0]) << 31) ^ int(state[1])) & ((1 << 63) - 1)


def rng_for(seed: int, stream: Stream) -> np.random.Generator:
    """The Generator of `stream` for episode `seed`: the same (seed, stream) always gives the same numbers.

    Only a `Stream` member is accepted, so that no caller can pick a bare number that another stream already uses.
    """
    if not isinstance(stream, Stream):
        raise TypeError(f"rng_for: stream must be a sim.seeds.Stream member, got {stream!r}")
    seed = operator.index(seed)
    if seed < 0:
        raise ValueError(f"rng_for: seed must be >= 0, got {seed}")
    # [seed, number] is how these streams were seeded before they had names; keeping it keeps every shard's numbers.
    return np.random.default_rng([seed, int(stream)])
