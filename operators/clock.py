"""Event time (SPEC §6): the watermark every rule reads "now" from.

The watermark is the highest event time seen minus the allowed lateness. In
live mode, when input is idle, it also advances with the wall clock (so an
abandoned cart still fires at 3 a.m. with no traffic); in catch-up mode only
events move it. The caller persists `max_event_ms` so a restart goes on from
where it was.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

DAY_MS = 86_400_000
HOUR_MS = 3_600_000
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)


def datetime_to_ms(dt: datetime) -> int:
    """Epoch milliseconds of an aware datetime, exactly (no float seconds)."""
    return (dt - EPOCH) // _MS


def ms_to_rfc3339(ms: int) -> str:
    """`2026-11-22T10:15:00.250Z`: UTC, millisecond precision."""
    dt = EPOCH + ms * _MS
    return dt.isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(slots=True)
class Watermark:
    """Monotone event-time clock. Never goes backwards."""

    lateness_ms: int
    max_event_ms: int = 0
    # Wall time (ms) at which max_event_ms last moved; used for idle advance.
    last_moved_wall_ms: int = 0

    def observe(self, event_ms: int, wall_ms: int) -> bool:
        """Account for an event; True when it is late (before the watermark)."""
        late = event_ms < self.now
        if event_ms > self.max_event_ms:
            self.max_event_ms = event_ms
            self.last_moved_wall_ms = wall_ms
        return late

    def merge(self, durable_max_ms: int, wall_ms: int) -> None:
        """Take the durable (or another worker's) maximum if it is ahead."""
        if durable_max_ms > self.max_event_ms:
            self.max_event_ms = durable_max_ms
            self.last_moved_wall_ms = wall_ms

    def advance_idle(self, wall_ms: int, idle_after_ms: int) -> None:
        """Live mode: with no new event for `idle_after_ms`, let wall time move it on."""
        if self.max_event_ms and wall_ms - self.last_moved_wall_ms >= idle_after_ms:
            self.max_event_ms += wall_ms - self.last_moved_wall_ms
            self.last_moved_wall_ms = wall_ms

    @property
    def now(self) -> int:
        """The current event-time "now", in epoch milliseconds."""
        return max(0, self.max_event_ms - self.lateness_ms)
