"""`omnipulse report` against totals computed straight from the events sent: several
channels and hours (in a business time zone with a half-hour offset), sessions on
clicks and carts, orders, a cancellation on another channel, a return, a duplicate
event_id and a rejected event."""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import pytest
from engine_harness import Engine, cart, click, make_settings, order, ts

from connectors.kafka_io import PartitionMark, Record
from flows.steps import EngineStep
from omnipulse.profile import read_profile
from omnipulse.report import as_json, read_report, row_json
from state.sales import recent_sales

pytestmark = pytest.mark.integration

TZ = "Asia/Kolkata"  # UTC+05:30: 09:10Z and 09:35Z are one UTC hour but two local hours
IST = ZoneInfo(TZ)


def visit(channel: str, who: str | None, session: str, when: str, anon: str | None = None):
    return {**click(who, when, anonymous_id=anon), "channel": channel, "session_id": session}


# (topic, event); ts(0, minutes=m) is 09:00Z + m
CLICKS = [
    visit("web", "c1", "s-w1", ts(0, minutes=-20)),
    visit("web", "c1", "s-w1", ts(0, minutes=10)),
    visit("web", None, "s-w2", ts(0, minutes=20), anon="a1"),
    {**visit("app", "c2", "s-a1", ts(0, minutes=10)), "event_id": "dup-click"},
    visit("app", "c3", "s-a2", ts(0, minutes=35)),
    visit("web", "c1", "s-w1", ts(0, minutes=40)),  # same session, next local hour
    visit("web", None, "s-w3", ts(0, minutes=100), anon="a2"),
    visit("app", "c2", "s-a1", ts(0, minutes=105)),
]
CARTS = [
    cart("c4", "SKU-1", ts(0, minutes=50), session_id="s-w4"),
    {**cart("c2", "SKU-2", ts(0, minutes=110), session_id="s-a1"), "channel": "app"},
]
PLACED = [
    order("c1", "o1", ts(0, minutes=15), "120.50"),
    {**order("c2", "o2", ts(0, minutes=25), "80.00", channel="app"), "event_id": "dup-order"},
    order("c4", "o3", ts(0, minutes=55), "200.00"),
    order("c5", "o4", ts(0, minutes=58), "35.99", channel="store"),
    order("c3", "o5", ts(0, minutes=95), "60.00", channel="app"),
    order("c1", "o6", ts(0, minutes=110), "99.99"),
]
REVERSALS = [
    order("c4", "o3", ts(0, minutes=100), "200.00", kind="order_cancelled", channel="phone"),
    order("c1", "o1", ts(0, minutes=115), "20.50", kind="order_returned"),
]
DUPLICATES = [  # the same event_id again (with other content): applied once, as first seen
    ("clicks", {**visit("app", "c2", "s-other", ts(0, minutes=12)), "event_id": "dup-click"}),
    ("orders", {**order("c2", "o9", ts(0, minutes=26), "999.00"), "event_id": "dup-order"}),
]
REJECTED = order("c6", "o7", ts(0, minutes=30), "-5.00")  # negative total: dead-lettered


def local_hour(when: str) -> str:
    dt = datetime.fromisoformat(when.replace("Z", "+00:00")).astimezone(IST)
    return dt.replace(minute=0, second=0, microsecond=0).isoformat()


def expected_figures() -> dict[tuple[str, str], dict[str, Any]]:
    """The report's rows, worked out from the applied events alone."""
    rows: dict[tuple[str, str], dict[str, Any]] = defaultdict(
        lambda: {"orders": 0, "cancelled": 0, "returned": 0, "gross": Decimal(0),
                 "refunded": Decimal(0), "sessions": set()}
    )  # fmt: skip
    left: dict[str, Decimal] = {}  # what each order still counts for
    for ev in PLACED + REVERSALS:
        row = rows[(local_hour(ev["ts"]), ev["channel"])]
        amount = Decimal(ev["total"])
        if ev["type"] == "order_placed":
            row["orders"] += 1
            row["gross"] += amount
            left[ev["order_id"]] = amount
        elif ev["type"] == "order_cancelled":
            row["cancelled"] += 1
            row["refunded"] += left.pop(ev["order_id"])
        else:
            refund = min(amount, left[ev["order_id"]])
            row["returned"] += 1
            row["refunded"] += refund
            left[ev["order_id"]] -= refund
    for ev in CLICKS + CARTS:
        rows[(local_hour(ev["ts"]), ev["channel"])]["sessions"].add(ev["session_id"])
    out = {}
    for key, r in rows.items():
        sessions = len(r["sessions"])
        out[key] = {
            "orders": r["orders"],
            "cancelled": r["cancelled"],
            "returned": r["returned"],
            "net_orders": r["orders"] - r["cancelled"],
            "gross": f"{r['gross']:.2f}",
            "refunded": f"{r['refunded']:.2f}",
            "revenue": f"{r['gross'] - r['refunded']:.2f}",
            "aov": str((r["gross"] / r["orders"]).quantize(Decimal("0.01"), ROUND_HALF_EVEN))
            if r["orders"]
            else None,
            "sessions": sessions,
            "conversion": round(r["orders"] / sessions, 6) if sessions else None,
        }
    return out


@pytest.fixture
def engine(broker, redis_server, topic_prefix, key_prefix, redis_client) -> Engine:
    return Engine(
        make_settings(broker, redis_server, topic_prefix, key_prefix, engine={"timezone": TZ})
    )


def test_report_matches_totals_computed_from_the_input(engine: Engine, tmp_path, redis_client):
    engine.send("clicks", *CLICKS)
    engine.send("carts", *CARTS)
    engine.send("orders", *PLACED, REJECTED)
    engine.send("orders", *REVERSALS)
    for topic, ev in DUPLICATES:
        engine.send(topic, ev)
    engine.run()
    assert [d["reason"].split(":")[0] for d in engine.dlq()] == ["negative_amount"]

    cfg = tmp_path / "omnipulse.toml"
    cfg.write_text(f'[engine]\ntimezone = "{TZ}"\n')
    env = {"OMNIPULSE_CONFIG": str(cfg)}
    first, last = ts(0, minutes=-20), ts(0, minutes=115)
    rep = orjson.loads(engine.cli("report", "--json", "--since", first, "--until", last, **env))

    want = expected_figures()
    got = {(r.pop("hour"), r.pop("channel")): r for r in rep["hours"]}
    assert got == want
    assert rep["timezone"] == TZ
    assert rep["from"] == local_hour(first) and rep["to"] == local_hour(last)
    # three local hours, though the events span only two UTC hours and a bit
    assert len({h for h, _ in want}) == 3

    # the totals agree with the rows, and with the customers' own monetary totals
    total = rep["total"]
    assert total["revenue"] == f"{sum(Decimal(r['revenue']) for r in want.values()):.2f}"
    assert total["net_orders"] == sum(r["net_orders"] for r in want.values())
    monetary = sum(
        Decimal(read_profile(engine.settings, engine.ep.redis_url, c)["monetary"])
        for c in ("c1", "c2", "c3", "c4", "c5")
    )
    assert Decimal(total["revenue"]) == monetary
    by_channel = {r["channel"]: r for r in rep["channels"]}
    assert (
        by_channel["phone"]["revenue"] == "-200.00"
    )  # the cancellation is booked where it came in
    assert by_channel["store"]["conversion"] is None  # a POS channel has no sessions

    # the default window: the last N hours up to the newest event's hour
    recent = orjson.loads(engine.cli("report", "--json", "--hours", "2", **env))
    assert {r["hour"] for r in recent["hours"]} == {local_hour(ts(0, minutes=35)), local_hour(last)}
    # what a metrics collector reads: the same rows
    starts, rows = recent_sales(redis_client, engine.settings, hours=2)
    assert len(starts) == 2
    assert [row_json(r, IST) for r in rows] == recent["hours"]
    only_app = orjson.loads(engine.cli("report", "--json", "--channel", "app", **env))
    assert {r["channel"] for r in only_app["hours"]} == {"app"}

    # the table a person reads shows the same figures
    table = engine.cli("report", "--since", first, "--until", last, **env).decode()
    web_c = want[(local_hour(last), "web")]
    row = next(ln for ln in table.splitlines() if ln.startswith("2025-01-06 16:00 web"))
    assert row.split()[3:] == [
        str(web_c["orders"]),
        str(web_c["cancelled"]),
        str(web_c["returned"]),
        web_c["revenue"],
        web_c["aov"],
        str(web_c["sessions"]),
        f"{web_c['conversion'] * 100:.2f}",
    ]
    assert "Asia/Kolkata" in table.splitlines()[0]

    # every hourly key expires: the buckets cannot grow forever
    keys = list(redis_client.scan_iter(match=f"{engine.settings.redis.key_prefix}:{{sales:*"))
    assert keys and all(redis_client.ttl(k) > 0 for k in keys)


def test_a_batch_read_again_adds_nothing(
    broker, redis_server, topic_prefix, key_prefix, redis_client
):
    """After a restart the same records come again (their offsets were not stored):
    every event is a duplicate and the figures stay as they were."""
    settings = make_settings(broker, redis_server, topic_prefix, key_prefix)
    events = [("clicks", ev) for ev in CLICKS] + [("orders", ev) for ev in PLACED + REVERSALS]
    items: list[Any] = []
    for i, (topic, ev) in enumerate(events):
        value = orjson.dumps({"event_id": f"ev{i}", **ev})
        items.append(Record(topic, 0, i, None, value, 0))
    items.extend(PartitionMark(f"{t}#0", at_end=True) for t in ("clicks", "orders"))

    def figures() -> dict[str, Any]:
        return as_json(read_report(settings, redis_server.url, hours=6))

    EngineStep(settings, redis_url=redis_server.url, live=False).process(items)
    once = figures()
    assert once["total"]["orders"] == len(PLACED) and once["total"]["cancelled"] == 1
    EngineStep(settings, redis_url=redis_server.url, live=False).process(items)
    assert figures() == once
