"""`python -m datagen [--config smoke] [key.sub=value ...]`: generate the dataset of a run with Ray producers.

Writes Zarr shards to datagen.root (default runs/<run.name>/data): hemisphere pairs (datagen.hemisphere.samples)
and DAgger rollouts (datagen.dagger.samples). Rerunning with the same run.name fills in only missing shards;
a root already at both targets says so and exits at once, without starting Ray.
Joins the Ray cluster at RAY_ADDRESS (or datagen.ray_address) when set, else starts a local Ray.
`--verify` then checks every published shard against its sidecar's checksums and exits 1 naming each damaged one
(`--quarantine` also moves them aside, so that the next run makes them again).
Examples:
  python -m datagen run.name=try1 datagen.hemisphere.samples=200 datagen.dagger.samples=100
  python -m datagen --config default datagen.hemisphere.actors=8
"""

from __future__ import annotations

import argparse
import sys

from configs import add_config_arguments, config_from_args


def main(argv: list[str] | None = None) -> int:
    """Run data generation and print a one-line summary."""
    parser = argparse.ArgumentParser(
        prog="python -m datagen", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument("--verify", action="store_true", help="check every shard's checksums after generating")
    parser.add_argument("--quarantine", action="store_true", help="with --verify: move damaged shards aside")
    add_config_arguments(parser)
    args = parser.parse_args(argv)
    cfg = config_from_args(parser, args)
    from datagen.runner import run_datagen
    from shards import ShardError
    from sim.asset_catalogue import AssetFolderError
    from sim.isaac_backend import IsaacUnavailable

    try:
        summary = run_datagen(cfg, show_progress=not args.quiet)
    except (IsaacUnavailable, AssetFolderError, ConnectionError, ShardError) as err:
        # Raised by the checks before Ray starts: the backend, the asset folders, the Ray address, the root's config.
        parser.exit(2, f"{parser.prog}: error: {err}\n")
    print(summary.line())
    if args.verify or args.quarantine:
        return verify(cfg.datagen.root, quarantine=args.quarantine)
    return 0


def verify(root: str, *, quarantine: bool = False) -> int:
    """Check every published shard of `root` completely; print one line per damaged shard and a summary.

    Returns 0 when all are intact, 1 otherwise. With `quarantine`, damaged shards are moved to `<root>/quarantine/`.
    """
    from datagen.inspect import check_shard
    from shards import DatasetReader, ShardError

    reader = DatasetReader(root)
    damaged = []
    for shard in list(reader.shards):
        try:
            check_shard(reader, shard)
        except ShardError as e:
            damaged.append(shard.id)
            print(f"DAMAGED {e}")
            if quarantine:
                print(f"  moved to {reader.quarantine(shard, str(e))}")
    n = len(reader.shards) + (len(damaged) if quarantine else 0)
    print(f"verify: {n - len(damaged)}/{n} shards intact" + (f"; damaged: {', '.join(damaged)}" if damaged else ""))
    return 1 if damaged else 0


if __name__ == "__main__":
    sys.exit(main())
