"""Stock, reorders, allocation, BOPIS and price alerts end to end (SPEC §5.6, §5.7, §5.9)."""

from __future__ import annotations

import random
from decimal import Decimal
from statistics import NormalDist
from typing import Any

import orjson
import pytest
from engine_harness import Engine, basket, cart, click, make_settings, place, stock, ts
from geo_fixture import real_store_locations, real_warehouses
from haversine import haversine

from connectors.errors import ReplayError
from connectors.locations_file import read_locations

pytestmark = pytest.mark.integration


@pytest.fixture
def engine(broker, redis_server, topic_prefix, key_prefix, redis_client) -> Engine:
    return Engine(make_settings(broker, redis_server, topic_prefix, key_prefix))


def in_store(cid: str, oid: str, when: str, store: str, lines: list[tuple[str, int, str]]) -> dict:
    return basket(cid, oid, when, lines, fulfilment={"mode": "in_store", "store_id": store})


def pickup(store: str) -> dict[str, str]:
    return {"mode": "pickup", "store_id": store}


def delivery(cid: str, oid: str, when: str, lat: float, lon: float, lines: list) -> dict:
    return basket(cid, oid, when, lines, fulfilment={"mode": "delivery", "lat": lat, "lon": lon})


def test_reorder_fires_once_per_crossing_with_the_s_S_quantity(engine: Engine) -> None:
    engine.send("locations", place("W1", "warehouse", 31.23, 121.47))
    engine.send("locations", place("S1", "store", 31.20, 121.44))
    engine.send(
        "stock",
        stock("SKU-R", "W1", ts(0), on_hand=20, reorder_point=10, max_level=50),
        stock("SKU-R", "W1", ts(0, 1), delta=-6),  # 14: above
        stock("SKU-R", "W1", ts(0, 2), delta=-5),  # 9: crosses -> reorder 41
        stock("SKU-R", "W1", ts(0, 3), delta=-2),  # 7: still below, silent
        stock("SKU-R", "W1", ts(1), on_hand=30),  # restock above: re-armed
        stock("SKU-R", "W1", ts(1, 2), delta=-25),  # 5: crosses again -> reorder 45
        stock("SKU-R", "S1", ts(0), on_hand=12, reorder_point=10, max_level=40),
    )
    engine.run()
    # a POS sale at the store takes it to 9: a reorder of 31
    engine.send("orders", in_store("pos1", "o-pos1", ts(2), "S1", [("SKU-R", 3, "9.90")]))
    engine.run()
    got = sorted(
        (t["payload"]["location_id"], t["payload"]["on_hand"], t["payload"]["quantity"])
        for t in engine.triggers("triggers.reorder")
    )
    assert got == [("S1", 9, 31), ("W1", 5, 45), ("W1", 9, 41)]
    assert all(t["payload"]["reorder_point"] == 10 for t in engine.triggers("triggers.reorder"))


def independent_reorder_point(daily: list[int], alpha: float, lead: int, level: float) -> float:
    mu = var = 0.0
    for i, x in enumerate(daily):
        if i == 0:
            mu, var = float(x), 0.0
        else:
            diff = x - mu
            incr = alpha * diff
            mu += incr
            var = (1 - alpha) * (var + diff * incr)
    z = NormalDist().inv_cdf(level)
    return mu * lead + z * var**0.5 * lead**0.5


def test_derived_reorder_point_matches_the_formula(engine: Engine) -> None:
    rng = random.Random(42)
    daily = [max(0, round(rng.gauss(20, 4))) for _ in range(30)]
    engine.send("locations", place("S1", "store", 31.20, 121.44))
    engine.send("stock", stock("SKU-D", "S1", ts(-1), on_hand=100_000, lead_time_days=5))
    engine.run()
    engine.send(
        "orders",
        *(
            in_store("pos", f"d{day}", ts(day, 3), "S1", [("SKU-D", qty, "1.00")])
            for day, qty in enumerate(daily)
            if qty
        ),
    )
    engine.run()
    # day 30: a stock count far below any sensible point closes the 30 days of demand
    engine.send("stock", stock("SKU-D", "S1", ts(30, 1), on_hand=1))
    engine.run()
    [trigger] = engine.triggers("triggers.reorder")
    expected = independent_reorder_point(daily, 0.2, 5, 0.95)
    assert trigger["reason"]["rule"] == "derived_reorder_point"
    assert trigger["payload"]["reorder_point"] == pytest.approx(expected, rel=0.10)
    assert trigger["reason"]["lead_time_days"] == 5


def cents(text: str) -> int:
    return int(Decimal(text) * 100)


def cheapest(
    lat: float, lon: float, places: list[dict[str, Any]], holding: set[str]
) -> tuple[str, int]:
    """The spec's rule, computed independently: min cost, ties nearer first."""
    best = None
    for p in places:
        if p["location_id"] not in holding:
            continue
        km = haversine((lat, lon), (p["lat"], p["lon"]))
        cost = round(km * cents(p["ship_cost_per_km"])) + cents(p["handling_cost"])
        key = (cost, km, p["location_id"])
        best = key if best is None or key < best else best
    assert best is not None
    return best[2], best[0]


def test_allocation_picks_the_cost_minimal_real_location(engine: Engine) -> None:
    stores, warehouses = real_store_locations(24), real_warehouses(3)
    places = stores + warehouses
    assert len(stores) >= 20
    engine.send("locations", *places)
    rng = random.Random(7)
    # plenty of SKU-1 at a third of the locations, so scarcity never decides
    holding = {p["location_id"] for p in rng.sample(places, 9)}
    engine.send("stock", *(stock("SKU-1", lid, ts(-1), on_hand=1000) for lid in sorted(holding)))
    engine.run()  # reference data and stock first, as a retailer loads them
    customers = [(p["lat"] + 0.05, p["lon"] - 0.05) for p in rng.sample(stores, 12)]
    engine.send(
        "orders",
        *(
            delivery(f"a{i}", f"oa{i}", ts(0, i), lat, lon, [("SKU-1", 2, "30.00")])
            for i, (lat, lon) in enumerate(customers)
        ),
    )
    engine.run()
    plans = {t["order_id"]: t for t in engine.triggers("triggers.allocation")}
    assert len(plans) == len(customers)
    for i, (lat, lon) in enumerate(customers):
        plan = plans[f"oa{i}"]["payload"]
        want, cost = cheapest(lat, lon, places, holding)
        assert plan["lines"] == [
            {"sku": "SKU-1", "qty": 2, "location_id": want, "status": "allocated"}
        ]
        assert cents(plan["cost"]) == cost


def test_split_backorder_pickup_and_safety_stock(
    broker, redis_server, topic_prefix, key_prefix, redis_client
) -> None:
    engine = Engine(
        make_settings(broker, redis_server, topic_prefix, key_prefix, reorder={"safety_stock": 2})
    )
    a = place("A", "store", 31.20, 121.44)
    b = place("B", "store", 31.30, 121.50)
    c = place("C", "warehouse", 31.25, 121.45, per_km="0.01", handling="1.00")
    engine.send("locations", a, b, c)
    engine.send(
        "stock",
        stock("P1", "A", ts(-1), on_hand=10),
        stock("P2", "B", ts(-1), on_hand=10),
        stock("P3", "C", ts(-1), on_hand=2),  # only the safety stock: not allocatable
        stock("P3", "A", ts(-1), on_hand=5),
        stock("PK", "A", ts(-1), on_hand=3),
    )
    engine.run()
    engine.send(
        "orders",
        # no single location holds P1 and P2: one line from each
        delivery("s1", "o-split", ts(0), 31.21, 121.45, [("P1", 1, "5"), ("P2", 1, "5")]),
        # nobody holds NONE: backorder, the other line still allocated
        delivery("s2", "o-back", ts(0, 1), 31.21, 121.45, [("NONE", 1, "5"), ("P1", 1, "5")]),
        # C is cheapest but holds only its safety stock of P3: A serves it
        delivery("s3", "o-safe", ts(0, 2), 31.25, 121.45, [("P3", 1, "5")]),
        basket("s4", "o-pick", ts(0, 3), [("PK", 1, "5")], fulfilment=pickup("A")),
        basket("s5", "o-pick2", ts(0, 4), [("PK", 5, "5")], fulfilment=pickup("A")),
    )
    engine.run()
    plans = {t["order_id"]: t["payload"] for t in engine.triggers("triggers.allocation")}

    def lines(oid: str) -> list[tuple[str, str | None, str]]:
        return [(ln["sku"], ln["location_id"], ln["status"]) for ln in plans[oid]["lines"]]

    assert lines("o-split") == [("P1", "A", "allocated"), ("P2", "B", "allocated")]
    assert plans["o-split"]["split"] is True
    assert lines("o-back") == [("NONE", None, "backorder"), ("P1", "A", "allocated")]
    assert lines("o-safe") == [("P3", "A", "allocated")]
    assert lines("o-pick") == [("PK", "A", "allocated")]
    # 3 - 1 picked = 2 left, all of it safety stock
    assert lines("o-pick2") == [("PK", None, "backorder")]
    assert plans["o-pick"]["cost"] == "0.00"


def test_bopis_suggests_the_nearest_store_holding_the_sku(engine: Engine) -> None:
    engine.send(
        "locations",
        place("W1", "warehouse", 31.23, 121.47),
        place("NEAR", "store", 31.30, 121.50),
        place("FAR", "store", 39.90, 116.40),
    )
    engine.send(
        "stock",
        stock("OOS", "W1", ts(-1), on_hand=0),
        stock("OOS", "NEAR", ts(-1), on_hand=4),
        stock("OOS", "FAR", ts(-1), on_hand=9),
        stock("INSTOCK", "W1", ts(-1), on_hand=50),
        stock("INSTOCK", "NEAR", ts(-1), on_hand=5),
        stock("GONE", "W1", ts(-1), on_hand=0),
    )
    engine.run()
    view = {"lat": 31.31, "lon": 121.52}
    engine.send(
        "clicks",
        {**click("b1", ts(0)), "sku": "OOS", **view},
        {**click("b1", ts(0, 2)), "sku": "OOS", **view},  # same day: no second suggestion
        {**click("b2", ts(0)), "sku": "INSTOCK", **view},  # a warehouse has it
        {**click("b3", ts(0)), "sku": "GONE", **view},  # no store has it either
        {**click(None, ts(0), anonymous_id="anon-1"), "sku": "OOS", **view},
    )
    # a cart of the SKU in Beijing, no position on the event: the customer's store is used
    engine.send("clicks", {**click("b4", ts(0)), "sku": "X", "store_id": "FAR"})
    engine.run()  # the store visit is known before the cart comes in (another topic)
    engine.send("carts", cart("b4", "OOS", ts(0, 1)))
    engine.run()
    got = {
        t["customer_id"]: t["payload"]
        for t in engine.triggers("triggers.allocation")
        if t["kind"] == "bopis_suggestion"
    }
    assert sorted(got) == ["b1", "b4"]
    assert got["b1"]["store_id"] == "NEAR" and got["b1"]["sku"] == "OOS"
    expected_km = haversine((31.31, 121.52), (31.30, 121.50))
    assert got["b1"]["distance_km"] == pytest.approx(expected_km, abs=0.01)
    assert got["b4"]["store_id"] == "FAR"
    b1 = [t for t in engine.triggers("triggers.allocation") if t.get("customer_id") == "b1"]
    assert len(b1) == 1


def test_price_alerts_fire_outside_the_band_only(engine: Engine) -> None:
    engine.send("stock", stock("SKU-P", "W1", ts(-1), on_hand=100, list_price="100.00"))
    engine.run()
    engine.send(
        "orders",
        basket("p1", "o-low", ts(0), [("SKU-P", 1, "94.00")], channel="marketplace",
               fulfilment={"mode": "in_store", "store_id": "S9"}),
        basket("p2", "o-edge", ts(0, 1), [("SKU-P", 1, "95.00")]),  # exactly 5 %: fine
        basket("p3", "o-high", ts(0, 2), [("SKU-P", 1, "106.50")]),
        basket("p4", "o-ok", ts(0, 3), [("SKU-P", 2, "101.00")]),
    )  # fmt: skip
    engine.run()
    alerts = {t["payload"]["order_id"]: t for t in engine.triggers("triggers.price_alert")}
    assert sorted(alerts) == ["o-high", "o-low"]
    low = alerts["o-low"]["payload"]
    assert low["deviation_pct"] == -6.0 and low["channel"] == "marketplace"
    assert low["store_id"] == "S9" and low["list_price"] == "100.00"
    assert alerts["o-high"]["payload"]["deviation_pct"] == 6.5
    assert all(a["holdout"] is False for a in alerts.values())


def test_locations_file_is_loaded_at_start(
    broker, redis_server, topic_prefix, key_prefix, redis_client, tmp_path
) -> None:
    stores = real_store_locations(20)
    file = tmp_path / "stores.jsonl"
    file.write_bytes(b"\n".join(orjson.dumps(s) for s in stores) + b"\n")
    engine = Engine(
        make_settings(
            broker,
            redis_server,
            topic_prefix,
            key_prefix,
            allocation={"locations_file": str(file)},
        )
    )
    shanghai = next(s for s in stores if s["location_id"] == "store-1796236")
    engine.send("stock", stock("F1", shanghai["location_id"], ts(-1), on_hand=5))
    engine.run()
    engine.send(
        "orders",
        delivery("fl", "o-fl", ts(0), shanghai["lat"], shanghai["lon"], [("F1", 1, "9.00")]),
    )
    engine.run()
    [plan] = engine.triggers("triggers.allocation")
    assert plan["payload"]["lines"][0]["location_id"] == "store-1796236"

    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(orjson.dumps(stores[0]) + b'\n{"location_id": "x", "kind": "shop"}\n')
    with pytest.raises(ReplayError, match=r"record 2: bad_value: kind"):
        read_locations(bad)


def test_the_largest_price_the_contract_accepts_does_not_stop_the_engine(engine: Engine) -> None:
    engine.send("stock", stock("BIG", "W1", ts(-1), on_hand=1, list_price="100000000000.00"))
    engine.run()
    engine.send("orders", basket("big", "o-big", ts(0), [("BIG", 1, "1.00")]))
    engine.run()
    [alert] = engine.triggers("triggers.price_alert")
    assert alert["payload"]["list_price"] == "100000000000.00"
