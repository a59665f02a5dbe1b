"""Benchmark suites: YAML files in configs/eval/ that override the run config (camera, d*, scenes, lighting).

A suite file holds a `description`, optionally the `controllers` it applies to (e.g. unaware suites only concern
CNSv2: the classical laws always know K and d*), and `overrides`, a mapping of dotted config keys (a nested mapping
sets every leaf below it). `configs/eval/common.yaml` applies to every suite first; the user's own overrides last.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from configs import load_config
from configs.loader import ConfigError
from configs.schema import EVAL_CONTROLLERS, Config

SUITE_DIR = Path(__file__).resolve().parent.parent / "configs" / "eval"
COMMON = "common"
KEYS = {"description", "controllers", "overrides"}


@dataclass(frozen=True)
class Suite:
    """One benchmark suite: its name, what it tests, the controllers it concerns and its config overrides."""

    name: str
    description: str
    controllers: tuple[str, ...]  # empty: every controller
    overrides: tuple[str, ...]  # "key.sub=value"

    def applies_to(self, controller: str) -> bool:
        """Whether this suite measures `controller`."""
        return not self.controllers or controller in self.controllers


def available_suites() -> list[str]:
    """The suite names shipped in configs/eval/."""
    return sorted(p.stem for p in SUITE_DIR.glob("*.yaml") if p.stem != COMMON)


def _flatten(tree: Mapping[str, Any], prefix: str = "") -> list[str]:
    out = []
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out += _flatten(value, dotted + ".")
        else:
            out.append(f"{dotted}={yaml.safe_dump(value, default_flow_style=True, width=10**6).strip()}")
            if out[-1].endswith("\n..."):
                out[-1] = out[-1][: -len("\n...")]
    return out


def _suite_path(name: str | os.PathLike[str]) -> Path:
    p = Path(name)
    if p.suffix in (".yaml", ".yml") and p.is_file():
        return p.resolve()
    shipped = SUITE_DIR / f"{p.name}.yaml"
    if p.parent == Path(".") and p.name != COMMON and shipped.is_file():
        return shipped
    raise ConfigError([f"suite {str(name)!r} not found; shipped suites: {', '.join(available_suites())}"])


def load_suite(name: str | os.PathLike[str]) -> Suite:
    """Read a suite by name (configs/eval/NAME.yaml) or path; errors name the file and the bad key."""
    path = _suite_path(name)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as err:
        raise ConfigError([f"cannot read {path}: {err}"]) from err
    problems = [f"unknown key {k!r} (allowed: {', '.join(sorted(KEYS))})" for k in data if k not in KEYS]
    controllers = data.get("controllers") or []
    problems += [
        f"controllers: unknown {c!r} (known: {', '.join(EVAL_CONTROLLERS)})"
        for c in controllers
        if c not in EVAL_CONTROLLERS
    ]
    overrides = data.get("overrides") or {}
    if not isinstance(overrides, Mapping):
        problems.append("overrides: expected a mapping of dotted config keys to values")
    if problems:
        raise ConfigError(problems, str(path))
    return Suite(path.stem, str(data.get("description", "")), tuple(controllers), tuple(_flatten(overrides)))


def common_overrides() -> tuple[str, ...]:
    """The overrides every suite starts from."""
    return load_suite(SUITE_DIR / f"{COMMON}.yaml").overrides


def suite_config(
    base: str | os.PathLike[str], suite: Suite, user: Sequence[str] = (), defaults: Mapping[str, Any] | None = None
) -> Config:
    """The run config for one suite: `base`, then `defaults` (the dataset's settings: `configs.follow_data`), then
    common.yaml, then the suite, then the user's overrides."""
    try:
        return load_config(base, [*common_overrides(), *suite.overrides, *user], defaults=defaults)
    except ConfigError as err:
        raise ConfigError(err.problems, f"suite {suite.name}") from err
