"""Tests of datagen: the producers, the Ray runner, inspection; the synthetic-shard helpers are in tests.shards."""
