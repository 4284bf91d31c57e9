"""Errors a user meets at set-up, raised where they are found and reported by the scripts (exit code 2)."""


class ConfigError(ValueError):
    """A configuration that cannot work; the message names the key or file and the fix."""
