"""The root of omnipulse's exceptions.

Each package defines its own errors under :class:`OmnipulseError`, so a caller
can catch one concern (``except StateError``) or everything omnipulse raises.
"""


class OmnipulseError(Exception):
    """Base class of every error omnipulse raises on purpose."""


class ConfigError(OmnipulseError):
    """A configuration value is missing or invalid; the message names the key."""
