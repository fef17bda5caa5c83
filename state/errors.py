"""Errors of the Redis state layer, and riding out a Redis outage.

Every Redis round trip of the stores goes through `execute` (a pipeline) or
`call` (one command), which time it for the metrics once the engine has asked
for that (`report_call_times`). By default a failure
raises `StateError` at once, which is what the CLI's one-shot commands want.
The engine installs an `OutagePolicy` (`riding_out_outages`): then a call that
fails because Redis is unreachable waits with backoff and runs again, the same
commands, until Redis answers. The batch that made the call just waits; no
batch is dropped and none is applied halfway.

Running a pipeline again is exact when it did not reach Redis, which is what
an outage looks like from here (connection refused or reset before the
reply). If Redis executed it and went away before answering, the second run
finds the events' de-duplication entries and the triggers' emitted-once
claims already set, like a batch read again after a crash.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import redis
from redis.exceptions import NoScriptError

from common.errors import OmnipulseError

T = TypeVar("T")

log = logging.getLogger(__name__)

# Redis unreachable, restarting (loading its data set), or restarted with an
# empty script cache under a pipeline that was being sent again.
_OUTAGE = (redis.ConnectionError, redis.TimeoutError, NoScriptError)


class StateError(OmnipulseError):
    """Redis is unreachable, refused a command, or returned what we cannot read."""


@dataclass
class OutagePolicy:
    """How the engine waits for Redis to come back; shared by all worker threads.

    It sets the Redis up/retries metrics. `common.metrics` is imported where
    they are set, not at the top: only the engine rides out outages (and it
    has loaded the metrics), so the one-shot commands that use this module
    never load prometheus_client.
    """

    first_backoff_s: float = 0.05
    max_backoff_s: float = 2.0
    give_up_after_s: float | None = None  # None: wait as long as it takes
    # Set on shutdown: stop waiting. The batch is not finished, so its offsets
    # are not stored and a restart reads it again.
    stop: threading.Event = field(default_factory=threading.Event)
    _failing: dict[int, float] = field(default_factory=dict)  # thread id -> since (monotonic)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def failing_since(self) -> float | None:
        """Monotonic time since which some thread cannot reach Redis, else None."""
        with self._lock:
            return min(self._failing.values(), default=None)

    def wait(self, what: str, attempt: int, error: Exception) -> None:
        """Back off before attempt `attempt + 1`; raise StateError when giving up."""
        me = threading.get_ident()
        now = time.monotonic()
        with self._lock:
            since = self._failing.setdefault(me, now)
        from common import metrics

        metrics.REDIS_UP.set(0)
        metrics.REDIS_RETRIES.labels(what).inc()
        if self.give_up_after_s is not None and now - since > self.give_up_after_s:
            raise StateError(
                f"redis: {what} failed: unreachable for {now - since:.0f}s: {error}"
            ) from error
        if attempt == 1:
            log.warning("redis: %s failed (%s); retrying until Redis is back", what, error)
        if self.stop.wait(min(self.max_backoff_s, self.first_backoff_s * 2 ** (attempt - 1))):
            raise StateError(
                f"redis: {what} failed: stopping while Redis is unreachable: {error}"
            ) from error

    def recovered(self, what: str) -> None:
        me = threading.get_ident()
        with self._lock:
            since = self._failing.pop(me, None)
            clear = not self._failing
        if since is not None:
            log.warning("redis: %s succeeded again after %.1fs", what, time.monotonic() - since)
        if clear:
            from common import metrics

            metrics.REDIS_UP.set(1)


_policy: OutagePolicy | None = None

# Where each call's (what, seconds, commands in the pipeline) goes. The engine,
# which serves the figures on /metrics, sends them to its metrics; a one-shot
# command such as `omnipulse profile` has nowhere to show them, and without
# them it does not have to load prometheus_client for one lookup.
_observe: Callable[[str, float, int], None] | None = None


def report_call_times(observe: Callable[[str, float, int], None] | None) -> None:
    """From now on, pass every Redis call's name, duration and size to `observe`."""
    global _observe
    _observe = observe


@contextmanager
def riding_out_outages(policy: OutagePolicy) -> Iterator[OutagePolicy]:
    """Retry Redis calls through outages while the block runs (the engine's run)."""
    global _policy
    previous, _policy = _policy, policy
    try:
        yield policy
    finally:
        _policy = previous
        from common import metrics

        metrics.REDIS_UP.set(1)


def execute(pipe: Any, what: str) -> list[Any]:
    """Run a pipeline; a Redis failure becomes a StateError naming what was done."""
    policy = _policy
    # redis-py empties the pipeline when it runs, also when it fails: keep its
    # commands (and the scripts they call) to send them again after an outage.
    stack = list(pipe.command_stack) if policy is not None else None
    scripts = set(pipe.scripts) if policy is not None else None
    attempt = 0
    while True:
        started = time.perf_counter()
        try:
            replies = pipe.execute()
        except _OUTAGE as ex:
            if policy is None or stack is None or scripts is None:
                raise StateError(f"redis: {what} failed: {ex}") from ex
            attempt += 1
            policy.wait(what, attempt, ex)
            pipe.command_stack = list(stack)
            pipe.scripts = set(scripts)
            continue
        except redis.RedisError as ex:
            raise StateError(f"redis: {what} failed: {ex}") from ex
        if _observe is not None:
            _observe(what, time.perf_counter() - started, len(replies))
        if attempt and policy is not None:
            policy.recovered(what)
        return replies


def call(fn: Callable[[], T], what: str = "call") -> T:
    """Run one Redis call the same way."""
    policy = _policy
    attempt = 0
    while True:
        started = time.perf_counter()
        try:
            result = fn()
        except _OUTAGE as ex:
            if policy is None:
                raise StateError(f"redis: {what} failed: {ex}") from ex
            attempt += 1
            policy.wait(what, attempt, ex)
            continue
        except redis.RedisError as ex:
            raise StateError(f"redis: {what} failed: {ex}") from ex
        if _observe is not None:
            _observe(what, time.perf_counter() - started, 0)
        if attempt and policy is not None:
            policy.recovered(what)
        return result
