"""Benchmark of the procedural assets: `python -m assets.bench` prints the time and size of every family."""

from __future__ import annotations

import argparse
import time

import numpy as np

from assets.procedural_meshes import MESH_FAMILIES, make_mesh
from assets.procedural_textures import TEXTURE_FAMILIES, make_sky, make_texture


def _median_ms(fn: object, seeds: range) -> float:
    times = []
    for seed in seeds:
        rng = np.random.default_rng(seed)
        start = time.perf_counter()
        fn(rng)  # type: ignore[operator]
        times.append(time.perf_counter() - start)
    return 1e3 * float(np.median(times))


def main(argv: list[str] | None = None) -> None:
    """Print one table for meshes (vertices, faces, ms) and one for textures and the sky (ms)."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", type=int, default=20, help="random seeds per family (default 20)")
    parser.add_argument("--size", type=int, default=256, help="texture size in pixels (default 256)")
    args = parser.parse_args(argv)
    seeds = range(args.seeds)

    print(f"{'mesh family':14s} {'vertices':>11s} {'faces':>11s} {'ms':>6s}")
    for family in MESH_FAMILIES:
        meshes = [make_mesh(family, np.random.default_rng(s)) for s in seeds]
        v = [len(m.vertices) for m in meshes]
        f = [len(m.faces) for m in meshes]
        ms = _median_ms(lambda rng, fam=family: make_mesh(fam, rng), seeds)
        print(f"{family:14s} {min(v):>5d}-{max(v):<5d} {min(f):>5d}-{max(f):<5d} {ms:6.2f}")

    print(f"\n{'texture family':14s} {'ms @ ' + str(args.size) + ' px':>12s}")
    for family in TEXTURE_FAMILIES:
        ms = _median_ms(lambda rng, fam=family: make_texture(fam, rng, args.size), seeds)
        print(f"{family:14s} {ms:12.2f}")
    print(f"{'sky 512x256':14s} {_median_ms(lambda rng: make_sky(rng, 512), seeds):12.2f}")
    print(f"reproduce: python -m assets.bench --seeds {args.seeds} --size {args.size}")


if __name__ == "__main__":
    main()
