"""Named seed streams: distinct, fixed to the numbers shards on disk were drawn with, and named-only."""

from __future__ import annotations

import numpy as np
import pytest

from sim.seeds import PRODUCER_IDS, Stream, derive_seed, rng_for

pytestmark = pytest.mark.unit

# Each stream's number before streams had names (sim/env.py, datagen/hemisphere.py, evaluation/openloop.py), with the
# first three draws of integers(2**62) for seed 123456789, computed with that code. The hemisphere shards on disk
# depend on them staying exactly so.
OLD_NUMBERS = {
    "SCENE": (0, [127802452281506895, 4181415968783004595, 4064710332940779694]),
    "POSES": (1, [3969606861895849869, 1665856553259295321, 1241931335816447155]),
    "EFFECTS": (2, [245705954944139031, 4420718584644384467, 2982339758060944122]),
    "LIGHTS": (3, [3880874169202918143, 1952132555202023400, 1534314779475175109]),
    "STOP_CALIBRATION": (7, [1619279939007657755, 4556088792876104003, 2192925358308214433]),
}


def test_no_two_streams_share_a_number() -> None:
    # __members__ lists aliases too: a name given an existing number would show up here.
    numbers = [int(m) for m in Stream.__members__.values()]
    assert len(numbers) == len(set(numbers))
    draws = {tuple(rng_for(5, s).integers(2**62, size=4)) for s in Stream}
    assert len(draws) == len(Stream)


@pytest.mark.parametrize("name", sorted(OLD_NUMBERS))
def test_streams_keep_the_numbers_the_shards_were_drawn_with(name: str) -> None:
    number, first = OLD_NUMBERS[name]
    assert int(Stream[name]) == number
    assert rng_for(123456789, Stream[name]).integers(2**62, size=3).tolist() == first
    assert np.array_equal(rng_for(99, Stream[name]).random(16), np.random.default_rng([99, number]).random(16))


def test_derived_seeds_are_unchanged() -> None:
    assert PRODUCER_IDS == {"hemisphere": 0, "dagger": 1}
    assert [derive_seed(0, 0, 0, 0, k) for k in range(3)] == [
        8069282889424829228,
        1445747666553143162,
        6960949860196659202,
    ]
    assert derive_seed(7, 1, 2, 3, 4) == 7775231346717819395
    assert all(0 <= derive_seed(s, 1) < 2**63 for s in range(50))


def test_the_dagger_coin_is_not_the_lights_stream() -> None:
    # With the coin on the lights' stream, the first coin of every episode was the first relighting draw: r = 1.
    seeds = range(400)
    coin = np.array([rng_for(s, Stream.DAGGER_COIN).random() for s in seeds])
    lights = np.array([rng_for(s, Stream.LIGHTS).random() for s in seeds])
    assert abs(np.corrcoef(coin, lights)[0, 1]) < 0.2
    assert not np.array_equal(rng_for(3, Stream.DAGGER_COIN).random(32), rng_for(3, Stream.LIGHTS).random(32))


def test_rng_for_takes_only_a_named_stream_and_a_seed() -> None:
    with pytest.raises(TypeError, match="Stream member"):
        rng_for(1, 3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="seed must be >= 0"):
        rng_for(-1, Stream.SCENE)
    with pytest.raises(TypeError):
        rng_for(1.5, Stream.SCENE)  # type: ignore[arg-type]
    assert np.array_equal(rng_for(np.int64(4), Stream.POSES).random(3), rng_for(4, Stream.POSES).random(3))
