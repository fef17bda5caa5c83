"""Errors of the Redis state layer."""

from omnipulse.errors import OmnipulseError


class StateError(OmnipulseError):
    """Redis is unreachable, refused a command, or returned what we cannot read."""
