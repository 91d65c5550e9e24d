"""Typed configuration: `load_config()` reads TOML plus TELGATE_* overrides into `Config`."""

from config.loader import ConfigError, ConfigProblem, load_config, redacted
from config.schema import Config

__all__ = ["Config", "ConfigError", "ConfigProblem", "load_config", "redacted"]
