"""Deterministic train / held-out splits of assets by name, stable when assets are added.

An asset's split depends only on its own name (and a salt), through SHA-256, so adding or removing other files never
moves it, and every process, machine and Python version agrees (Python's `hash` is salted per process).

Procedural assets are named `proc/<family>/<seed>` (`procedural_name`) and split by the same rule: the held-out
procedural meshes and textures are a disjoint set of generator seeds within every family, so every family appears in
both splits. `procedural_seed` draws a seed of the requested split from a Generator. Use different salts (for example
"mesh" and "texture") to split meshes and textures independently.

A folder of assets is a finite list, and a per-name coin flip splits a small one badly (3 meshes at a 0.2 fraction
can put 2 of them in held-out). `folder_split` therefore holds out an exact count, `heldout_count`: the fraction of
the folder rounded down, but at least one asset once the folder has `MIN_FOLDER_FOR_HELDOUT` (3), so 3 assets split
2 + 1 and 5 split 4 + 1, and the train split always keeps most of a folder at fractions up to 0.5. The held-out
assets are those with the smallest hash values, i.e. the ones `split_of` would hold out first: adding an asset moves
at most one other between the splits.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from typing import Literal

import numpy as np

Split = Literal["train", "heldout"]
SPLITS: tuple[Split, ...] = ("train", "heldout")


def split_of(name: str, heldout_fraction: float, salt: str = "") -> Split:
    """ "heldout" for a stable pseudo-random `heldout_fraction` of names, "train" for the rest."""
    _check_fraction(heldout_fraction)
    # Raising the fraction only ever moves names into held-out.
    return "heldout" if _unit(name, salt) < heldout_fraction else "train"


def _unit(name: str, salt: str) -> float:
    """64 bits of the name's salted SHA-256 as a uniform number in [0, 1)."""
    digest = hashlib.sha256(f"{salt}\x00{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def filter_split(names: Iterable[str], split: Split, heldout_fraction: float, salt: str = "") -> list[str]:
    """The names (in their given order) that fall in `split`."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    return [n for n in names if split_of(n, heldout_fraction, salt) == split]


MIN_FOLDER_FOR_HELDOUT = 3


def heldout_count(n: int, heldout_fraction: float) -> int:
    """How many of a folder's `n` assets are held out: floor(n x fraction), at least 1 from 3 assets on (fraction > 0).

    ValueError for a negative `n` or a fraction outside [0, 1).
    """
    if n < 0:
        raise ValueError(f"asset count must be >= 0, got {n}")
    _check_fraction(heldout_fraction)
    if heldout_fraction >= 1.0:
        raise ValueError("heldout_fraction must be < 1 for a folder, else its train split is empty")
    k = int(n * heldout_fraction)
    if heldout_fraction > 0.0 and n >= MIN_FOLDER_FOR_HELDOUT:
        k = max(k, 1)
    return k


def folder_split(names: Sequence[str], split: Split, heldout_fraction: float, salt: str = "") -> list[str]:
    """The names of one folder (in their given order) that fall in `split`: exactly `heldout_count` are held out,
    those whose hash is smallest. Duplicate names count once."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    unique = list(dict.fromkeys(names))
    ranked = sorted(unique, key=lambda n: (_unit(n, salt), n))
    heldout = set(ranked[: heldout_count(len(unique), heldout_fraction)])
    return [n for n in unique if (n in heldout) == (split == "heldout")]


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
