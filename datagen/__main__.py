"""`python -m datagen [--config smoke] [key.sub=value ...]`: generate the dataset of a run with Ray producers.

Writes Zarr shards to datagen.root (default runs/<run.name>/data): hemisphere pairs (datagen.hemisphere.samples)
and DAgger rollouts (datagen.dagger.samples). Rerunning with the same run.name fills in only missing shards.
Joins the Ray cluster at RAY_ADDRESS (or datagen.ray_address) when set, else starts a local Ray.
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
    add_config_arguments(parser)
    args = parser.parse_args(argv)
    cfg = config_from_args(parser, args)
    from datagen.runner import run_datagen
    from sim.isaac_backend import IsaacUnavailable

    try:
        summary = run_datagen(cfg, show_progress=not args.quiet)
    except IsaacUnavailable as err:
        parser.exit(2, f"{parser.prog}: error: {err}\n")
    print(summary.line())
    return 0


if __name__ == "__main__":
    sys.exit(main())
