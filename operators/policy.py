"""Trigger policy (SPEC §5.10): calendar days, quiet hours, what counts as marketing.

The daily cap itself is counted atomically next to the customer's state (see
`state/lua/claim_triggers.lua`); here are the pure parts it needs: which
calendar day a trigger falls on, and until when a trigger due in quiet hours
is held. Everything runs on event time in the configured time zone.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

from operators.clock import DAY_MS, EPOCH, datetime_to_ms
from operators.triggers import MARKETING_KINDS

__all__ = ["MARKETING_KINDS", "QuietHours", "local_day"]


def local_day(ms: int, tz: ZoneInfo | None) -> int:
    """Day number (days since 1970-01-01) of the calendar day `ms` falls on in `tz`."""
    if tz is None:
        return ms // DAY_MS
    off = (EPOCH + timedelta(milliseconds=ms)).astimezone(tz).utcoffset()
    return (ms + (int(off.total_seconds() * 1000) if off else 0)) // DAY_MS


@dataclass(frozen=True, slots=True)
class QuietHours:
    """A daily window of local time, e.g. 22:00-08:00 (start > end spans midnight)."""

    start: time
    end: time
    tz: ZoneInfo | None = None

    def release_ms(self, ms: int) -> int | None:
        """End of the quiet window `ms` falls in, or None when `ms` is outside it."""
        tz = self.tz or ZoneInfo("UTC")
        local = (EPOCH + timedelta(milliseconds=ms)).astimezone(tz)
        t = local.time().replace(tzinfo=None)
        if self.start <= self.end:
            inside = self.start <= t < self.end
            end_day = local.date()
        else:  # spans midnight: [start, 24:00) or [00:00, end)
            inside = t >= self.start or t < self.end
            end_day = local.date() + timedelta(days=1) if t >= self.start else local.date()
        if not inside:
            return None
        end = datetime.combine(end_day, self.end, tzinfo=tz)
        return datetime_to_ms(end)
