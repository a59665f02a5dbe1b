"""Load a YAML config by name or path, apply `key.sub=value` overrides, validate it, and save it resolved."""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException
from pydantic import BaseModel, ValidationError

from configs.schema import Config
from file_io import write_text

CONFIG_DIR = Path(__file__).resolve().parent
DEFAULT_CONFIG = "smoke"
RESOLVED_NAME = "config.yaml"


class ConfigError(ValueError):
    """A configuration that cannot be loaded or is invalid; the message names every offending key."""

    def __init__(self, problems: Sequence[str], source: str = "") -> None:
        self.problems = list(problems)
        head = f"invalid configuration{f' ({source})' if source else ''}:"
        super().__init__("\n  ".join([head, *self.problems]))


def available_configs() -> list[str]:
    """Return the names of the YAML configs shipped in configs/."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))


def config_path(name: str | os.PathLike[str]) -> Path:
    """Return the YAML file for a config name (`smoke`) or path, or raise ConfigError."""
    p = Path(name)
    if p.suffix in (".yaml", ".yml") and p.is_file():
        return p.resolve()
    shipped = CONFIG_DIR / f"{p.name}.yaml"
    if p.parent == Path(".") and shipped.is_file():
        return shipped
    raise ConfigError([f"config {str(name)!r} not found; shipped configs: {', '.join(available_configs())}"])


def _read_tree(path: Path, chain: tuple[Path, ...] = ()) -> Any:
    if path in chain:
        raise ConfigError([f"`extends` cycle: {' -> '.join(str(p) for p in (*chain, path))}"])
    try:
        node = OmegaConf.load(path)
    except (OSError, yaml.YAMLError, OmegaConfBaseException) as err:
        raise ConfigError([f"cannot read {path}: {err}"]) from err
    if not OmegaConf.is_dict(node):
        raise ConfigError([f"{path}: top level must be a mapping of sections"])
    base = node.pop("extends", None)
    if base is None:
        return node
    # A bare name means a sibling file if there is one, else a shipped config; anything else is a path.
    if not Path(base).suffix and Path(base).name == base:
        sibling = path.parent / f"{base}.yaml"
        base_path = sibling if sibling.is_file() else config_path(base)
    else:
        base_path = Path(base) if Path(base).is_absolute() else path.parent / base
    return OmegaConf.merge(_read_tree(config_path(base_path), (*chain, path)), node)


# Short spellings of keys people type often: `sim.backend=isaac` is `sim.renderer.backend=isaac`.
ALIASES = {"sim.backend": "sim.renderer.backend"}


def parse_overrides(overrides: Sequence[str]) -> list[str]:
    """Check that every override reads `key.sub=value` and expand aliases, or raise ConfigError."""
    bad = [o for o in overrides if "=" not in o or not o.split("=", 1)[0].strip()]
    if bad:
        raise ConfigError([f"override {o!r}: expected key.sub=value" for o in bad])
    out = []
    for o in overrides:
        key, value = o.split("=", 1)
        out.append(f"{ALIASES.get(key.strip(), key.strip())}={value}")
    return out


def load_config(
    name: str | os.PathLike[str] = DEFAULT_CONFIG,
    overrides: Sequence[str] = (),
    defaults: Mapping[str, Any] | None = None,
) -> Config:
    """Load a config by name or path, apply `key.sub=value` overrides and return it validated.

    `defaults`, a nested mapping of values, replaces the file's values before the overrides apply (how a job takes
    the settings of the dataset it reads: `configs.follow_data`)."""
    path = config_path(name)
    tree = _read_tree(path)
    try:
        if defaults:
            tree = OmegaConf.merge(tree, OmegaConf.create(dict(defaults)))
        if overrides:
            tree = OmegaConf.merge(tree, OmegaConf.from_dotlist(parse_overrides(overrides)))
        data = OmegaConf.to_container(tree, resolve=True)
    except OmegaConfBaseException as err:
        raise ConfigError([str(err).splitlines()[0]], str(path)) from err
    return validate_config(data, source=str(path))


def validate_config(data: Any, source: str = "") -> Config:
    """Validate a plain mapping into a Config, or raise ConfigError naming every bad key."""
    try:
        return Config.model_validate(data)
    except ValidationError as err:
        raise ConfigError([_describe(e) for e in err.errors()], source) from None


def _describe(error: Any) -> str:
    loc = tuple(error["loc"])
    key = ".".join(str(p) for p in loc) or "<root>"
    kind = error["type"]
    if kind == "extra_forbidden":
        allowed = _allowed_keys(loc[:-1])
        return f"{key}: unknown key; allowed here: {', '.join(allowed)}"
    if kind == "missing":
        return f"{key}: missing required key"
    msg = error["msg"].removeprefix("Value error, ")
    return f"{key}: {msg}" if "got" in msg else f"{key}: {msg} (got {error.get('input')!r})"


def _allowed_keys(loc: tuple[Any, ...]) -> list[str]:
    model: type[BaseModel] = Config
    for part in loc:
        field = model.model_fields.get(str(part))
        ann = getattr(field, "annotation", None)
        if not (isinstance(ann, type) and issubclass(ann, BaseModel)):
            return []
        model = ann
    return list(model.model_fields)


def config_to_yaml(cfg: Config) -> str:
    """Return the resolved config as YAML text that `load_config` reads back to an equal Config."""
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)


def save_config(
    cfg: Config, directory: str | os.PathLike[str], filename: str = RESOLVED_NAME, notes: Sequence[str] = ()
) -> Path:
    """Write the resolved config next to an output, atomically (temp file then rename); returns its path.

    `notes` go first as YAML comments (`# ...`), e.g. which keys came from the dataset; the file still loads."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    header = "".join(f"# {line}\n" for note in notes for line in str(note).splitlines())
    return write_text(out / filename, header + config_to_yaml(cfg))


def add_config_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add `--config NAME` and positional `key.sub=value` overrides to a CLI parser."""
    parser.add_argument(
        "--config",
        default=DEFAULT_CONFIG,
        help=f"config name in configs/ ({', '.join(available_configs())}) or a YAML path (default: %(default)s)",
    )
    parser.add_argument(
        "overrides",
        nargs="*",
        metavar="key.sub=value",
        help="override any config value, e.g. run.name=try1 sim.camera.width=320",
    )
    return parser


def config_from_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> Config:
    """Load the config named by parsed CLI arguments; a bad config exits with the error (status 2)."""
    try:
        return load_config(args.config, args.overrides)
    except ConfigError as err:
        parser.exit(2, f"{parser.prog}: error: {err}\n")


def with_absolute_paths(cfg: Config) -> Config:
    """The same config with every output path (and `train.init_from`, unless a shipped policy) made absolute, for
    workers that run in another directory (Ray Train changes a worker's working directory)."""

    def absolute(p: str) -> str:
        return str(Path(p).expanduser().resolve())

    init_from = cfg.train.init_from
    if init_from is not None and not init_from.startswith("pretrained:"):  # policy.pretrained.PREFIX: a package name
        init_from = absolute(init_from)
    return cfg.model_copy(
        update={
            "run": cfg.run.model_copy(update={"root": absolute(cfg.run.root)}),
            "datagen": cfg.datagen.model_copy(
                update={"root": absolute(cfg.datagen.root), "checkpoints": absolute(cfg.datagen.checkpoints)}
            ),
            "data": cfg.data.model_copy(update={"root": absolute(cfg.data.root)}),
            "train": cfg.train.model_copy(
                update={"checkpoints": absolute(cfg.train.checkpoints), "init_from": init_from}
            ),
        }
    )
