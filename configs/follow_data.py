"""One config follows the data: jobs that read a dataset take its world from the config the dataset was made with.

A dataset root records its config (`config.yaml`, else the `config` of `info.json`, both written when the root is
created). Training and evaluation of a run load their config as usual, then take from that record every key under
`FOLLOWED` that decides what a shard contains (`configs.provenance`): assets, camera, renderer, scene, poses,
producer settings. So `make train` and `make eval` with the run's name use the assets its data was made with, whatever
`--config` says. A key set on the command line wins over the record, and says so. A root with no record changes
nothing. Jobs that write a dataset (datagen, the pipeline) do not follow: the writer refuses a config that differs in
what shards contain, naming the keys.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from configs.loader import RESOLVED_NAME, ConfigError, load_config, parse_overrides
from configs.provenance import flatten, is_content
from configs.schema import Config

# Sections of the recorded config a reading job takes: the world the data shows and how its producers drew it. The
# policy is not among them: a run may train or measure another network on the same data.
FOLLOWED: tuple[str, ...] = ("sim", "datagen")
INFO_FILE = "info.json"  # the dataset's own record (shards.format.INFO_FILE; configs imports no other package)


@dataclass(frozen=True)
class Followed:
    """A config loaded for a dataset's root: the config, the root whose record it followed (None: no record), the
    keys taken from the record where the config file differed (key -> value), and the keys the command line set
    against the record (key -> (dataset value, value used))."""

    cfg: Config
    root: str | None = None
    taken: dict[str, Any] = field(default_factory=dict)
    overridden: dict[str, tuple[Any, Any]] = field(default_factory=dict)

    def notes(self) -> list[str]:
        """One line for the taken keys and one for the overridden ones (none when the config agreed)."""
        out = []
        if self.taken:
            out.append(
                f"following the dataset {self.root} (the config it was made with) where the config file differs: "
                + ", ".join(self.taken)
            )
        if self.overridden:
            out.append(
                f"the command line overrides the dataset {self.root}: "
                + "; ".join(f"{k}={new!r} (dataset: {old!r})" for k, (old, new) in self.overridden.items())
            )
        return out

    def defaults(self) -> dict[str, Any]:
        """The taken keys as a nested mapping: `load_config(..., defaults=...)` applies them to another load of the
        same file (an evaluation suite's config)."""
        return _nested(self.taken)

    def record(self) -> dict[str, Any]:
        """The same as plain data, for an output's metadata."""
        return {
            "dataset": self.root,
            "taken_from_dataset": dict(self.taken),
            "overridden": {k: {"dataset": old, "used": new} for k, (old, new) in self.overridden.items()},
        }


def recorded_config(root: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The config a dataset root records (its `config.yaml`, else `info.json`'s `config`), or None when the root
    records none. ConfigError when the record exists but cannot be read."""
    root = Path(root)
    for path, read in ((root / RESOLVED_NAME, yaml.safe_load), (root / INFO_FILE, lambda t: json.loads(t)["config"])):
        if not path.is_file():
            continue
        try:
            tree = read(path.read_text())
        except (OSError, ValueError, KeyError, TypeError, yaml.YAMLError) as err:
            raise ConfigError([f"{path}: unreadable dataset config ({type(err).__name__}: {err})"]) from None
        if isinstance(tree, Mapping):
            return dict(tree)
        raise ConfigError([f"{path}: the dataset config is not a mapping"])
    return None


def _covered(key: str, set_keys: Sequence[str]) -> bool:
    return any(key == k or key.startswith(k + ".") for k in set_keys)


def _nested(flat: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in flat.items():
        node = out
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return out


def load_following_data(name: str | os.PathLike[str], overrides: Sequence[str] = ()) -> Followed:
    """Load config `name` with `overrides`, then take the `FOLLOWED` content keys of the dataset at its `data.root`
    where they differ and the command line does not set them. ConfigError as `load_config`."""
    cfg = load_config(name, overrides)
    recorded = recorded_config(cfg.data.root)
    if recorded is None:
        return Followed(cfg)
    set_keys = [o.split("=", 1)[0] for o in parse_overrides(overrides)]
    old, cur = flatten(recorded), flatten(cfg.model_dump(mode="json"))
    differing = {
        k: v for k, v in old.items() if k.split(".")[0] in FOLLOWED and is_content(k) and k in cur and cur[k] != v
    }
    taken = {k: v for k, v in differing.items() if not _covered(k, set_keys)}
    overridden = {k: (v, cur[k]) for k, v in differing.items() if _covered(k, set_keys)}
    if taken:
        cfg = load_config(name, overrides, defaults=_nested(taken))
    return Followed(cfg, str(cfg.data.root), taken, overridden)


def config_following_data(parser: argparse.ArgumentParser, args: argparse.Namespace) -> Followed:
    """`load_following_data` for a CLI: prints each note once (stderr) and exits 2 with the error for a bad config."""
    try:
        followed = load_following_data(args.config, args.overrides)
    except ConfigError as err:
        parser.exit(2, f"{parser.prog}: error: {err}\n")
    for line in followed.notes():
        print(f"{parser.prog}: note: {line}", file=sys.stderr)
    return followed
