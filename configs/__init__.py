"""Configuration: YAML files in this folder, loaded into typed, validated objects.

A leaf package: it imports no other project package, so every layer may use it.
"""

from configs.loader import (
    ConfigError,
    add_config_arguments,
    available_configs,
    config_from_args,
    config_to_yaml,
    load_config,
    save_config,
    validate_config,
    with_absolute_paths,
)
from configs.provenance import content_differences
from configs.schema import Config

__all__ = [
    "Config",
    "ConfigError",
    "add_config_arguments",
    "available_configs",
    "config_from_args",
    "config_to_yaml",
    "content_differences",
    "load_config",
    "save_config",
    "validate_config",
    "with_absolute_paths",
]
