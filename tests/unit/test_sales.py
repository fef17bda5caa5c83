"""Per-channel hourly sales: buckets, what an order event adds, the ratios."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from itertools import pairwise
from zoneinfo import ZoneInfo

from operators.clock import HOUR_MS, datetime_to_ms
from operators.sales import (
    ChannelHour,
    OrderOutcome,
    applied_sessions,
    hour_start,
    hours_back,
    hours_between,
    money,
    order_outcomes,
    tally,
    totals_by_channel,
)

KOLKATA = ZoneInfo("Asia/Kolkata")  # UTC+05:30: hours start at :30 UTC
NEW_YORK = ZoneInfo("America/New_York")


def ms(text: str) -> int:
    return datetime_to_ms(datetime.fromisoformat(text))


def test_hours_are_utc_hours_without_a_time_zone():
    assert hour_start(ms("2025-01-06T09:59:59.999+00:00"), None) == ms("2025-01-06T09:00:00+00:00")
    assert hour_start(ms("2025-01-06T10:00:00+00:00"), UTC) == ms("2025-01-06T10:00:00+00:00")


def test_hours_follow_the_business_time_zone_with_a_half_hour_offset():
    # 10:29 UTC is 15:59 in Kolkata: the local hour began at 15:00 IST = 09:30 UTC
    assert hour_start(ms("2025-01-06T10:29:00+00:00"), KOLKATA) == ms("2025-01-06T09:30:00+00:00")
    assert hour_start(ms("2025-01-06T10:30:00+00:00"), KOLKATA) == ms("2025-01-06T10:30:00+00:00")


def test_the_repeated_hour_of_a_daylight_saving_change_is_two_buckets():
    # 2025-11-02 01:00-02:00 happens twice in New York (EDT, then EST)
    first = ms("2025-11-02T01:30:00-04:00")
    second = ms("2025-11-02T01:30:00-05:00")
    assert hour_start(first, NEW_YORK) == ms("2025-11-02T01:00:00-04:00")
    assert hour_start(second, NEW_YORK) == ms("2025-11-02T01:00:00-05:00")
    day = hours_between(ms("2025-11-02T00:00:00-04:00"), ms("2025-11-02T23:59:00-05:00"), NEW_YORK)
    assert len(day) == 25


def test_hours_back_and_between_agree():
    last = hour_start(ms("2025-01-06T10:45:00+00:00"), KOLKATA)
    back = hours_back(last, 5, KOLKATA)
    assert back == hours_between(back[0] + 1, last + HOUR_MS - 1, KOLKATA)
    assert [b - a for a, b in pairwise(back)] == [HOUR_MS] * 4


def _mark(i: int, n: int, m: int) -> dict:
    return {"i": i, "ts": 0, "n": n, "m": m}


def test_order_outcomes_are_the_changes_of_f_and_m_at_each_mark():
    t = ms("2025-01-06T09:10:00+00:00")
    sent = [
        {"k": "st", "ts": 0},  # a stitch goes first and never has a mark
        {"k": "op", "ts": t, "ch": "web", "tot": 10_000, "oid": "o1"},
        {"k": "v", "ts": t + 1, "ch": "app"},  # a premium view: a mark, no change
        {"k": "or", "ts": t + 2, "ch": "web", "tot": 2_500, "oid": "o1"},
        {"k": "op", "ts": t + 3, "ch": "app", "tot": 4_000, "oid": "o2"},
        {"k": "oc", "ts": t + 4, "ch": "phone", "tot": 4_000, "oid": "o2"},
    ]
    marks = [
        _mark(2, 3, 110_000),
        _mark(3, 3, 110_000),
        _mark(4, 3, 107_500),
        _mark(5, 4, 111_500),
        _mark(6, 3, 107_500),
    ]
    out = order_outcomes(sent, marks, old_n=2, old_m=100_000)
    assert [(o.channel, o.kind, o.delta_n, o.delta_m) for o in out] == [
        ("web", "op", 1, 10_000),
        ("web", "or", 0, -2_500),
        ("app", "op", 1, 4_000),
        ("phone", "oc", -1, -4_000),
    ]


def _o(kind: str, dn: int, dm: int, total: int = 0, ch: str = "web", at: int = 0) -> OrderOutcome:
    return OrderOutcome(ch, ms("2025-01-06T09:00:00+00:00") + at, kind, total, dn, dm)


def test_tally_books_orders_and_their_reversals_where_they_happen():
    got = tally(
        [
            _o("op", 1, 10_000, 10_000),
            _o("op", 1, 5_050, 5_050),
            _o("or", 0, -1_000, 1_000),  # a return: money back, order still counts
            _o("oc", -1, -5_050, 5_050, ch="phone"),  # cancelled on the phone line
            _o("op", 0, 0, 7_000),  # an order the customer's state did not count
            _o("oc", 0, 0, 7_000),  # a cancellation of nothing counted
            _o("op", 1, 6_000, 6_000, at=HOUR_MS),  # the next hour
        ],
        [("web", ms("2025-01-06T09:30:00+00:00"), "s1"), ("web", ms("2025-01-06T09:31:00Z"), "s1")],
        None,
    )
    nine, ten = ms("2025-01-06T09:00:00+00:00"), ms("2025-01-06T10:00:00+00:00")
    web = got[("web", nine)]
    assert (web.placed, web.cancelled, web.returned, web.gross, web.refunded) == (
        2,
        0,
        1,
        15_050,
        1_000,
    )
    assert web.sessions == {"s1"}
    phone = got[("phone", nine)]
    assert (phone.placed, phone.cancelled, phone.refunded) == (0, 1, 5_050)
    assert got[("web", ten)].placed == 1


def test_a_refund_that_came_before_its_order_is_taken_off_with_the_order():
    (t,) = tally([_o("op", 1, 7_000, 10_000)], [], None).values()
    assert (t.placed, t.gross, t.refunded, t.returned) == (1, 10_000, 3_000, 1)


def test_ratios_aov_at_placement_and_conversion_per_session():
    r = ChannelHour(0, "web", placed=3, cancelled=1, returned=0, gross_cents=10_000,
                    refunded_cents=2_000, sessions=12)  # fmt: skip
    assert r.orders == 2
    assert r.revenue_cents == 8_000
    assert r.aov == Decimal("33.33")  # 100.00 / 3, half-even to the cent
    assert r.conversion == 0.25
    pos = ChannelHour(0, "store", 1, 0, 0, 5_000, 0, 0)
    assert pos.conversion is None  # no sessions tracked on the channel
    assert ChannelHour(0, "app", 0, 0, 0, 0, 0, 4).aov is None


def test_totals_by_channel_add_up_every_figure():
    rows = [
        ChannelHour(1, "web", 1, 0, 0, 100, 0, 3),
        ChannelHour(2, "web", 2, 1, 1, 300, 150, 5),
        ChannelHour(2, "app", 1, 0, 0, 999, 0, 0),
    ]
    app, web = totals_by_channel(rows)
    assert (web.channel, web.placed, web.cancelled, web.revenue_cents, web.sessions) == (
        "web",
        3,
        1,
        250,
        8,
    )
    assert app.hour_start_ms is None and app.gross_cents == 999
    assert money(-1234) == "-12.34" and money(5) == "0.05"


def test_sessions_come_only_from_applied_clicks_and_carts():
    sent = [
        {"k": "st", "ts": 0},
        {"k": "v", "ts": 1, "ch": "app", "sid": "s1"},
        {"k": "v", "ts": 2, "ch": "app", "sid": "s-dup"},  # reported as a duplicate
        {"k": "ca", "ts": 3, "ch": "web", "sid": "s2"},
        {"k": "cs", "ts": 4, "ch": "web"},  # a cart event without a session
        {"k": "op", "ts": 5, "ch": "web", "sid": "s3", "tot": 1},
    ]
    assert applied_sessions(sent, [3]) == [("app", 1, "s1"), ("web", 3, "s2")]
