"""Abandoned carts end to end (SPEC §5.5): deadlines on event time, cancellation by
orders (also late ones within the allowed lateness), stock judged at the deadline,
core discount, cooldown."""

from __future__ import annotations

from typing import Any

import pytest
from engine_harness import Engine, basket, cart, click, make_settings, order, place, stock, ts

pytestmark = pytest.mark.integration


@pytest.fixture
def engine(broker, redis_server, topic_prefix, key_prefix, redis_client) -> Engine:
    return Engine(make_settings(broker, redis_server, topic_prefix, key_prefix))


def carts_by_customer(engine: Engine) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for t in engine.triggers("triggers.abandoned_cart"):
        out.setdefault(t["customer_id"], []).append(t)
    return out


def test_abandoned_carts_fire_once_with_the_right_offer(engine: Engine) -> None:
    engine.send("locations", place("W1", "warehouse", 31.23, 121.47))
    engine.send(
        "stock",
        stock("SKU-A", "W1", ts(-1), on_hand=3),
        stock("SKU-B", "W1", ts(-1), on_hand=100),
        stock("SKU-X", "W1", ts(-1), on_hand=5),
        # SKU-X sells out everywhere before the deadlines
        stock("SKU-X", "W1", ts(minutes=50), on_hand=0),
    )
    # c6 is core (5 recent orders, top of M); the fillers give M a distribution
    engine.send("orders", *(order("c6", f"c6-{i}", ts(-5 + i), "1000.00") for i in range(5)))
    engine.send("orders", *(order(f"f{i}", f"f{i}", ts(-3), "10.00") for i in range(6)))
    engine.run()  # the customers' history comes before today's carts
    engine.send(
        "carts",
        cart("c1", "SKU-A", ts(), qty=2, price="19.99"),
        cart("c1", "SKU-B", ts(minutes=10), price="5.00"),
        cart("c2", "SKU-B", ts()),
        cart("c3", "SKU-B", ts()),
        cart("c4", "SKU-A", ts(), price="19.99"),
        cart("c4", "SKU-X", ts(), price="7.00"),
        cart("c5", "SKU-X", ts()),
        cart("c6", "SKU-B", ts(), price="5.00"),
        cart("c7", "SKU-B", ts()),
    )
    # c2 orders 59 min after carting: nothing fires for c2
    engine.send("orders", basket("c2", "o-c2", ts(minutes=59), [("SKU-B", 1, "10.00")]))
    # another customer moves the watermark to 58 min (63 min - 5 min lateness)
    engine.send("clicks", click("other", ts(minutes=63)))
    engine.run()
    assert carts_by_customer(engine) == {}, "no deadline has passed the watermark yet"

    # c3's order (event time 59 min) arrives after the watermark moved, within lateness
    engine.send("orders", basket("c3", "o-c3", ts(minutes=59), [("SKU-B", 1, "10.00")]))
    # c7 carts again 3 h later: inside the 24 h cooldown of its first trigger
    engine.send("carts", cart("c7", "SKU-B", ts(hours=3)))
    engine.send("clicks", click("other", ts(hours=5)))
    engine.run()

    fired = carts_by_customer(engine)
    assert sorted(fired) == ["c1", "c4", "c6", "c7"]
    assert all(len(v) == 1 for v in fired.values()), "exactly one trigger per customer"

    c1 = fired["c1"][0]
    assert c1["event_ts"] == ts(hours=1, minutes=10).replace("Z", ".000Z")  # last activity + 1 h
    assert c1["payload"]["discount_pct"] == 10
    assert c1["payload"]["cart_value"] == "44.98"
    items = {i["sku"]: i for i in c1["payload"]["items"]}
    assert items["SKU-A"]["qty"] == 2 and items["SKU-A"]["unit_price"] == "19.99"
    assert items["SKU-A"]["stock_left"] == 3  # only 3 left: a stock reminder
    assert "stock_left" not in items["SKU-B"]  # plenty left: no reminder

    c4_items = [i["sku"] for i in fired["c4"][0]["payload"]["items"]]
    assert c4_items == ["SKU-A"], "the sold-out SKU is not offered"
    assert fired["c4"][0]["reason"]["sold_out_left_out"] == ["SKU-X"]
    assert fired["c6"][0]["payload"]["discount_pct"] == 15, "core customers get 15 %"
    assert fired["c7"][0]["event_ts"] == ts(hours=1).replace("Z", ".000Z")

    stats = engine.stats()
    assert stats.get("cart:sold_out") == 1  # c5: nothing left to buy
    assert stats.get("cart:cooldown") == 1  # c7's second cart


def test_late_cart_events_change_a_lapsed_cart_as_if_in_order(engine: Engine) -> None:
    engine.send("carts", cart("c8", "SKU-A", ts()), cart("c9", "SKU-A", ts(), price="3.00"))
    # the customers' own clicks after the deadlines are applied first...
    engine.send("clicks", click("c8", ts(minutes=61)), click("c9", ts(minutes=61)))
    engine.run()
    # ...then their cart events from before the deadlines (within lateness) arrive
    engine.send(
        "carts",
        cart("c8", "SKU-A", ts(minutes=59), kind="cart_remove"),  # c8 empties the cart
        cart("c9", "SKU-B", ts(minutes=58), price="4.00"),  # c9 adds: the deadline moves
    )
    engine.send("clicks", click("clock", ts(hours=3)))
    engine.run()
    fired = carts_by_customer(engine)
    assert "c8" not in fired
    [c9] = fired["c9"]
    assert [i["sku"] for i in c9["payload"]["items"]] == ["SKU-A", "SKU-B"]
    assert c9["event_ts"] == ts(hours=1, minutes=58).replace("Z", ".000Z")
