"""Configuration: `cfg` holds the defaults (as the original); `load_config` merges and validates."""

from .defaults import _C as cfg
from .loader import ConfigError, config_from_text, load_config, validate

__all__ = ["ConfigError", "cfg", "config_from_text", "load_config", "validate"]
