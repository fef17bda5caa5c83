"""Event time (SPEC §6): the watermark every rule reads "now" from.

The watermark is the highest event time seen minus the allowed lateness. In
live mode, when input is idle, it also advances with the wall clock (so an
abandoned cart still fires at 3 a.m. with no traffic); in catch-up mode only
events move it. The caller persists `max_event_ms` so a restart goes on from
where it was.
"""

from __future__ import annotations

from dataclasses import dataclass, field
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
    """Monotone event-time clock over the input partitions. Never goes backwards.

    Its basis is the lowest of the highest event times of the partitions still
    delivering: one topic read ahead of another (a replay, a backfill, a slow
    partition) cannot make time pass for events still queued elsewhere. A
    partition at its end (caught up) no longer holds it back; when all are,
    the basis is the highest event time seen. Calls without a partition name
    count as one implicit partition.
    """

    lateness_ms: int
    max_event_ms: int = 0  # the basis; the caller persists it
    # Wall time (ms) at which the basis last moved; used for idle advance.
    last_moved_wall_ms: int = 0
    highest_ms: int = 0
    partition_max: dict[str, int] = field(default_factory=dict)
    delivering: set[str] = field(default_factory=set)
    # Live mode: a partition at its end keeps holding the clock this long, so
    # a record produced just before another partition's record, but fetched a
    # moment after it, is not overtaken (catch-up runs use 0).
    idle_grace_ms: int = 0
    ended_at: dict[str, int] = field(default_factory=dict)  # partition -> wall ms
    # The highest event time read before a restart (durable): the basis once
    # every partition of this run is done, as it would be without the restart.
    highest_before_ms: int = 0
    _was_held: bool = False

    def opened(self, part: str) -> None:
        """A partition starts: it holds the clock back until it delivers or ends."""
        self.partition_max.setdefault(part, 0)
        self.delivering.add(part)

    def observe(self, event_ms: int, wall_ms: int, part: str = "") -> bool:
        """Account for an event; True when it is late (before the watermark)."""
        late = event_ms < self.now
        moved = event_ms > self.partition_max.get(part, 0)
        if moved:
            self.partition_max[part] = event_ms
        resumed = part in self.ended_at or part not in self.delivering
        self.delivering.add(part)
        self.ended_at.pop(part, None)
        if event_ms > self.highest_ms:
            self.highest_ms = event_ms
        if moved or resumed:
            # otherwise nothing the basis depends on changed (most events of a batch)
            self.settle(wall_ms)
        return late

    def caught_up(self, part: str, wall_ms: int) -> None:
        """A partition reached its end: after the grace it no longer holds the clock."""
        if part in self.delivering:
            self.ended_at.setdefault(part, wall_ms)
        self.settle(wall_ms)

    def holding(self, wall_ms: int) -> list[str]:
        """Partitions that hold the clock back now."""
        return [
            p
            for p in self.delivering
            if p not in self.ended_at or wall_ms - self.ended_at[p] < self.idle_grace_ms
        ]

    def settle(self, wall_ms: int) -> None:
        """Move the basis to what the partitions allow at `wall_ms`."""
        held = self.holding(wall_ms)
        if held:
            basis = min(self.partition_max.get(p, 0) for p in held)
        elif self.delivering:
            # every partition that opened is done (`partition_max` may hold the
            # maxima restored from before a restart: it says nothing of that)
            basis = max(self.highest_ms, self.highest_before_ms)
        else:
            basis = self.highest_ms  # no partition opened yet: nothing known to be done
        if basis > self.max_event_ms:
            self.max_event_ms = basis
            self.last_moved_wall_ms = wall_ms
        if self._was_held and not held:
            # idle time counts from now, not from the last time the clock moved
            self.last_moved_wall_ms = max(self.last_moved_wall_ms, wall_ms)
        self._was_held = bool(held)

    def merge(self, durable_max_ms: int, wall_ms: int) -> None:
        """Take the durable (or another worker's) basis if it is ahead."""
        if durable_max_ms > self.max_event_ms:
            self.max_event_ms = durable_max_ms
            self.last_moved_wall_ms = wall_ms

    def advance_idle(self, wall_ms: int, idle_after_ms: int) -> None:
        """Live mode: every partition caught up and quiet for `idle_after_ms`:
        let wall time move the clock on (so a cart still expires at 3 a.m.)."""
        self.settle(wall_ms)
        if self.holding(wall_ms):
            return
        if self.max_event_ms and wall_ms - self.last_moved_wall_ms >= idle_after_ms:
            self.max_event_ms += wall_ms - self.last_moved_wall_ms
            self.last_moved_wall_ms = wall_ms

    @property
    def now(self) -> int:
        """The current event-time "now", in epoch milliseconds."""
        return max(0, self.max_event_ms - self.lateness_ms)
