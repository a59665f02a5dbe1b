"""Which config keys decide what a dataset's shards contain, and where two configs differ in them.

A dataset root records the config it was made with (`info.json`). A later run on the same root may change how much,
where, or with how many actors data is made, and anything about training or evaluation; any other difference would
mix two datasets under one record, so the writer refuses it unless `datagen.append` says to.
"""

from __future__ import annotations

from collections.abc import Mapping
from fnmatch import fnmatchcase
from typing import Any

# Dotted keys (fnmatch patterns; a pattern also covers every key below it) that never change what a shard holds.
NOT_CONTENT: tuple[str, ...] = (
    "run.name",
    "run.root",
    "datagen.root",
    "datagen.checkpoints",
    "datagen.ray_address",
    "datagen.num_cpus",
    "datagen.append",
    "datagen.*.actors",
    "datagen.*.num_cpus",
    "datagen.*.num_gpus",
    "datagen.*.resources",
    "datagen.*.samples",
    "datagen.*.max_restarts",
    "datagen.*.threads",
    "datagen.dagger.device",
    "policy.loss",
    "policy.servo.stop_velocity",  # DAgger rollouts end by step count, never by Servo's stop rule
    "policy.servo.stop_steps",
    "policy.servo.threads",
    "policy.compile",
    "data",
    "train",
    "eval",
)


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested mapping as {'a.b.c': leaf}; an empty mapping is a leaf."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(flatten(value, path + "."))
        else:
            out[path] = value
    return out


def is_content(key: str) -> bool:
    """Whether the dotted key `key` decides what a shard contains (no `NOT_CONTENT` pattern covers it)."""
    return not _ignored(key)


def _ignored(key: str) -> bool:
    parts = key.split(".")
    prefixes = [".".join(parts[: i + 1]) for i in range(len(parts))]
    return any(fnmatchcase(p, pattern) for pattern in NOT_CONTENT for p in prefixes)


def content_differences(recorded: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """The keys, as 'a.b.c: old -> new', whose values differ between two config dumps (`Config.model_dump`) and
    that change what a shard contains. A key missing from `recorded` predates that option and is not a difference.
    """
    old, cur = flatten(recorded), flatten(new)
    return [
        f"{key}: {old[key]!r} -> {cur.get(key, '<absent>')!r}"
        for key in sorted(old)
        if not _ignored(key) and old[key] != cur.get(key, "<absent>")
    ]
