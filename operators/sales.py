"""Per-channel hourly sales: the pure part (which bucket, what it adds, the ratios).

A bucket is one channel in one hour of event time, hours taken in the business
time zone (`engine.timezone`), so a zone with a half-hour offset gets its own
hour boundaries and a daylight-saving day has 23 or 25 buckets.

What an order event adds is read off the customer's own bookkeeping (the
marks `apply_customer.lua` returns after each applied order event: F and M
after it), so the sales figures always agree with the customers' frequency
and monetary totals: an event that was a duplicate, or that the customer's
state ignored, adds nothing. Reversals are booked when they happen: a
cancellation or a return lowers the revenue of the hour and channel of the
cancellation or return event, not of the original order.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta, tzinfo
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

from operators.clock import EPOCH, HOUR_MS

ORDER_KINDS = frozenset({"op", "oc", "or"})  # placed, cancelled, returned (compact names)
CENT = Decimal("0.01")


def _offset_ms(ms: int, tz: tzinfo) -> int:
    off = (EPOCH + timedelta(milliseconds=ms)).astimezone(tz).utcoffset()
    return int(off.total_seconds() * 1000) if off else 0


def hour_start(ms: int, tz: tzinfo | None) -> int:
    """Epoch ms at which the local hour that `ms` falls in began."""
    if tz is None:
        return ms - ms % HOUR_MS
    off = _offset_ms(ms, tz)
    local = ms + off
    return local - local % HOUR_MS - off


def hours_back(last_start: int, count: int, tz: tzinfo | None) -> list[int]:
    """The starts of `count` consecutive local hours ending with the one at `last_start`."""
    out = [last_start]
    while len(out) < count:
        out.append(hour_start(out[-1] - 1, tz))
    out.reverse()
    return out


def hours_between(first_ms: int, last_ms: int, tz: tzinfo | None) -> list[int]:
    """The starts of the local hours from the one holding `first_ms` to the one of `last_ms`."""
    first, start = hour_start(first_ms, tz), hour_start(last_ms, tz)
    out = []
    while start >= first:
        out.append(start)
        start = hour_start(start - 1, tz)
    out.reverse()
    return out


@dataclass(frozen=True, slots=True)
class OrderOutcome:
    """One applied order event and what it did to its customer's F and M."""

    channel: str
    ts: int
    kind: str  # "op", "oc" or "or"
    total_cents: int  # the event's own total
    delta_n: int
    delta_m: int


def order_outcomes(
    sent: Sequence[dict[str, Any]], marks: Sequence[dict[str, Any]], old_n: int, old_m: int
) -> list[OrderOutcome]:
    """Order outcomes from one customer's Lua reply.

    `sent` is the compact event list as sent (a mark's `i` is its 1-based
    index), `marks` carry F and M after each applied order event (and after
    premium views, which change neither), `old_n`/`old_m` are F and M before.
    """
    n, m = old_n, old_m
    out = []
    for mark in marks:
        ev = sent[int(mark["i"]) - 1]
        new_n, new_m = int(mark["n"]), int(mark["m"])
        if ev.get("k") in ORDER_KINDS and ev.get("ch"):
            out.append(
                OrderOutcome(
                    ev["ch"], int(ev["ts"]), ev["k"], int(ev.get("tot") or 0), new_n - n, new_m - m
                )
            )
        n, m = new_n, new_m
    return out


SESSION_KINDS = frozenset({"v", "ca", "cr", "cs"})  # clicks and cart events (compact names)


def applied_sessions(
    sent: Sequence[dict[str, Any]], dups: Iterable[int]
) -> list[tuple[str, int, str]]:
    """(channel, event ms, session id) of the applied clicks and cart events of one
    customer's Lua call; `dups` are the 1-based indices it reported as duplicates."""
    skipped = set(dups)
    return [
        (ev["ch"], int(ev["ts"]), ev["sid"])
        for i, ev in enumerate(sent, start=1)
        if i not in skipped and ev.get("k") in SESSION_KINDS and ev.get("ch") and ev.get("sid")
    ]


@dataclass(slots=True)
class Tally:
    """What one batch adds to one (channel, hour) bucket; money in cents."""

    placed: int = 0
    cancelled: int = 0
    returned: int = 0
    gross: int = 0
    refunded: int = 0
    sessions: set[str] = field(default_factory=set)

    def counts(self) -> dict[str, int]:
        return {
            "placed": self.placed,
            "cancelled": self.cancelled,
            "returned": self.returned,
            "gross": self.gross,
            "refunded": self.refunded,
        }


def tally(
    orders: Iterable[OrderOutcome],
    sessions: Iterable[tuple[str, int, str]],
    tz: tzinfo | None,
) -> dict[tuple[str, int], Tally]:
    """Bucket increments of a batch: (channel, hour start) -> Tally.

    `sessions` are (channel, event ms, session id) of the batch's applied clicks
    and carts; a bucket keeps the distinct ids.
    """
    out: dict[tuple[str, int], Tally] = defaultdict(Tally)
    for o in orders:
        t = out[(o.channel, hour_start(o.ts, tz))]
        if o.kind == "op":
            if o.delta_n > 0:
                t.placed += 1
                t.gross += o.total_cents
                # a return that arrived before its order is taken off now
                early_refund = o.total_cents - o.delta_m
                if early_refund:
                    t.refunded += early_refund
                    t.returned += 1
        elif o.kind == "oc":
            if o.delta_n < 0:
                t.cancelled += 1
                t.refunded -= o.delta_m
        elif o.delta_m < 0:  # a return that took money off
            t.returned += 1
            t.refunded -= o.delta_m
    for channel, ms, sid in sessions:
        out[(channel, hour_start(ms, tz))].sessions.add(sid)
    return dict(out)


@dataclass(frozen=True, slots=True)
class ChannelHour:
    """The figures of one channel in one hour (or summed over several)."""

    hour_start_ms: int | None  # None for a total over several hours
    channel: str
    placed: int
    cancelled: int
    returned: int
    gross_cents: int
    refunded_cents: int
    sessions: int

    @property
    def orders(self) -> int:
        """Orders that still count: placed minus cancelled (as a customer's F)."""
        return self.placed - self.cancelled

    @property
    def revenue_cents(self) -> int:
        """Net revenue: placed totals less cancellations and refunds (as a customer's M)."""
        return self.gross_cents - self.refunded_cents

    @property
    def aov(self) -> Decimal | None:
        """Average order value at placement: gross / placed, to the cent."""
        if not self.placed:
            return None
        return (Decimal(self.gross_cents) / self.placed / 100).quantize(CENT, ROUND_HALF_EVEN)

    @property
    def conversion(self) -> float | None:
        """Placed orders per session; None without sessions (e.g. a POS channel)."""
        return self.placed / self.sessions if self.sessions else None


def money(cents: int) -> str:
    """Cents as a decimal string with two places: 12345 -> "123.45"."""
    return str((Decimal(cents) / 100).quantize(CENT))


def summed(rows: Iterable[ChannelHour], channel: str) -> ChannelHour:
    """Several rows added up under `channel` (sessions of different hours add up too)."""
    p = c = r = g = f = s = 0
    for x in rows:
        p, c, r = p + x.placed, c + x.cancelled, r + x.returned
        g, f, s = g + x.gross_cents, f + x.refunded_cents, s + x.sessions
    return ChannelHour(None, channel, p, c, r, g, f, s)


def totals_by_channel(rows: Iterable[ChannelHour]) -> list[ChannelHour]:
    """One summed row per channel, in channel order."""
    by: dict[str, list[ChannelHour]] = defaultdict(list)
    for x in rows:
        by[x.channel].append(x)
    return [summed(by[ch], ch) for ch in sorted(by)]
