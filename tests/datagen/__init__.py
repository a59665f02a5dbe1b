"""Tests of datagen: the producers, the Ray runner, inspection; synthetic shards come from tests/fixtures."""
