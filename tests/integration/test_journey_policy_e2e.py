"""New-customer journey and trigger policy end to end (SPEC §5.4, §5.10): exact step
times, the coupon cancelled by a repeat order, daily cap with counted suppressions,
quiet hours, uplift counters, and no trigger emitted twice across a replay."""

from __future__ import annotations

import random
from collections import Counter
from datetime import datetime
from typing import Any

import pytest
from engine_harness import Engine, cart, click, make_settings, order, ts

from common.settings import TRIGGER_TOPIC_NAMES
from operators.triggers import MARKETING_KINDS

pytestmark = pytest.mark.integration
DAY_MS = 86_400_000


def at(text: str) -> str:
    """The engine's spelling of an event time: millisecond precision."""
    return text.replace("Z", ".000Z")


def ms(text: str) -> int:
    return int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000)


def all_triggers(engine: Engine) -> list[dict[str, Any]]:
    return [t for topic in TRIGGER_TOPIC_NAMES for t in engine.triggers(topic)]


@pytest.fixture
def engine_for(broker, redis_server, topic_prefix, key_prefix, redis_client):
    def build(**sections: Any) -> Engine:
        return Engine(make_settings(broker, redis_server, topic_prefix, key_prefix, **sections))

    return build


def test_journey_steps_at_exact_times_and_coupon_cancelled(engine_for) -> None:
    engine = engine_for()
    engine.send(
        "orders",
        order("j1", "o1", ts(0), "50.00"),
        order("j2", "o2", ts(0), "50.00"),
        order("j2", "o3", ts(2), "20.00"),  # ordered again before the coupon
    )
    engine.send("clicks", click("clock", ts(8)))
    engine.run()
    steps: dict[str, list[tuple[str, str]]] = {}
    for t in engine.triggers("triggers.journey"):
        steps.setdefault(t["customer_id"], []).append((t["payload"]["step"], t["event_ts"]))
    assert sorted(steps["j1"]) == [
        ("coupon_7d", at(ts(7))),
        ("recommend_3d", at(ts(3))),
        ("tips_24h", at(ts(1))),
    ]
    assert sorted(steps["j2"]) == [("recommend_3d", at(ts(3))), ("tips_24h", at(ts(1)))]
    assert engine.stats()["journey:cancelled"] == 1


def test_daily_cap_suppresses_and_counts(engine_for) -> None:
    # five marketing triggers on one day: segment_change, tier_change, three steps
    engine = engine_for(
        policy={"max_per_day": 3},
        journey={"steps": {"step_1h": "1h", "step_2h": "2h", "step_3h": "3h"}},
    )
    engine.send("orders", order("k1", "o1", ts(0), "50.00"))
    engine.send("clicks", click("clock", ts(1)))
    engine.run()
    mine = [t for t in all_triggers(engine) if t.get("customer_id") == "k1"]
    assert len(mine) == 3
    assert {t["kind"] for t in mine} == {"segment_change", "tier_change", "journey_step"}
    assert engine.stats()["suppressed:journey_step"] == 2


def test_quiet_hours_hold_until_they_end(engine_for) -> None:
    engine = engine_for(policy={"quiet_hours": "22:00-08:00"})
    engine.send("orders", order("q1", "o1", ts(0, 14), "50.00"))  # 23:00 UTC
    engine.send("carts", cart("q2", "SKU-1", ts(0, 12, 30)))  # deadline 22:30: held
    engine.send("clicks", click("clock", ts(1, -2, 5)))  # watermark 07:00 next morning
    engine.run()
    assert [t for t in all_triggers(engine) if t.get("customer_id") == "q1"] == []
    engine.send("clicks", click("clock", ts(1, 0, 10)))  # watermark 09:05
    engine.run()
    released = [t for t in all_triggers(engine) if t.get("customer_id") == "q1"]
    assert {t["kind"] for t in released} == {"segment_change", "tier_change"}
    assert all(t["held_until"] == at(ts(1, -1)) for t in released)  # 08:00
    assert all(t["event_ts"] == at(ts(0, 14)) for t in released)  # the cause's time
    # a held record comes out exactly as it would have gone out: lists stay lists
    [held_cart] = [t for t in all_triggers(engine) if t["kind"] == "abandoned_cart"]
    assert held_cart["held_until"] == at(ts(1, -1))
    assert held_cart["reason"]["sold_out_left_out"] == []
    assert held_cart["payload"]["items"][0]["sku"] == "SKU-1"


def test_deadlines_from_before_the_engine_are_settled_without_triggers(
    engine_for, redis_client
) -> None:
    engine = engine_for()
    # as after an upgrade: timers start at day 2, the first order was on day 0
    redis_client.hset(f"{engine.settings.redis.key_prefix}:clock", "timers_since", ms(ts(2)))
    engine.send("orders", order("old", "o1", ts(0), "50.00"))
    engine.send("clicks", click("clock", ts(8)))
    engine.run()
    steps = [t["payload"]["step"] for t in engine.triggers("triggers.journey")]
    assert sorted(steps) == ["coupon_7d", "recommend_3d"]
    assert engine.stats()["journey:expired"] == 1


def test_uplift_counts_match_the_input_and_replay_emits_nothing_twice(engine_for) -> None:
    engine = engine_for(policy={"holdout_share": 0.5})
    rng = random.Random(3)
    orders: list[dict[str, Any]] = []
    for i in range(40):
        first = rng.uniform(0, 5)
        orders.append(order(f"u{i}", f"u{i}-1", ts(first), "30.00"))
        if rng.random() < 0.6:  # some come back within days, some much later
            orders.append(order(f"u{i}", f"u{i}-2", ts(first + rng.uniform(0.5, 12)), "40.00"))
    engine.send("orders", *orders)
    engine.send("clicks", click("clock", ts(30)))
    engine.run()
    first_run = all_triggers(engine)
    ids = [t["trigger_id"] for t in first_run]
    assert len(ids) == len(set(ids))

    # independent count: a trigger converts when its customer orders in (ts, ts + 7 d]
    placed: dict[str, list[int]] = {}
    for o in orders:
        placed.setdefault(o["customer_id"], []).append(ms(o["ts"]))
    expected: Counter[str] = Counter()
    for t in first_run:
        if t["kind"] not in MARKETING_KINDS:
            continue
        group = "holdout" if t["holdout"] else "treated"
        expected[f"uplift:{t['kind']}:{group}:sent"] += 1
        t0 = ms(t["event_ts"].replace(".000Z", "Z"))
        if any(t0 < o <= t0 + 7 * DAY_MS for o in placed.get(t["customer_id"], [])):
            expected[f"uplift:{t['kind']}:{group}:converted"] += 1
    stats = engine.stats()
    got = {k: v for k, v in stats.items() if k.startswith("uplift:")}
    assert got == dict(expected)
    assert {k.split(":")[2] for k in got} == {"holdout", "treated"}
    assert any(k.endswith(":converted") for k in got)

    # replay the whole input: every id was emitted once already, so nothing comes out
    engine.send("orders", *orders)
    engine.send("clicks", click("clock", ts(30)))
    engine.run()
    again = [t["trigger_id"] for t in all_triggers(engine)]
    assert Counter(again) == Counter(ids)
    assert {k: v for k, v in engine.stats().items() if k.startswith("uplift:")} == got
