"""Supply-chain triggers (SPEC §5.6, §5.7): allocation plans, reorders, BOPIS suggestions."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from operators.clock import DAY_MS
from operators.geo import Candidate, Location
from operators.policy import MARKETING_KINDS
from operators.supply import allocation_trigger, bopis_trigger, reorder_trigger
from operators.triggers import Trigger

T0 = 1_780_000_000_000


def loc(lid: str, kind: str = "warehouse") -> Location:
    return Location(lid, kind, 31.23, 121.47, 10, 300)


# Ranked cheapest first: costs in cents.
WH_A = Candidate(loc("wh-a"), 12.3456, 423)
WH_B = Candidate(loc("wh-b"), 80.0, 1_100)
ST_C = Candidate(loc("st-c", "store"), 2.5, 325)
RANKED = [WH_A, ST_C, WH_B]


def ln(sku: str, qty: int, location_id: str | None) -> dict[str, Any]:
    status = "backorder" if location_id is None else "allocated"
    return {"sku": sku, "qty": qty, "location_id": location_id, "status": status}


def allocate(
    lines: Sequence[dict[str, Any]],
    *,
    split: bool = False,
    mode: str = "delivery",
    ranked: Sequence[Candidate] = RANKED,
) -> Trigger:
    return allocation_trigger("o-1", "cust-1", T0, mode, lines, ranked, split=split)


# --- allocation ------------------------------------------------------------------------


def test_whole_order_from_one_location() -> None:
    t = allocate([ln("sku-a", 2, "wh-a"), ln("sku-b", 1, "wh-a")])
    assert t.kind == "allocation"
    assert t.subject == "o-1"
    assert t.event_ts == T0
    assert t.kind not in MARKETING_KINDS
    assert t.payload["order_id"] == "o-1"
    assert t.payload["lines"] == [
        {"sku": "sku-a", "qty": 2, "location_id": "wh-a", "status": "allocated"},
        {"sku": "sku-b", "qty": 1, "location_id": "wh-a", "status": "allocated"},
    ]
    assert t.payload["cost"] == "4.23"  # one parcel: the location counts once
    assert t.payload["split"] is False
    assert t.reason["rule"] == "cheapest_location_with_every_line"
    assert t.reason["backorder_lines"] == 0
    assert t.reason["candidates_considered"] == 3
    assert t.reason["chosen"] == [{"location_id": "wh-a", "distance_km": 12.346, "cost": "4.23"}]


def test_split_plan_counts_each_distinct_location_once() -> None:
    lines = [ln("sku-a", 1, "wh-a"), ln("sku-b", 3, "wh-b"), ln("sku-c", 1, "wh-a")]
    t = allocate(lines, split=True)
    assert t.reason["rule"] == "split_by_line"
    assert t.payload["cost"] == "15.23"  # 4.23 + 11.00, wh-a not twice
    assert t.payload["split"] is True
    assert [c["location_id"] for c in t.reason["chosen"]] == ["wh-a", "wh-b"]
    assert [x["location_id"] for x in t.payload["lines"]] == ["wh-a", "wh-b", "wh-a"]


def test_backordered_line_has_no_location_and_costs_nothing() -> None:
    t = allocate([ln("sku-a", 1, "st-c"), ln("sku-z", 4, None)], split=True)
    assert t.payload["lines"][1] == {
        "sku": "sku-z",
        "qty": 4,
        "location_id": None,
        "status": "backorder",
    }
    assert t.payload["cost"] == "3.25"
    assert t.reason["backorder_lines"] == 1


def test_no_stock_anywhere_is_all_backorder() -> None:
    t = allocate([ln("sku-a", 1, None), ln("sku-b", 2, None)])
    assert t.reason["rule"] == "no_stock"
    assert t.reason["backorder_lines"] == 2
    assert t.reason["chosen"] == []
    assert t.payload["cost"] == "0.00"
    assert {x["status"] for x in t.payload["lines"]} == {"backorder"}


def test_pickup_costs_nothing() -> None:
    t = allocate([ln("sku-a", 1, "st-c")], mode="pickup", ranked=[ST_C])
    assert t.reason["rule"] == "pickup_at_store"
    assert t.payload["cost"] == "0.00"
    assert t.payload["mode"] == "pickup"
    assert t.payload["lines"][0]["location_id"] == "st-c"


def test_allocation_id_is_one_per_order() -> None:
    a = allocate([ln("sku-a", 1, "wh-a")])
    b = allocate([ln("sku-a", 1, "wh-b")])  # a replay that settled differently
    other = allocation_trigger(
        "o-2", "cust-1", T0, "delivery", [ln("sku-a", 1, "wh-a")], RANKED, split=False
    )
    assert a.trigger_id == b.trigger_id
    assert a.trigger_id != other.trigger_id


# --- reorder ---------------------------------------------------------------------------


def reorder(*, derived: bool, crossing: int = 1, location_id: str = "wh-a") -> Trigger:
    return reorder_trigger(
        sku="sku-a",
        location_id=location_id,
        on_hand=7,
        reorder_point=11.2345,
        max_level=50.0,
        quantity=43,
        derived=derived,
        daily_rate=3.14159 if derived else None,
        sigma=1.23456 if derived else None,
        lead_time_days=3,
        crossing=crossing,
        z=1.6448536,
        service_level=0.95,
        event_ts=T0,
    )


def test_reorder_payload() -> None:
    t = reorder(derived=False)
    assert t.kind == "reorder"
    assert t.subject == "sku-a"
    assert t.event_ts == T0
    assert t.kind not in MARKETING_KINDS
    assert t.payload == {
        "sku": "sku-a",
        "location_id": "wh-a",
        "on_hand": 7,
        "reorder_point": 11.23,
        "max_level": 50.0,
        "quantity": 43,
    }


def test_configured_reorder_point_reason_has_no_demand_figures() -> None:
    t = reorder(derived=False)
    assert t.reason == {
        "rule": "configured_reorder_point",
        "on_hand": 7,
        "reorder_point": 11.23,
        "order_up_to": 50.0,
    }


def test_derived_reorder_point_reason_shows_the_figures() -> None:
    r = reorder(derived=True).reason
    assert r["rule"] == "derived_reorder_point"
    assert r["on_hand"] == 7
    assert r["reorder_point"] == 11.23
    assert r["daily_demand"] == 3.142
    assert r["daily_sigma"] == 1.235
    assert r["lead_time_days"] == 3
    assert r["service_level"] == 0.95
    assert r["z"] == 1.6449
    assert "sqrt(lead_time)" in r["formula"]


def test_reorder_id_is_one_per_crossing_and_location() -> None:
    first = reorder(derived=False, crossing=1)
    assert reorder(derived=True, crossing=1).trigger_id == first.trigger_id
    assert reorder(derived=False, crossing=2).trigger_id != first.trigger_id
    assert reorder(derived=False, location_id="wh-b").trigger_id != first.trigger_id


# --- buy online, pick up in store ------------------------------------------------------


def bopis(day: int, sku: str = "sku-a", customer_id: str = "cust-1") -> Trigger:
    store = Candidate(loc("st-c", "store"), 2.4567, 325)
    return bopis_trigger(customer_id, sku, store, 4, "event", 2, day, T0, False)


def test_bopis_payload() -> None:
    t = bopis(T0 // DAY_MS)
    assert t.kind == "bopis_suggestion"
    assert t.kind in MARKETING_KINDS
    assert t.subject == "cust-1"
    assert t.event_ts == T0
    assert t.payload["sku"] == "sku-a"
    assert t.payload["store_id"] == "st-c"
    assert t.payload["distance_km"] == 2.46
    assert t.payload["units_available"] == 4
    assert t.reason["rule"] == "online_out_of_stock"
    assert t.reason["warehouses_checked"] == 2


def test_bopis_once_per_day_per_sku() -> None:
    day = T0 // DAY_MS
    assert bopis(day).trigger_id == bopis(day).trigger_id
    assert bopis(day + 1).trigger_id != bopis(day).trigger_id
    assert bopis(day, sku="sku-b").trigger_id != bopis(day).trigger_id
    assert bopis(day, customer_id="cust-2").trigger_id != bopis(day).trigger_id
