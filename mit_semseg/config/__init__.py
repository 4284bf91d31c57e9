"""Configuration: `cfg` holds the defaults (as the original); `load_config` merges and validates."""

from .defaults import _C as cfg
from .loader import ConfigError, load_config, validate

__all__ = ["ConfigError", "cfg", "load_config", "validate"]
