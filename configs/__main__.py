"""`python -m configs [--config NAME] [key.sub=value ...]`: print the resolved, validated config."""

from __future__ import annotations

import argparse
import sys

from configs.loader import add_config_arguments, config_from_args, config_to_yaml


def main(argv: list[str] | None = None) -> int:
    """Print the resolved config as YAML; exit 2 with the offending keys if it is invalid."""
    parser = add_config_arguments(
        argparse.ArgumentParser(prog="python -m configs", description="Show the resolved configuration.")
    )
    cfg = config_from_args(parser, parser.parse_args(argv))
    sys.stdout.write(config_to_yaml(cfg))
    return 0


if __name__ == "__main__":
    sys.exit(main())
