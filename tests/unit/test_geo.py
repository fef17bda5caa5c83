"""Distances, cost ranking and plan cost for order allocation (SPEC §5.7)."""

from __future__ import annotations

import itertools
import math

import orjson
import pytest
from geo_fixture import real_store_locations, real_warehouses
from haversine import Unit, haversine

from connectors.events import Event, Limits, parse_record
from operators.geo import (
    EARTH_RADIUS_KM,
    Candidate,
    Location,
    haversine_km,
    nearest_holding,
    plan_cost,
    rank_candidates,
)

SHANGHAI = "store-1796236"  # GeoNames ids
BEIJING = "store-1816670"


def parsed(record: dict) -> dict:
    """A fixture record through the event contract, as the engine would see it."""
    event = parse_record("locations", orjson.dumps(record), Limits(now_ms=1_780_000_000_000))
    assert isinstance(event, Event), event
    return event.data


@pytest.fixture(scope="module")
def stores() -> list[Location]:
    return [Location.from_record(parsed(r)) for r in real_store_locations()]


@pytest.fixture(scope="module")
def warehouses() -> list[Location]:
    return [Location.from_record(parsed(r)) for r in real_warehouses()]


def loc(lid: str, lat: float, lon: float, per_km: int = 10, handling: int = 0, **kw) -> Location:
    return Location(lid, kw.pop("kind", "store"), lat, lon, per_km, handling, **kw)


# --- the fixture -------------------------------------------------------------------


def test_fixture_is_at_least_20_distinct_real_places(stores, warehouses) -> None:
    everything = stores + warehouses
    assert len(stores) >= 20
    assert len({x.location_id for x in everything}) == len(everything)
    assert len({(x.lat, x.lon) for x in everything}) == len(everything)
    assert all(18 <= x.lat <= 54 and 73 <= x.lon <= 135 for x in everything)  # inside China
    assert {x.kind for x in stores} == {"store"}
    assert {x.kind for x in warehouses} == {"warehouse"}


def test_fixture_starts_with_the_largest_cities_and_is_deterministic() -> None:
    first = real_store_locations()
    assert first == real_store_locations()
    by_id = {r["location_id"]: r for r in first}
    assert by_id[SHANGHAI]["lat"] == pytest.approx(31.22, abs=0.05)
    assert by_id[SHANGHAI]["lon"] == pytest.approx(121.46, abs=0.05)
    assert BEIJING in by_id
    assert real_store_locations(5) == first[:5]
    ware_ids = {r["location_id"].split("-")[1] for r in real_warehouses()}
    assert ware_ids.isdisjoint(r["location_id"].split("-")[1] for r in first)


def test_fixture_money_is_decimal_text_that_becomes_cents(stores) -> None:
    raw = real_store_locations()[0]
    assert isinstance(raw["ship_cost_per_km"], str)
    assert stores[0].ship_cost_per_km == round(float(raw["ship_cost_per_km"]) * 100)
    assert stores[0].handling_cost == round(float(raw["handling_cost"]) * 100)
    assert len({(s.ship_cost_per_km, s.handling_cost) for s in stores}) > 5


# --- haversine_km ------------------------------------------------------------------


def test_matches_the_haversine_package_on_every_pair_of_the_fixture(stores, warehouses) -> None:
    # Same mean radius in both, so only float rounding may differ.
    assert haversine((0, 0), (0, 1), unit=Unit.KILOMETERS) == pytest.approx(
        EARTH_RADIUS_KM * math.pi / 180, rel=1e-12
    )
    everything = stores + warehouses
    pairs = list(itertools.combinations(everything, 2))
    assert len(pairs) >= 190
    for a, b in pairs:
        ours = haversine_km(a.lat, a.lon, b.lat, b.lon)
        theirs = haversine((a.lat, a.lon), (b.lat, b.lon), unit=Unit.KILOMETERS)
        assert ours == pytest.approx(theirs, rel=1e-9), (a.location_id, b.location_id)
        assert haversine_km(b.lat, b.lon, a.lat, a.lon) == pytest.approx(ours, rel=1e-12)


def test_known_distances(stores) -> None:
    by_id = {s.location_id: s for s in stores}
    sh, bj = by_id[SHANGHAI], by_id[BEIJING]
    assert haversine_km(sh.lat, sh.lon, bj.lat, bj.lon) == pytest.approx(1067, abs=5)
    # Lyon - Paris, the `haversine` package's documented example.
    assert haversine_km(45.7597, 4.8422, 48.8567, 2.3508) == pytest.approx(392.217, abs=0.001)
    assert haversine_km(0, 0, 0, 1) == pytest.approx(111.195, abs=0.001)
    assert haversine_km(31.2, 121.4, 31.2, 121.4) == 0.0
    assert haversine_km(0, 0, 0, 180) == pytest.approx(math.pi * EARTH_RADIUS_KM)
    # Across the antimeridian the short way round.
    assert haversine_km(0, 179.5, 0, -179.5) == pytest.approx(111.195, abs=0.001)


# --- rank_candidates ----------------------------------------------------------------


def test_cheapest_location_comes_first_on_real_cities(stores, warehouses) -> None:
    everything = stores + warehouses
    customers = [(s.lat + 0.05, s.lon - 0.05) for s in stores]  # near each store
    customers += [(30.0, 110.0), (45.0, 125.0), (25.0, 102.0)]  # between cities
    for lat, lon in customers:
        ranked = rank_candidates(lat, lon, everything)
        assert len(ranked) == len(everything)
        independent = {
            x.location_id: round(haversine((lat, lon), (x.lat, x.lon)) * x.ship_cost_per_km)
            + x.handling_cost
            for x in everything
        }
        assert ranked[0].cost == min(independent.values())
        assert [c.cost for c in ranked] == sorted(independent.values())
        for c in ranked:
            assert c.cost == independent[c.location.location_id]
            assert c.distance_km == pytest.approx(
                haversine_km(lat, lon, c.location.lat, c.location.lon)
            )


def test_cheaper_but_farther_beats_nearer_but_dearer() -> None:
    near = loc("near", 31.0, 121.0, per_km=100)
    far = loc("far", 31.0, 122.0, per_km=1)
    ranked = rank_candidates(31.0, 121.1, [near, far])
    assert [c.location.location_id for c in ranked] == ["far", "near"]
    assert ranked[0].distance_km > ranked[1].distance_km


def test_equal_cost_nearer_first_then_by_id() -> None:
    # per_km = 0: cost is the handling alone, equal for all.
    far = loc("a-far", 31.0, 123.0, per_km=0, handling=500)
    near = loc("z-near", 31.0, 121.5, per_km=0, handling=500)
    twin_b = loc("b-twin", 30.0, 121.0, per_km=0, handling=500)
    twin_a = loc("a-twin", 30.0, 121.0, per_km=0, handling=500)
    ranked = rank_candidates(31.0, 121.0, [far, twin_b, near, twin_a])
    assert [c.location.location_id for c in ranked] == ["z-near", "a-twin", "b-twin", "a-far"]
    assert {c.cost for c in ranked} == {500}


def test_cost_rounds_distance_times_rate_and_adds_handling() -> None:
    store = loc("s", 0.0, 1.0, per_km=7, handling=250)
    (c,) = rank_candidates(0.0, 0.0, [store])
    assert c.distance_km == pytest.approx(111.195, abs=0.001)
    assert c.cost == round(111.19508 * 7) + 250 == 1028
    assert isinstance(c.cost, int)


def test_inactive_and_other_kinds_are_skipped(stores, warehouses) -> None:
    closed = loc("closed", 31.23, 121.47, per_km=0, active=False)
    ranked = rank_candidates(31.23, 121.47, [*stores, *warehouses, closed])
    assert "closed" not in {c.location.location_id for c in ranked}
    only_wh = rank_candidates(31.23, 121.47, [*stores, *warehouses], kinds=("warehouse",))
    assert {c.location.location_id for c in only_wh} == {w.location_id for w in warehouses}
    assert rank_candidates(31.23, 121.47, stores, kinds=("warehouse",)) == []
    assert rank_candidates(31.23, 121.47, []) == []


# --- nearest_holding -----------------------------------------------------------------


def test_nearest_store_that_holds_stock(stores, warehouses) -> None:
    by_id = {s.location_id: s for s in stores}
    sh = by_id[SHANGHAI]
    everything = stores + warehouses
    stock = {s.location_id: 0 for s in stores} | {BEIJING: 2}
    got = nearest_holding(sh.lat, sh.lon, everything, stock)
    assert got is not None and got.location.location_id == BEIJING
    assert got.distance_km == pytest.approx(1067, abs=5)
    # Shanghai itself holds one: distance 0 wins.
    got = nearest_holding(sh.lat, sh.lon, everything, stock | {SHANGHAI: 1})
    assert got is not None and got.location.location_id == SHANGHAI
    assert got.distance_km == 0.0
    # The nearest of all, whatever it costs.
    holding_all = {s.location_id: 5 for s in stores}
    got = nearest_holding(30.0, 110.0, everything, holding_all)
    expected = min(stores, key=lambda s: haversine((30.0, 110.0), (s.lat, s.lon)))
    assert got is not None and got.location.location_id == expected.location_id


def test_nearest_holding_skips_empty_closed_and_other_kinds() -> None:
    empty = loc("empty", 31.0, 121.01)
    negative = loc("negative", 31.0, 121.02)
    closed = loc("closed", 31.0, 121.03, active=False)
    warehouse = loc("wh", 31.0, 121.04, kind="warehouse")
    unknown = loc("unknown", 31.0, 121.05)  # not in the stock map at all
    holder = loc("holder", 31.0, 122.0)
    places = [empty, negative, closed, warehouse, unknown, holder]
    stock = {"empty": 0, "negative": -3, "closed": 9, "wh": 9, "holder": 1}
    got = nearest_holding(31.0, 121.0, places, stock)
    assert got is not None and got.location.location_id == "holder"
    got = nearest_holding(31.0, 121.0, places, stock, kind="warehouse")
    assert got is not None and got.location.location_id == "wh"
    assert nearest_holding(31.0, 121.0, places, {"holder": 0}) is None


def test_nearest_holding_tie_is_broken_by_id() -> None:
    b = loc("b", 30.0, 120.0)
    a = loc("a", 30.0, 120.0)
    got = nearest_holding(31.0, 121.0, [b, a], {"a": 1, "b": 1})
    assert got is not None and got.location.location_id == "a"


# --- plan_cost -----------------------------------------------------------------------


def test_plan_cost_counts_each_location_once() -> None:
    x = loc("x", 0.0, 0.0)
    y = loc("y", 0.0, 0.0)
    ranked = [Candidate(x, 10.0, 700), Candidate(y, 20.0, 450)]
    assert plan_cost(["x", "x", "x"], ranked) == 700
    assert plan_cost(["x", "y", "x", None], ranked) == 1150
    assert plan_cost([None, None], ranked) == 0
    assert plan_cost([], ranked) == 0


def test_plan_cost_of_a_location_not_ranked_is_an_error() -> None:
    ranked = [Candidate(loc("x", 0.0, 0.0), 1.0, 100)]
    with pytest.raises(KeyError, match="ghost"):
        plan_cost(["x", "ghost"], ranked)


# --- from_record ---------------------------------------------------------------------


def test_from_record_takes_the_parsed_topic_record() -> None:
    data = parsed(
        {
            "location_id": "wh-1",
            "kind": "warehouse",
            "lat": 31,
            "lon": 121.5,
            "ship_cost_per_km": "0.12",
            "handling_cost": 3,
            "active": False,
        }
    )
    got = Location.from_record(data, default_safety=4)
    assert got == Location("wh-1", "warehouse", 31.0, 121.5, 12, 300, False, 4)
    assert Location.from_record({**data, "safety_stock": 1}, default_safety=4).safety_stock == 1
    assert Location.from_record(data).safety_stock == 0
    assert Location.from_record({k: v for k, v in data.items() if k != "active"}).active is True
