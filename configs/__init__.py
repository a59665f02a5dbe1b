"""Configuration: YAML files in this folder, loaded into typed, validated objects.

A leaf package: it imports no other project package, so every layer may use it.
"""

from configs.follow_data import Followed, config_following_data, load_following_data, recorded_config
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
    "Followed",
    "add_config_arguments",
    "available_configs",
    "config_following_data",
    "config_from_args",
    "config_to_yaml",
    "content_differences",
    "load_config",
    "load_following_data",
    "recorded_config",
    "save_config",
    "validate_config",
    "with_absolute_paths",
]
