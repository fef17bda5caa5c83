"""Commerce round of a batch: stock, locations, allocation, price checks, BOPIS.

Every stock-touching op of a batch (stock events, in-store sales, allocations,
releases, stock and price look-ups) goes to ONE atomic script call, in the
order the events arrived, so a look-up sees the stock events before it and
two workers never both take the last unit. Choosing among locations by cost is
pure (`operators.geo`); taking the stock is the script's job.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from connectors.events import Event
from flows.worker import Worker
from operators.geo import Candidate, Location, candidate, nearest_holding, rank_candidates
from operators.policy import local_day
from operators.pricing import price_alerts
from operators.supply import allocation_trigger, bopis_trigger, reorder_trigger
from operators.triggers import Trigger, in_holdout

BOPIS_TYPES = frozenset({"product_view", "cart_add"})


@dataclass(slots=True)
class InventoryOutcome:
    triggers: list[Trigger] = field(default_factory=list)  # allocation, reorder, price_alert
    stock: dict[str, dict[str, int]] = field(default_factory=dict)  # peeked SKUs


def apply_inventory(w: Worker, events: list[Event]) -> InventoryOutcome:
    """Locations first, then one script call for every stock-touching op of the batch."""
    places = [e.data for e in events if e.topic == "locations"]
    if places:
        w.refresh_locations(w.location_store.put(places))
        w.counters["locations:updated"] += len(places)
    elif w.locations_version < 0:
        w.refresh_locations(w.location_store.version())
    ops: list[dict[str, Any]] = []
    why: list[tuple[str, Event, Any]] = []  # per op: what it is for
    peeked: set[str] = set()
    for e in events:
        day = local_day(e.ts, w.rules.tz)
        if e.topic == "stock":
            ops.append(_stock_op(e, day))
            why.append(("stock", e, None))
        elif e.topic == "orders":
            for op, meta in _order_ops(w, e, day):
                ops.append(op)
                why.append((op["op"], e, meta))
        elif e.type in BOPIS_TYPES and e.customer_id is not None and e.data.get("sku"):
            sku = e.data["sku"]
            if sku not in peeked:
                peeked.add(sku)
                ops.append({"op": "peek", "sku": sku})
                why.append(("peek", e, sku))
    out = InventoryOutcome()
    pipe = w.store.pipeline()
    if ops:
        w.inventory.queue(pipe, ops, w.batch_id())
    pipe.get(w.location_store.keys.locations_version)
    replies = w.store.execute(pipe, "apply inventory ops")
    # Another worker's location changes are picked up from the next batch on.
    w.refresh_locations(int(replies[-1] or 0))
    if not ops:
        return out
    result = w.inventory.parse(replies[0])
    prices: dict[str, dict[str, int | None]] = defaultdict(dict)  # event id -> sku -> cents
    for (what, e, meta), res in zip(why, result.results, strict=True):
        if isinstance(res, dict) and res.get("dup"):
            w.counters[f"inventory:duplicate_{what}"] += 1
        elif what == "alloc":
            out.triggers.extend(_allocation(w, e, res, meta))
        elif what == "release":
            w.counters["allocation:released_orders"] += 1 if res and res.get("released") else 0
        elif what == "price":
            prices[e.event_id][meta] = res  # type: ignore[assignment]
        elif what == "peek":
            out.stock[meta] = {k: int(v) for k, v in (res or {}).items()}
    for e in events:
        if e.event_id in prices:
            f = e.data.get("fulfilment") or {}
            out.triggers.extend(
                price_alerts(
                    e.data["order_id"],
                    e.channel,
                    f.get("store_id"),
                    e.data["lines"],
                    prices[e.event_id],
                    w.rules.max_price_deviation_pct,
                    e.ts,
                )
            )
    for r in result.reorders:
        out.triggers.append(
            reorder_trigger(
                sku=r.sku,
                location_id=r.location_id,
                on_hand=r.on_hand,
                reorder_point=r.reorder_point,
                max_level=r.max_level,
                quantity=r.quantity,
                derived=r.derived,
                daily_rate=r.daily_rate,
                sigma=r.sigma,
                lead_time_days=r.lead_time_days,
                crossing=r.crossing,
                z=w.rules.z,
                service_level=w.rules.service_level,
                event_ts=why[r.op_index][1].ts,
            )
        )
    return out


def _stock_op(e: Event, day: int) -> dict[str, Any]:
    d = e.data
    op: dict[str, Any] = {
        "op": "set" if e.type == "stock_set" else "adjust",
        "eid": e.event_id,
        "sku": d["sku"],
        "loc": d["location_id"],
        "day": day,
    }
    if e.type == "stock_set":
        op["on_hand"] = d["on_hand"]
    else:
        op["delta"] = d["delta"]
    for name, key in (("reorder_point", "rp"), ("max_level", "max"), ("lead_time_days", "lt")):
        if d.get(name) is not None:
            op[key] = d[name]
    if d.get("list_price") is not None:
        op["lp"] = d["list_price"]
    return op


def _order_ops(w: Worker, e: Event, day: int) -> list[tuple[dict[str, Any], Any]]:
    d = e.data
    oid = d["order_id"]
    if e.type == "order_cancelled":
        return [({"op": "release", "oid": oid, "day": day}, None)]
    if e.type != "order_placed":
        return []  # a return goes back to stock through the WMS's own stock event
    out: list[tuple[dict[str, Any], Any]] = [
        ({"op": "price", "sku": sku}, sku) for sku in dict.fromkeys(ln["sku"] for ln in d["lines"])
    ]
    f = d.get("fulfilment")
    if f is None:
        return out
    lines = [{"sku": ln["sku"], "qty": ln["qty"]} for ln in d["lines"]]
    if f["mode"] == "in_store":
        sale = {"op": "sale", "eid": e.event_id, "loc": f["store_id"], "day": day, "lines": lines}
        return [*out, (sale, None)]
    if f["mode"] == "pickup":
        store = w.locations.get(f["store_id"])
        safety = store.safety_stock if store else w.rules.default_safety_stock
        ranked = [] if store is None else [candidate(store.lat, store.lon, store)]
        cands = [[f["store_id"], safety]]
    else:
        ranked = rank_candidates(f["lat"], f["lon"], w.locations.values(), kinds=w.rules.ship_kinds)
        cands = [[c.location_id, c.location.safety_stock] for c in ranked]
    alloc = {"op": "alloc", "oid": oid, "mode": f["mode"], "day": day, "lines": lines}
    alloc["cands"] = cands
    return [*out, (alloc, ranked)]


def _allocation(
    w: Worker, e: Event, res: dict[str, Any] | None, ranked: list[Candidate]
) -> list[Trigger]:
    if not res or res.get("released"):
        w.counters["allocation:after_cancel"] += 1
        return []
    w.counters["allocation:lines_backordered"] += sum(
        1 for ln in res["lines"] if ln["status"] == "backorder"
    )
    return [
        allocation_trigger(
            e.data["order_id"],
            e.customer_id,
            e.ts,
            res["mode"],
            res["lines"],
            ranked,
            split=bool(res.get("split")),
        )
    ]


def _allocatable(w: Worker, by_location: dict[str, int]) -> dict[str, int]:
    out = {}
    for loc, on_hand in by_location.items():
        place = w.locations.get(loc)
        safety = place.safety_stock if place else w.rules.default_safety_stock
        out[loc] = max(0, on_hand - safety)
    return out


def cart_availability(w: Worker, skus: list[str]) -> dict[str, int | None]:
    """Units a delivery could be served from, per SKU; None when no stock is recorded.

    Stock at a location the engine has no record of counts (the retailer may
    not publish locations); known locations count when active and shipping.
    """
    out: dict[str, int | None] = {}
    for sku, by_loc in w.inventory.stock(skus).items():
        if not by_loc:
            out[sku] = None
            continue
        total = 0
        for loc, units in _allocatable(w, by_loc).items():
            place = w.locations.get(loc)
            if place is None or (place.active and place.kind in w.rules.ship_kinds):
                total += units
        out[sku] = total
    return out


def bopis(
    w: Worker,
    events: list[Event],
    finals: dict[str, dict[str, Any]],
    stock: dict[str, dict[str, int]],
) -> list[Trigger]:
    """A view or cart of a SKU no warehouse has: suggest the nearest store holding it."""
    warehouses = [p for p in w.locations.values() if p.kind == "warehouse" and p.active]
    if not warehouses or not stock:
        return []
    out: list[Trigger] = []
    seen: set[tuple[str, str, int]] = set()
    for e in events:
        sku = e.data.get("sku")
        if e.type not in BOPIS_TYPES or e.customer_id is None or sku not in stock:
            continue
        day = local_day(e.ts, w.rules.tz)
        if (e.customer_id, sku, day) in seen or not stock[sku]:
            continue
        seen.add((e.customer_id, sku, day))
        units = _allocatable(w, stock[sku])
        if any(units.get(p.location_id, 0) > 0 for p in warehouses):
            continue
        where = _position(w, e, finals.get(e.customer_id) or {})
        if where is None:
            w.counters["bopis:no_position"] += 1
            continue
        (lat, lon), source = where
        store = nearest_holding(lat, lon, w.locations.values(), units, kind="store")
        if store is None:
            continue
        out.append(
            bopis_trigger(
                e.customer_id,
                sku,
                store,
                units[store.location_id],
                source,
                len(warehouses),
                day,
                e.ts,
                in_holdout(e.customer_id, w.rules.holdout_share),
            )
        )
    return out


def _position(w: Worker, e: Event, final: dict[str, Any]) -> tuple[tuple[float, float], str] | None:
    """Where the customer is: the event's position or store, else the last known ones."""
    d = e.data
    if d.get("lat") is not None:
        return (d["lat"], d["lon"]), "event"
    for store_id, source in ((d.get("store_id"), "event_store"), (final.get("ls"), "last_store")):
        place: Location | None = w.locations.get(store_id) if store_id else None
        if place is not None:
            return (place.lat, place.lon), source
    if final.get("lpos"):
        lat, lon = (float(x) for x in str(final["lpos"]).split(","))
        return (lat, lon), "last_delivery"
    return None
