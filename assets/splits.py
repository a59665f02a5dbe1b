"""Deterministic train / held-out splits of assets by name, stable when assets are added.

An asset's split depends only on its own name (and a salt), through SHA-256, so adding or removing other files never
moves it, and every process, machine and Python version agrees (Python's `hash` is salted per process).

Procedural assets are named `proc/<family>/<seed>` (`procedural_name`) and split by the same rule: the held-out
procedural meshes and textures are a disjoint set of generator seeds within every family, so every family appears in
both splits. `procedural_seed` draws a seed of the requested split from a Generator. Use different salts (for example
"mesh" and "texture") to split meshes and textures independently.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Literal

import numpy as np

Split = Literal["train", "heldout"]
SPLITS: tuple[Split, ...] = ("train", "heldout")


def split_of(name: str, heldout_fraction: float, salt: str = "") -> Split:
    """ "heldout" for a stable pseudo-random `heldout_fraction` of names, "train" for the rest."""
    _check_fraction(heldout_fraction)
    digest = hashlib.sha256(f"{salt}\x00{name}".encode()).digest()
    # 64 bits of the hash as a uniform number in [0, 1): raising the fraction only ever moves names into held-out.
    u = int.from_bytes(digest[:8], "big") / 2.0**64
    return "heldout" if u < heldout_fraction else "train"


def filter_split(names: Iterable[str], split: Split, heldout_fraction: float, salt: str = "") -> list[str]:
    """The names (in their given order) that fall in `split`."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    return [n for n in names if split_of(n, heldout_fraction, salt) == split]


def procedural_name(family: str, seed: int) -> str:
    """The asset name of procedural `family` generated from `seed`: `proc/<family>/<seed>`."""
    return f"proc/{family}/{int(seed)}"


def procedural_seed(
    rng: np.random.Generator, family: str, split: Split, heldout_fraction: float, salt: str = ""
) -> int:
    """A random generator seed whose procedural asset `proc/<family>/<seed>` belongs to `split`."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    _check_fraction(heldout_fraction)
    if (split == "heldout" and heldout_fraction == 0.0) or (split == "train" and heldout_fraction == 1.0):
        raise ValueError(f"split {split!r} is empty with heldout_fraction={heldout_fraction}")
    # Rejection sampling: about 1 / fraction draws, a handful of hashes even for a 5 % held-out set.
    while True:
        seed = int(rng.integers(0, 2**31 - 1))
        if split_of(procedural_name(family, seed), heldout_fraction, salt) == split:
            return seed


def _check_fraction(heldout_fraction: float) -> None:
    if not 0.0 <= heldout_fraction <= 1.0:
        raise ValueError(f"heldout_fraction must be in [0, 1], got {heldout_fraction}")
