"""Trigger policy (SPEC §5.10): calendar days, quiet hours and the holdout group."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from functools import cache
from zoneinfo import ZoneInfo

import pytest

from operators.clock import datetime_to_ms
from operators.policy import MARKETING_KINDS, QuietHours, local_day
from operators.triggers import in_holdout

SHANGHAI = ZoneInfo("Asia/Shanghai")  # UTC+8 all year
NIGHT = QuietHours(time(22, 0), time(8, 0))  # spans midnight, UTC
NOON = QuietHours(time(12, 0), time(14, 0))  # same day, UTC


def utc(*args: int) -> int:
    return datetime_to_ms(datetime(*args, tzinfo=UTC))  # type: ignore[misc]


def sh(*args: int) -> int:
    return datetime_to_ms(datetime(*args, tzinfo=SHANGHAI))  # type: ignore[misc]


def day_of(ms: int, tz: ZoneInfo | None) -> str:
    """The calendar day `local_day` names, as a date string."""
    return (date(1970, 1, 1) + timedelta(days=local_day(ms, tz))).isoformat()


# --- local_day -------------------------------------------------------------------------


def test_local_day_in_utc_around_midnight() -> None:
    assert day_of(utc(2026, 3, 9, 23, 59, 59), None) == "2026-03-09"
    assert day_of(utc(2026, 3, 10, 0, 0, 0), None) == "2026-03-10"
    assert local_day(utc(1970, 1, 1), None) == 0
    assert local_day(utc(2026, 3, 10), ZoneInfo("UTC")) == local_day(utc(2026, 3, 10), None)


def test_local_day_in_shanghai_around_local_midnight() -> None:
    # 15:59 UTC is 23:59 in Shanghai; 16:00 UTC is already the next local day.
    assert day_of(utc(2026, 3, 9, 15, 59, 59), SHANGHAI) == "2026-03-09"
    assert day_of(utc(2026, 3, 9, 16, 0, 0), SHANGHAI) == "2026-03-10"
    assert day_of(sh(2026, 3, 10, 0, 0), SHANGHAI) == "2026-03-10"
    # The same instant is still 9 March in UTC.
    assert day_of(utc(2026, 3, 9, 16, 0, 0), None) == "2026-03-09"


# --- quiet hours -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("at", "release"),
    [
        (utc(2026, 3, 9, 22, 0), utc(2026, 3, 10, 8, 0)),  # start is inside
        (utc(2026, 3, 9, 23, 30), utc(2026, 3, 10, 8, 0)),  # before midnight: next morning
        (utc(2026, 3, 10, 0, 0), utc(2026, 3, 10, 8, 0)),
        (utc(2026, 3, 10, 3, 15), utc(2026, 3, 10, 8, 0)),  # after midnight: same morning
        (utc(2026, 3, 10, 7, 59, 59), utc(2026, 3, 10, 8, 0)),
        (utc(2026, 12, 31, 23, 0), utc(2027, 1, 1, 8, 0)),  # across the year end
    ],
)
def test_quiet_hours_over_midnight_hold_until_their_end(at: int, release: int) -> None:
    assert NIGHT.release_ms(at) == release


@pytest.mark.parametrize(
    "at",
    [
        utc(2026, 3, 10, 8, 0),  # the end is outside
        utc(2026, 3, 10, 12, 0),
        utc(2026, 3, 10, 21, 59, 59),
    ],
)
def test_outside_quiet_hours_over_midnight_nothing_is_held(at: int) -> None:
    assert NIGHT.release_ms(at) is None


def test_quiet_hours_within_one_day() -> None:
    assert NOON.release_ms(utc(2026, 3, 10, 12, 0)) == utc(2026, 3, 10, 14, 0)
    assert NOON.release_ms(utc(2026, 3, 10, 13, 59, 59)) == utc(2026, 3, 10, 14, 0)
    assert NOON.release_ms(utc(2026, 3, 10, 14, 0)) is None
    assert NOON.release_ms(utc(2026, 3, 10, 11, 59, 59)) is None
    assert NOON.release_ms(utc(2026, 3, 10, 23, 0)) is None
    assert NOON.release_ms(utc(2026, 3, 10, 1, 0)) is None


def test_release_is_the_exact_end_in_milliseconds() -> None:
    at = utc(2026, 3, 10, 12, 30) + 123
    assert NOON.release_ms(at) == utc(2026, 3, 10, 14, 0)


def test_quiet_hours_in_a_non_utc_zone() -> None:
    night = QuietHours(time(22, 0), time(8, 0), SHANGHAI)
    # 22:30 in Shanghai is 14:30 UTC: held until 08:00 Shanghai the next day (00:00 UTC).
    assert night.release_ms(sh(2026, 3, 9, 22, 30)) == sh(2026, 3, 10, 8, 0)
    assert night.release_ms(utc(2026, 3, 9, 14, 30)) == utc(2026, 3, 10, 0, 0)
    # 02:00 Shanghai (18:00 UTC the day before): the same morning in Shanghai.
    assert night.release_ms(sh(2026, 3, 10, 2, 0)) == sh(2026, 3, 10, 8, 0)
    # 23:00 UTC is 07:00 in Shanghai (inside); 10:00 Shanghai is 02:00 UTC (outside).
    assert night.release_ms(utc(2026, 3, 9, 23, 0)) == utc(2026, 3, 10, 0, 0)
    assert night.release_ms(sh(2026, 3, 10, 10, 0)) is None
    assert night.release_ms(sh(2026, 3, 10, 8, 0)) is None
    assert night.release_ms(sh(2026, 3, 10, 22, 0)) == sh(2026, 3, 11, 8, 0)


def test_marketing_kinds_exclude_operational_triggers() -> None:
    assert {"abandoned_cart", "journey_step", "bopis_suggestion"} <= MARKETING_KINDS
    assert not {"allocation", "reorder", "price_alert"} & MARKETING_KINDS


# --- holdout ---------------------------------------------------------------------------

IDS = tuple(f"c{i}" for i in range(100_000))


@cache
def held(share: float) -> frozenset[str]:
    return frozenset(i for i in IDS if in_holdout(i, share))


def test_holdout_share_is_five_percent_of_100000_customers() -> None:
    assert 0.04 <= len(held(0.05)) / len(IDS) <= 0.06


def test_holdout_is_stable() -> None:
    again = frozenset(i for i in IDS if in_holdout(i, 0.05))
    assert again == held(0.05)


def test_holdout_share_zero_holds_nobody_and_a_larger_share_keeps_everyone() -> None:
    assert not any(in_holdout(i, 0.0) for i in IDS[:10_000])
    assert held(0.05) < held(0.10)
    assert 0.09 <= len(held(0.10)) / len(IDS) <= 0.11
