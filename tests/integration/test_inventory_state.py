"""Inventory state against a real redis-server: stock arithmetic, atomic allocation,
reorder detection, the demand rate behind derived reorder points, and locations."""

from __future__ import annotations

import math
import multiprocessing as mp
import random
from collections import Counter, defaultdict
from statistics import NormalDist
from typing import Any

import orjson
import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from state.errors import StateError
from state.inventory import InventoryParams, InventoryStore
from state.keys import Keys
from state.locations import LocationStore

pytestmark = pytest.mark.integration

Z95 = NormalDist().inv_cdf(0.95)


@pytest.fixture
def keys(key_prefix: str) -> Keys:
    return Keys(key_prefix)


@pytest.fixture
def store(redis_client: redis.Redis, keys: Keys) -> InventoryStore:
    return InventoryStore(redis_client, keys, InventoryParams(z=Z95))


def st(eid: str, sku: str, loc: str, on_hand: int, day: int = 1, **opt: Any) -> dict[str, Any]:
    return {"op": "set", "eid": eid, "sku": sku, "loc": loc, "on_hand": on_hand, "day": day, **opt}


def adj(eid: str, sku: str, loc: str, delta: int, day: int = 1) -> dict[str, Any]:
    return {"op": "adjust", "eid": eid, "sku": sku, "loc": loc, "delta": delta, "day": day}


def sale(eid: str, loc: str, lines: dict[str, int], day: int = 1) -> dict[str, Any]:
    return {
        "op": "sale",
        "eid": eid,
        "loc": loc,
        "day": day,
        "lines": [{"sku": s, "qty": q} for s, q in lines.items()],
    }


def alloc(
    oid: str,
    lines: list[tuple[str, int]],
    cands: list[tuple[str, int]],
    day: int = 1,
    mode: str = "delivery",
) -> dict[str, Any]:
    return {
        "op": "alloc",
        "oid": oid,
        "mode": mode,
        "day": day,
        "lines": [{"sku": s, "qty": q} for s, q in lines],
        "cands": [list(c) for c in cands],
    }


def placed(plan: dict[str, Any]) -> list[tuple[str, int, str | None, str]]:
    return [(x["sku"], x["qty"], x["location_id"], x["status"]) for x in plan["lines"]]


# -- stock arithmetic -------------------------------------------------------------------


def test_set_adjust_sale_arithmetic_and_dedup_by_event_id(store: InventoryStore) -> None:
    r = store.apply(
        [
            st("e1", "A", "S1", 10),
            adj("e2", "A", "S1", -3),
            sale("e3", "S1", {"A": 2, "B": 1}),
            st("e1", "A", "S1", 99),  # a replayed stock_set
        ]
    )
    assert r.results == [
        {"on_hand": 10, "prev": 0},
        {"on_hand": 7, "prev": 10},
        {"on_hand": {"A": 5, "B": -1}},  # an in-store sale is never refused
        {"dup": True},
    ]
    again = store.apply([adj("e2", "A", "S1", -3), sale("e3", "S1", {"A": 2})])
    assert again.results == [{"dup": True}, {"dup": True}]
    assert store.stock(["A", "B", "C"]) == {"A": {"S1": 5}, "B": {"S1": -1}, "C": {}}


def test_ops_of_one_call_run_in_order_and_report_price(store: InventoryStore) -> None:
    r = store.apply(
        [
            {"op": "peek", "sku": "A"},
            st("e1", "A", "W1", 4, lp=1999),
            st("e2", "A", "S1", 1),
            {"op": "peek", "sku": "A"},
            alloc("o1", [("A", 3)], [("S1", 0), ("W1", 0)]),
            {"op": "peek", "sku": "A"},
            {"op": "price", "sku": "A"},
            {"op": "price", "sku": "B"},
        ]
    )
    assert r.results[0] == {}
    assert r.results[3] == {"W1": 4, "S1": 1}
    assert placed(r.results[4]) == [("A", 3, "W1", "allocated")]
    assert r.results[5] == {"W1": 1, "S1": 1}
    assert r.results[6:] == [1999, None]


def test_queue_adds_one_call_to_the_callers_pipeline(
    store: InventoryStore, redis_client: redis.Redis, keys: Keys
) -> None:
    pipe = redis_client.pipeline(transaction=False)
    pipe.set(f"{keys.prefix}:other", 1)
    store.queue(pipe, [st("e1", "A", "S1", 3), {"op": "peek", "sku": "A"}])
    pipe.get(f"{keys.prefix}:other")
    replies = pipe.execute()
    assert len(replies) == 3
    assert store.parse(replies[1]).results == [{"on_hand": 3, "prev": 0}, {"S1": 3}]


def test_all_inventory_keys_share_one_hash_tag(
    store: InventoryStore, redis_client: redis.Redis, key_prefix: str
) -> None:
    store.apply(
        [
            st("e1", "A", "S1", 3, rp=1, max=5, lp=100),
            alloc("o1", [("A", 1)], [("S1", 0)]),
            {"op": "release", "oid": "o2", "day": 1},
        ]
    )
    LocationStore(redis_client, Keys(key_prefix)).put(
        [{"location_id": "S1", "kind": "store", "lat": 1.0, "lon": 2.0, "active": True}]
    )
    names = [k.decode() for k in redis_client.scan_iter(match=f"{key_prefix}*")]
    assert len(names) == 9
    assert all(n.startswith(f"{key_prefix}:{{inv}}:") for n in names)


def test_malformed_ops_are_refused_before_anything_runs(store: InventoryStore) -> None:
    for bad in (
        {"op": "teleport"},
        st("e1", "A", "S1", 2.5),  # type: ignore[arg-type]
        {"op": "sale", "eid": "e2", "loc": "S1", "day": 1, "lines": [{"sku": "A", "qty": -1}]},
        {**alloc("o1", [("A", 1)], []), "cands": [["S1"]]},
        {"op": "release", "oid": "o1"},
    ):
        with pytest.raises(ValueError):
            store.apply([st("ok", "A", "S1", 1), bad])
    assert store.stock(["A"]) == {"A": {}}


def test_redis_failures_surface_as_state_errors(
    store: InventoryStore, redis_client: redis.Redis, keys: Keys
) -> None:
    redis_client.set(keys.inv_stock("A"), "not a hash")
    with pytest.raises(StateError) as info:
        store.apply([adj("e1", "A", "S1", 1)])
    assert isinstance(info.value.__cause__, redis.ResponseError)

    dead = redis.Redis(host="127.0.0.1", port=1, retry=Retry(NoBackoff(), 0))
    with pytest.raises(StateError):
        InventoryStore(dead, keys, InventoryParams(z=Z95)).stock(["A"])
    with pytest.raises(StateError):
        LocationStore(dead, keys).all()


# -- allocation -------------------------------------------------------------------------


def test_whole_order_goes_to_the_first_candidate_holding_every_line(
    store: InventoryStore,
) -> None:
    store.apply(
        [
            st("e1", "A", "S1", 5),  # S1 has A only
            st("e2", "A", "W1", 2),
            st("e3", "B", "W1", 1),
            st("e4", "A", "W2", 9),
            st("e5", "B", "W2", 9),
        ]
    )
    order = alloc("o1", [("A", 1), ("B", 1), ("A", 1)], [("S1", 0), ("W1", 0), ("W2", 0)])
    plan = store.apply([order]).results[0]
    assert plan["split"] is False and plan["existing"] is False
    assert placed(plan) == [
        ("A", 1, "W1", "allocated"),
        ("B", 1, "W1", "allocated"),
        ("A", 1, "W1", "allocated"),
    ]
    assert store.stock(["A", "B"]) == {"A": {"S1": 5, "W1": 0, "W2": 9}, "B": {"W1": 0, "W2": 9}}


def test_split_by_line_with_backorder_when_no_location_holds_the_order(
    store: InventoryStore,
) -> None:
    store.apply([st("e1", "A", "S1", 3), st("e2", "A", "W1", 5), st("e3", "B", "W2", 1)])
    order = alloc(
        "o1",
        [("A", 2), ("B", 1), ("A", 2), ("C", 1), ("B", 1)],
        [("S1", 0), ("W1", 0), ("W2", 0)],
    )
    plan = store.apply([order]).results[0]
    assert plan["split"] is True
    assert placed(plan) == [
        ("A", 2, "S1", "allocated"),
        ("B", 1, "W2", "allocated"),
        ("A", 2, "W1", "allocated"),  # S1 has 1 left: a line is never split
        ("C", 1, None, "backorder"),
        ("B", 1, None, "backorder"),  # W2's only B went to the earlier line
    ]
    assert store.stock(["A", "B"]) == {"A": {"S1": 1, "W1": 3}, "B": {"W2": 0}}


def test_safety_stock_is_never_allocated(store: InventoryStore) -> None:
    store.apply([st("e1", "A", "W1", 5), st("e2", "A", "W2", 4)])
    cands = [("W1", 3), ("W2", 2)]
    r = store.apply(
        [
            alloc("o1", [("A", 3)], cands),  # W1 can give 2, W2 can give 2
            alloc("o2", [("A", 2)], cands),
            alloc("o3", [("A", 2)], cands),
            alloc("o4", [("A", 1)], cands),
        ]
    ).results
    assert [placed(p)[0][2:] for p in r] == [
        (None, "backorder"),
        ("W1", "allocated"),
        ("W2", "allocated"),
        (None, "backorder"),
    ]
    assert store.stock(["A"]) == {"A": {"W1": 3, "W2": 2}}


def test_pickup_at_a_store(store: InventoryStore) -> None:
    store.apply([st("e1", "A", "S1", 1), st("e2", "B", "S1", 2)])
    pick = alloc("o1", [("A", 1), ("B", 2)], [("S1", 0)], mode="pickup")
    plan = store.apply([pick]).results[0]
    assert plan["mode"] == "pickup" and plan["split"] is False
    assert placed(plan) == [("A", 1, "S1", "allocated"), ("B", 2, "S1", "allocated")]
    late = store.apply([alloc("o2", [("A", 1)], [("S1", 0)], mode="pickup")]).results[0]
    assert placed(late) == [("A", 1, None, "backorder")]


def test_reallocating_the_same_order_returns_the_plan_and_takes_nothing(
    store: InventoryStore,
) -> None:
    store.apply([st("e1", "A", "W1", 5)])
    first = store.apply([alloc("o1", [("A", 2)], [("W1", 0)])]).results[0]
    again = store.apply([alloc("o1", [("A", 4)], [("W1", 0)])]).results[0]
    assert again["existing"] is True
    assert placed(again) == placed(first) == [("A", 2, "W1", "allocated")]
    assert store.stock(["A"]) == {"A": {"W1": 3}}


def test_release_gives_the_units_back_once(store: InventoryStore) -> None:
    store.apply([st("e1", "A", "W1", 2), st("e2", "B", "W2", 1)])
    plan = store.apply([alloc("o1", [("A", 2), ("B", 1), ("C", 1)], [("W1", 0), ("W2", 0)])])
    assert store.stock(["A", "B"]) == {"A": {"W1": 0}, "B": {"W2": 0}}
    back = store.apply([{"op": "release", "oid": "o1", "day": 2}]).results[0]
    assert back["released"] == [x for x in plan.results[0]["lines"] if x["status"] == "allocated"]
    assert store.stock(["A", "B"]) == {"A": {"W1": 2}, "B": {"W2": 1}}
    r = store.apply(
        [
            {"op": "release", "oid": "o1", "day": 2},
            alloc("o1", [("A", 1)], [("W1", 0)], day=2),  # a replayed order_placed
        ]
    ).results
    assert r == [{"released": []}, {"oid": "o1", "released": True, "existing": True}]
    assert store.stock(["A", "B"]) == {"A": {"W1": 2}, "B": {"W2": 1}}


def test_cancel_before_place_leaves_a_tombstone(store: InventoryStore) -> None:
    store.apply([st("e1", "A", "W1", 2)])
    assert store.apply([{"op": "release", "oid": "o1", "day": 1}]).results == [{"released": []}]
    late = store.apply([alloc("o1", [("A", 1)], [("W1", 0)])]).results[0]
    assert late == {"oid": "o1", "released": True, "existing": True}
    assert store.stock(["A"]) == {"A": {"W1": 2}}


def test_allocation_records_expire(
    redis_client: redis.Redis, keys: Keys, store: InventoryStore
) -> None:
    store.apply([st("e1", "A", "W1", 2), alloc("o1", [("A", 1)], [("W1", 0)])])
    store.apply([{"op": "release", "oid": "o2", "day": 1}])
    p = store.params
    assert 0 < redis_client.ttl(keys.inv_alloc("o1")) <= p.alloc_ttl_s
    assert 0 < redis_client.ttl(keys.inv_alloc("o2")) <= p.alloc_ttl_s
    assert 0 < redis_client.ttl(keys.inv_dedup("e1")) <= p.dedup_ttl_s


# -- reorder ----------------------------------------------------------------------------


def test_reorder_fires_once_per_crossing_and_rearms_above_the_point(
    store: InventoryStore,
) -> None:
    r = store.apply([st("e1", "A", "S1", 20, day=1, rp=5, max=30)])
    assert r.reorders == []
    r = store.apply([sale("e2", "S1", {"A": 15}, day=1)])
    [first] = r.reorders
    assert (first.sku, first.location_id, first.on_hand) == ("A", "S1", 5)
    assert (first.reorder_point, first.max_level, first.quantity) == (5.0, 30.0, 25)
    assert (first.derived, first.crossing, first.event_day, first.lead_time_days) == (
        False,
        1,
        1,
        7,
    )
    # further sales and a small restock that stays at or below the point: silent
    quiet = store.apply([sale("e3", "S1", {"A": 2}, day=2), adj("e4", "A", "S1", 2, day=2)])
    assert quiet.reorders == []
    # above the point re-arms; the next crossing (an allocation) fires again
    r = store.apply(
        [
            adj("e6", "A", "S1", 10, day=3),
            alloc("o1", [("A", 10)], [("S1", 0)], day=3),
        ]
    )
    [second] = r.reorders
    assert (second.on_hand, second.quantity, second.crossing, second.op_index) == (5, 25, 2, 1)


def test_stock_set_below_a_configured_point_fires_and_defaults_the_order_up_to_level(
    store: InventoryStore,
) -> None:
    r = store.apply([st("e1", "A", "S1", 3, rp=4, lt=2)])
    [ro] = r.reorders
    # no max and no demand history: order up to twice the reorder point
    assert (ro.on_hand, ro.reorder_point, ro.max_level, ro.quantity) == (3, 4.0, 8.0, 5)
    assert (ro.lead_time_days, ro.daily_rate, ro.sigma) == (2, None, None)


def independent_ewma(daily: list[int], alpha: float) -> tuple[float, float]:
    mu: float | None = None
    var = 0.0
    for x in daily:
        if mu is None:
            mu = float(x)
        else:
            diff = x - mu
            mu += alpha * diff
            var = (1 - alpha) * (var + diff * alpha * diff)
    assert mu is not None
    return mu, var


def test_derived_reorder_point_follows_observed_demand(store: InventoryStore) -> None:
    rng = random.Random(20261122)
    lead = 5
    ops: list[dict[str, Any]] = [st("e0", "A", "S1", 100_000, day=1, lt=lead)]
    daily = []
    for day in range(1, 31):
        units = 0 if day == 17 else max(0, round(rng.gauss(20, 4)))  # day 17: no sales
        daily.append(units)
        left, n = units, 0
        while left > 0:  # several sales a day, some of them online orders
            q = min(left, rng.randint(1, 6))
            if n % 3 == 2:
                ops.append(alloc(f"o{day}-{n}", [("A", q)], [("S1", 0)], day=day))
            else:
                ops.append(sale(f"s{day}-{n}", "S1", {"A": q}, day=day))
            left -= q
            n += 1
    assert store.apply(ops).reorders == []
    # day 31: a stock count closes day 30 and finds the shelf low
    [ro] = store.apply([st("e-count", "A", "S1", 50, day=31)]).reorders

    mu, var = independent_ewma(daily, 0.2)
    rp = mu * lead + Z95 * math.sqrt(var) * math.sqrt(lead)
    assert ro.derived is True
    assert ro.reorder_point == pytest.approx(rp, rel=0.01)
    assert ro.daily_rate == pytest.approx(mu, rel=0.01)
    assert ro.sigma == pytest.approx(math.sqrt(var), rel=0.01)
    assert ro.max_level == pytest.approx(rp + 14 * mu, rel=0.01)
    assert abs(ro.quantity - (rp + 14 * mu - 50)) <= 1
    assert (ro.on_hand, ro.lead_time_days, ro.crossing, ro.event_day) == (50, lead, 1, 31)


def test_no_derived_point_before_enough_closed_days(store: InventoryStore) -> None:
    store.apply([st("e0", "A", "S1", 1000, day=1)])
    store.apply([sale(f"s{d}", "S1", {"A": 20}, day=d) for d in range(1, 7)])
    # day 7: six closed days, fewer than min_history_days = 7
    assert store.apply([st("e1", "A", "S1", 0, day=7)]).reorders == []
    # day 8 closes the seventh day: the derived point exists and stock is below it
    [ro] = store.apply([sale("s8", "S1", {"A": 1}, day=8)]).reorders
    # six days of 20 then the empty day 7: rate 20 + 0.2 * (0 - 20), variance 0.8 * 20 * 4
    assert (ro.derived, ro.on_hand) == (True, -1)
    assert (ro.daily_rate, ro.sigma) == (pytest.approx(16.0), pytest.approx(8.0))
    assert ro.reorder_point == pytest.approx(16 * 7 + Z95 * 8 * math.sqrt(7))


def test_a_long_gap_closes_at_most_366_empty_days(
    store: InventoryStore, redis_client: redis.Redis, keys: Keys
) -> None:
    store.apply([sale("s1", "S1", {"A": 10}, day=1), sale("s2", "S1", {"A": 10}, day=1000)])
    meta = redis_client.hgetall(keys.inv_meta("A"))
    assert int(meta[b"S1|nd"]) == 1 + 366
    assert float(meta[b"S1|mu"]) == pytest.approx(10 * 0.8**366)
    assert (int(meta[b"S1|dd"]), int(meta[b"S1|du"])) == (1000, 10)


# -- locations --------------------------------------------------------------------------


def loc(lid: str, kind: str, lat: float, lon: float, active: bool = True) -> dict[str, Any]:
    return {
        "location_id": lid,
        "kind": kind,
        "lat": lat,
        "lon": lon,
        "ship_cost_per_km": 12,
        "handling_cost": 300,
        "active": active,
    }


def test_locations_table_geo_index_and_version(redis_client: redis.Redis, keys: Keys) -> None:
    locs = LocationStore(redis_client, keys)
    assert (locs.version(), locs.all(), locs.near(31.23, 121.47, 50)) == (0, {}, [])
    v = locs.put(
        [
            loc("S-bund", "store", 31.2400, 121.4900),
            loc("S-pudong", "store", 31.2200, 121.5400),
            loc("W-jiading", "warehouse", 31.3800, 121.2500),
            loc("S-closed", "store", 31.2300, 121.4700, active=False),
        ]
    )
    assert v == locs.version() == 1
    everything = locs.all()
    assert set(everything) == {"S-bund", "S-pudong", "W-jiading", "S-closed"}
    assert "safety_stock" not in everything["S-bund"]  # the reader's default applies
    assert everything["S-closed"]["active"] is False
    near = locs.near(31.2304, 121.4737, 50)
    assert [lid for lid, _ in near] == ["S-bund", "S-pudong", "W-jiading"]
    assert 1.0 < near[0][1] < 3.0
    assert [lid for lid, _ in locs.near(31.2304, 121.4737, 50, kind="warehouse")] == ["W-jiading"]
    assert locs.near(31.2304, 121.4737, 5, kind="warehouse") == []

    # closing a store drops it from the index; reopening the other one adds it
    v = locs.put([loc("S-bund", "store", 31.24, 121.49, active=False)])
    v = locs.put([{**loc("S-closed", "store", 31.23, 121.47), "safety_stock": 2}])
    assert v == 3
    assert [lid for lid, _ in locs.near(31.2304, 121.4737, 50, kind="store")] == [
        "S-closed",
        "S-pudong",
    ]
    assert locs.all()["S-closed"]["safety_stock"] == 2

    # beyond what a geo index takes: kept in the table, not indexed
    assert locs.put([loc("W-pole", "warehouse", 89.9, 0.0)]) == 4
    assert locs.all()["W-pole"]["lat"] == 89.9
    assert locs.near(85.0, 0.0, 1000) == []  # 545 km away, but not indexed

    with pytest.raises(ValueError):
        locs.put([loc("S-new", "store", 31.0, 121.0), loc("S-odd", "kiosk", 31.0, 121.0)])
    with pytest.raises(ValueError):
        locs.put([loc("S-new", "store", 91.0, 121.0)])
    assert locs.version() == 4 and "S-new" not in locs.all()


# -- concurrency ------------------------------------------------------------------------

LOCS = {"L1": 0, "L2": 1, "L3": 0}  # location -> safety stock
SKUS = ["A", "B", "C", "D"]
WORKERS = 4
ORDERS_PER_WORKER = 150
SHARED_ORDERS = 20  # every worker tries to place these same orders
RESTOCKS = 40  # every worker sends these same stock events (+1 unit each)


def _order(rng: random.Random, oid: str) -> dict[str, Any]:
    cands = list(LOCS.items())
    rng.shuffle(cands)
    if rng.random() < 0.5:
        lines = [(rng.choice(SKUS), 1)]
    else:
        lines = [(rng.choice(SKUS), rng.randint(1, 2)) for _ in range(rng.randint(2, 3))]
    return alloc(oid, lines, cands, day=1 + rng.randint(0, 2))


def _restock(j: int) -> dict[str, Any]:
    rng = random.Random(2000 + j)
    return adj(f"restock-{j}", rng.choice(SKUS), rng.choice(list(LOCS)), 1, day=2)


def _race(url: str, prefix: str, worker: int, start: Any, out: Any) -> None:
    client = redis.Redis.from_url(url)
    store = InventoryStore(client, Keys(prefix), InventoryParams(z=Z95))
    rng = random.Random(worker)
    ops = [_order(rng, f"w{worker}-{j}") for j in range(ORDERS_PER_WORKER)]
    ops += [_order(random.Random(1000 + j), f"shared-{j}") for j in range(SHARED_ORDERS)]
    ops += [_restock(j) for j in range(RESTOCKS)]
    # cancel some of the next worker's orders, racing with their placement
    nxt = (worker + 1) % WORKERS
    ops += [
        {"op": "release", "oid": f"w{nxt}-{j}", "day": 2} for j in range(0, ORDERS_PER_WORKER, 7)
    ]
    rng.shuffle(ops)
    store.apply([{"op": "peek", "sku": "A"}])  # connected and script loaded
    start.wait(30)
    seen = []
    for i in range(0, len(ops), 3):
        batch = ops[i : i + 3]
        for op, r in zip(batch, store.apply(batch).results, strict=True):
            seen.append((op["op"], op.get("oid") or op.get("eid"), r))
    client.close()
    out.put(seen)


def test_racing_processes_never_allocate_more_than_exists(
    redis_server: Any, redis_client: redis.Redis, key_prefix: str, keys: Keys
) -> None:
    rng = random.Random(5)
    initial = Counter({(s, lid): rng.randint(2, 9) for s in SKUS for lid in LOCS})
    InventoryStore(redis_client, keys, InventoryParams(z=Z95)).apply(
        [st(f"init-{s}-{lid}", s, lid, n) for (s, lid), n in initial.items()]
    )
    for op in map(_restock, range(RESTOCKS)):
        initial[(op["sku"], op["loc"])] += op["delta"]

    ctx = mp.get_context("spawn")
    start, out = ctx.Barrier(WORKERS), ctx.Queue()
    procs = [
        ctx.Process(target=_race, args=(redis_server.url, key_prefix, w, start, out))
        for w in range(WORKERS)
    ]
    for p in procs:
        p.start()
    seen = [x for _ in procs for x in out.get(timeout=60)]
    for p in procs:
        p.join(10)
        assert p.exitcode == 0

    stock = InventoryStore(redis_client, keys, InventoryParams(z=Z95)).stock(SKUS)
    records = {}
    for name in redis_client.scan_iter(match=f"{keys.inv_alloc('')}*"):
        raw = redis_client.get(name)
        oid = name.decode().rsplit(":a:", 1)[1]
        records[oid] = None if raw == b"released" else orjson.loads(raw)

    # each restock was applied by exactly one worker
    applied = Counter(eid for kind, eid, r in seen if kind == "adjust" and not r.get("dup"))
    assert applied == Counter({f"restock-{j}": 1 for j in range(RESTOCKS)})

    # stock conservation: what the live plans hold plus what is left is what there was
    held: Counter[tuple[str, str]] = Counter()
    for plan in records.values():
        for x in plan["lines"] if plan else []:
            if x["status"] == "allocated":
                held[(x["sku"], x["location_id"])] += x["qty"]
    for (s, lid), n in initial.items():
        left = stock[s].get(lid, 0)
        assert held[(s, lid)] + left == n, (s, lid)
        assert left >= LOCS[lid], (s, lid)  # never below safety stock
    assert sum(held.values()) > 0
    assert any(x["status"] == "backorder" for p in records.values() if p for x in p["lines"])

    # every order was planned at most once, and every report of it agrees
    fresh: defaultdict[str, list[dict[str, Any]]] = defaultdict(list)
    for kind, oid, r in seen:
        if kind == "alloc" and not r["existing"]:
            fresh[oid].append(r)
    assert all(len(v) == 1 for v in fresh.values())
    assert len([oid for oid in fresh if oid.startswith("shared-")]) == SHARED_ORDERS
    released = {oid: r for kind, oid, r in seen if kind == "release" and r["released"]}
    for oid, plan in records.items():
        if plan is not None:
            assert placed(fresh[oid][0]) == placed(plan)
            assert oid not in released
        elif oid in released:
            assert released[oid]["released"] == [
                x for x in fresh[oid][0]["lines"] if x["status"] == "allocated"
            ]
    for kind, oid, r in seen:
        if kind == "alloc" and r["existing"] and records[oid] is not None:
            assert placed(r) == placed(records[oid])


def test_no_reorder_of_nothing_when_a_derived_point_wore_down(redis_client, keys) -> None:
    store = InventoryStore(redis_client, keys, InventoryParams(z=Z95, min_history_days=1))
    store.apply([st("w1", "Q", "L", 5, day=0), sale("w2", "L", {"Q": 1}, day=0)])
    # 200 quiet days wear the derived point down to ~0; stock then reaches 0
    result = store.apply([adj("w3", "Q", "L", -4, day=200)])
    assert result.reorders == []
    # a real need still fires: stock comes back, demand returns and drains it
    store.apply([st("w4", "Q", "L", 40, day=201)])
    result = store.apply([sale(f"s{d}", "L", {"Q": 5}, day=d) for d in range(202, 212)])
    assert len(result.reorders) == 1 and result.reorders[0].quantity > 0
