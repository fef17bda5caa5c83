"""Errors of the Redis state layer."""

from collections.abc import Callable
from typing import Any, TypeVar

import redis

from omnipulse.errors import OmnipulseError

T = TypeVar("T")


class StateError(OmnipulseError):
    """Redis is unreachable, refused a command, or returned what we cannot read."""


def execute(pipe: Any, what: str) -> list[Any]:
    """Run a pipeline; a Redis failure becomes a StateError naming what was done."""
    try:
        return pipe.execute()
    except redis.RedisError as ex:
        raise StateError(f"redis: {what} failed: {ex}") from ex


def call(fn: Callable[[], T], what: str = "call") -> T:
    """Run one Redis call the same way."""
    try:
        return fn()
    except redis.RedisError as ex:
        raise StateError(f"redis: {what} failed: {ex}") from ex
