"""`omnipulse report`: per-channel sales per hour, as a table or as JSON."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, tzinfo
from typing import Any

import redis

from common.errors import OmnipulseError
from common.settings import Settings
from operators.clock import EPOCH, datetime_to_ms
from operators.sales import (
    ChannelHour,
    hour_start,
    hours_back,
    hours_between,
    money,
    summed,
    totals_by_channel,
)
from state.sales import MAX_HOURS, SalesStore


class ReportError(OmnipulseError):
    """The report's options cannot be read."""


@dataclass(frozen=True, slots=True)
class Report:
    tz: tzinfo
    hours: list[int]  # hour starts covered, epoch ms
    rows: list[ChannelHour]
    channels: list[str] | None  # the filter, None = all

    @property
    def by_channel(self) -> list[ChannelHour]:
        return totals_by_channel(self.rows)

    @property
    def total(self) -> ChannelHour:
        return summed(self.rows, "all")


def parse_time(value: str, tz: tzinfo) -> int:
    """RFC 3339 with an offset, or a local date-time (`2026-11-22T10`, `2026-11-22 10:00`)
    taken in the business time zone."""
    text = value.strip()
    if len(text) == 13 and text[10] in "T ":  # date and hour only
        text += ":00"
    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as ex:
        raise ReportError(f"report: {value!r} is not a date-time (e.g. 2026-11-22T10:00)") from ex
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=tz)
    return datetime_to_ms(dt)


def read_report(
    settings: Settings,
    redis_url: str,
    *,
    hours: int = 24,
    since: str | None = None,
    until: str | None = None,
    channels: list[str] | None = None,
) -> Report:
    """Read the figures: the last `hours` hours up to the newest event, or since..until."""
    tz = settings.engine.tz()
    if hours < 1:
        raise ReportError("report: --hours must be at least 1")
    with redis.Redis.from_url(redis_url) as client:
        store = SalesStore.for_settings(client, settings)
        if since is not None:
            first = parse_time(since, tz)
            last = parse_time(until, tz) if until is not None else store.latest_event_ms()
            if until is None and last < first:
                last = first  # no event since then: the one hour, empty
            if last < first:
                raise ReportError("report: --until is before --since")
            if (last - first) // 3_600_000 > MAX_HOURS:
                raise ReportError(f"report: at most {MAX_HOURS} hours at once")
            starts = hours_between(first, last, tz)
        else:
            end = parse_time(until, tz) if until is not None else store.latest_event_ms()
            starts = hours_back(hour_start(end, tz), min(hours, MAX_HOURS), tz) if end > 0 else []
        rows = store.read(starts)
    if channels:
        rows = [r for r in rows if r.channel in channels]
    return Report(tz, starts, rows, channels or None)


def local_hour(ms: int, tz: tzinfo) -> datetime:
    return (EPOCH + timedelta(milliseconds=ms)).astimezone(tz)


def row_json(r: ChannelHour, tz: tzinfo) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if r.hour_start_ms is not None:
        out["hour"] = local_hour(r.hour_start_ms, tz).isoformat()
    aov = r.aov
    out.update(
        channel=r.channel,
        orders=r.placed,
        cancelled=r.cancelled,
        returned=r.returned,
        net_orders=r.orders,
        gross=money(r.gross_cents),
        refunded=money(r.refunded_cents),
        revenue=money(r.revenue_cents),
        aov=None if aov is None else str(aov),
        sessions=r.sessions,
        conversion=None if r.conversion is None else round(r.conversion, 6),
    )
    return out


def as_json(rep: Report) -> dict[str, Any]:
    tz = rep.tz
    return {
        "timezone": str(tz),
        "from": local_hour(rep.hours[0], tz).isoformat() if rep.hours else None,
        "to": local_hour(rep.hours[-1], tz).isoformat() if rep.hours else None,
        "hours": [row_json(r, tz) for r in rep.rows],
        "channels": [row_json(r, tz) for r in rep.by_channel],
        "total": row_json(rep.total, tz),
    }


COLUMNS = (
    ("hour", "<", 16),
    ("channel", "<", 14),
    ("orders", ">", 7),
    ("cancel", ">", 6),
    ("return", ">", 6),
    ("revenue", ">", 14),
    ("aov", ">", 10),
    ("sessions", ">", 8),
    ("conv %", ">", 7),
)


def _line(values: list[str]) -> str:
    return " ".join(
        f"{v:{align}{width}}" for v, (_, align, width) in zip(values, COLUMNS, strict=True)
    ).rstrip()


def _cells(hour: str, r: ChannelHour) -> list[str]:
    aov, conv = r.aov, r.conversion
    return [
        hour,
        r.channel,
        str(r.placed),
        str(r.cancelled),
        str(r.returned),
        money(r.revenue_cents),
        "-" if aov is None else str(aov),
        str(r.sessions),
        "-" if conv is None else f"{conv * 100:.2f}",
    ]


def as_table(rep: Report) -> str:
    tz = rep.tz
    if not rep.hours:
        return "no sales figures yet: the engine has applied no event"
    first, last = local_hour(rep.hours[0], tz), local_hour(rep.hours[-1], tz)
    lines = [
        f"sales per channel per hour, {first:%Y-%m-%d %H:%M} to {last:%Y-%m-%d %H:%M} "
        f"(hour starts, {tz}); revenue is net of cancellations and returns",
        _line([c for c, _, _ in COLUMNS]),
    ]
    for r in rep.rows:
        assert r.hour_start_ms is not None
        lines.append(_line(_cells(f"{local_hour(r.hour_start_ms, tz):%Y-%m-%d %H:%M}", r)))
    if not rep.rows:
        lines.append("(no orders or sessions in these hours)")
    lines.append("")
    for r in rep.by_channel:
        lines.append(_line(_cells("all hours", r)))
    lines.append(_line(_cells("all hours", rep.total)))
    return "\n".join(lines)
