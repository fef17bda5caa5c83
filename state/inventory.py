"""Inventory state in Redis: stock per (sku, location), atomic allocation,
low-stock reorder detection and the demand rate behind derived reorder points.

All operations of one call go to a single Lua call (`inventory.lua`) that runs
them atomically and in order, so two workers racing for the last unit never
both get it. Every inventory key shares the ``{inv}`` hash tag (one slot), which
is what lets one call touch several SKUs; see `state/keys.py` for the layout.

Operations are plain dicts (orjson-encoded for the script):

``{"op": "set", "eid", "sku", "loc", "on_hand", "day", "rp"?, "max"?, "lt"?, "lp"?}``
    absolute stock level; the optional fields persist the reorder point, the
    max level and the lead time of (sku, loc), and the list price (cents) of sku.
    Result ``{"on_hand", "prev"}``, or ``{"dup": true}`` for a seen ``eid``.
``{"op": "adjust", "eid", "sku", "loc", "delta", "day", ...same optional fields}``
    signed change; result as for ``set``.
``{"op": "sale", "eid", "loc", "day", "lines": [{"sku", "qty"}]}``
    an in-store sale: decrements unconditionally (stock may go negative) and
    counts as demand. Result ``{"on_hand": {sku: level}}`` or ``{"dup": true}``.
``{"op": "alloc", "oid", "mode", "day", "lines": [{"sku", "qty"}], "cands": [[loc, safety]]}``
    reserve stock for an order; ``cands`` ranked best first by the caller. The
    first candidate that holds every line above its safety stock takes the
    whole order; otherwise each line (never split itself) goes to the first
    candidate that can serve it, or is ``backorder``. Result ``{"oid", "mode",
    "lines": [{"sku", "qty", "location_id", "status"}], "split", "existing"}``;
    an order seen before returns its stored plan with ``existing`` true and
    changes nothing (``{"oid", "released": true, "existing": true}`` once released).
``{"op": "release", "oid", "day"}``
    cancellation: returns the held units and leaves a "released" tombstone,
    also when the order was never allocated, so a late order_placed does not
    allocate. Idempotent. Result ``{"released": [plan lines given back]}``.
``{"op": "peek", "sku"}`` -> ``{loc: on_hand}``;  ``{"op": "price", "sku"}`` -> cents or None.

Days are integer day numbers chosen by the caller (event-time days). Demand is
an EWMA of units per closed day per (sku, loc); a late sale for a day already
closed is counted on the open day (an approximation that keeps the totals).
A release gives units back but does not take the demand back.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import orjson
import redis

from state.errors import StateError, execute
from state.keys import Keys
from state.replies import as_list, text

# Lua numbers are doubles and cjson writes them with 14 significant digits: quantities,
# days and prices stay well inside that, so they come back exact.
_MAX_INT = 10**13


def _load(name: str) -> str:
    return resources.files("state").joinpath("lua", name).read_text()


@dataclass(frozen=True, slots=True)
class InventoryParams:
    z: float  # service-level z (e.g. 1.6449 for 95 %)
    ewma_alpha: float = 0.2
    default_lead_time_days: int = 7
    min_history_days: int = 7  # closed demand days needed before a derived reorder point
    cover_days: int = 14  # derived order-up-to level = reorder point + cover_days * rate
    dedup_ttl_s: int = 7 * 86_400
    alloc_ttl_s: int = 30 * 86_400


@dataclass(frozen=True, slots=True)
class Reorder:
    """One crossing of a reorder point: order `quantity` to bring stock up to `max_level`."""

    sku: str
    location_id: str
    on_hand: int
    reorder_point: float
    max_level: float
    quantity: int
    derived: bool  # the reorder point comes from observed demand, not configuration
    daily_rate: float | None
    sigma: float | None
    lead_time_days: int
    crossing: int  # the number of crossings of (sku, location) so far, 1 for the first
    event_day: int
    op_index: int = -1  # position in the op list of the op that caused it


@dataclass(slots=True)
class InventoryResult:
    results: list[Any] = field(default_factory=list)  # one per op: a dict, an int or None
    reorders: list[Reorder] = field(default_factory=list)


class InventoryStore:
    """Batched, atomic inventory operations. Create in a step's setup, not at import."""

    def __init__(self, client: redis.Redis, keys: Keys, params: InventoryParams) -> None:
        self.client = client
        self.keys = keys
        self.params = params
        self._script = client.register_script(_load("inventory.lua"))

    def queue(self, pipe: Any, ops: list[dict[str, Any]], memo: str = "") -> None:
        """Add one script call that runs all `ops` to the caller's pipeline.

        With a `memo` id the reply is kept, and a later call with the same id
        returns it unchanged instead of running the ops (`forget` drops it).

        Raises ValueError for a malformed op before anything is queued: a Lua
        error half-way would leave the ops before it applied.
        """
        for op in ops:
            _check(op)
        p = self.params
        args = [
            p.dedup_ttl_s,
            p.alloc_ttl_s,
            repr(float(p.z)),
            repr(float(p.ewma_alpha)),
            p.default_lead_time_days,
            p.min_history_days,
            p.cover_days,
            orjson.dumps(ops),
            memo,
        ]
        self._script(keys=[self.keys.inv_base], args=args, client=pipe)

    def forget(self, pipe: Any, memo: str) -> None:
        """Queue dropping a kept reply: its batch is committed, never read again."""
        pipe.delete(self.keys.inv_memo(memo))

    def parse(self, reply: Any) -> InventoryResult:
        """Decode the reply of the call `queue` added."""
        if isinstance(reply, Exception):
            raise StateError(f"redis: inventory script failed: {reply}") from reply
        try:
            r = orjson.loads(reply)
        except (orjson.JSONDecodeError, TypeError) as ex:
            raise StateError(f"redis: unreadable inventory reply: {reply!r:.200}") from ex
        # cjson writes an empty Lua table as {}: read that as an empty list.
        results = [_result(x) for x in as_list(r.get("results"))]
        return InventoryResult(results, [_reorder(x) for x in as_list(r.get("reorders"))])

    def apply(self, ops: list[dict[str, Any]]) -> InventoryResult:
        """Run `ops` in one round trip of its own."""
        pipe = self.client.pipeline(transaction=False)
        self.queue(pipe, ops)
        return self.parse(execute(pipe, "apply inventory ops")[0])

    def stock(self, skus: Sequence[str]) -> dict[str, dict[str, int]]:
        """sku -> {location: on_hand}, one pipeline; a SKU with no stock maps to {}."""
        skus = list(dict.fromkeys(skus))
        if not skus:
            return {}
        pipe = self.client.pipeline(transaction=False)
        for sku in skus:
            pipe.hgetall(self.keys.inv_stock(sku))
        replies = execute(pipe, "read stock")
        return {
            sku: {text(loc): int(v) for loc, v in raw.items()}
            for sku, raw in zip(skus, replies, strict=True)
        }


# -- reply decoding ---------------------------------------------------------------------


def _result(x: Any) -> Any:
    if isinstance(x, dict):
        if "lines" in x:
            x["lines"] = as_list(x["lines"])
        if isinstance(x.get("released"), dict):
            x["released"] = []
    return x


def _float(v: Any) -> float | None:
    return None if v is None else float(v)


def _reorder(x: dict[str, Any]) -> Reorder:
    return Reorder(
        sku=x["sku"],
        location_id=x["location_id"],
        on_hand=int(x["on_hand"]),
        reorder_point=float(x["reorder_point"]),
        max_level=float(x["max_level"]),
        quantity=int(x["quantity"]),
        derived=bool(x["derived"]),
        daily_rate=_float(x.get("daily_rate")),
        sigma=_float(x.get("sigma")),
        lead_time_days=int(x["lead_time_days"]),
        crossing=int(x["crossing"]),
        event_day=int(x["event_day"]),
        op_index=int(x["op"]),
    )


# -- op validation ----------------------------------------------------------------------


def _int(op: dict[str, Any], name: str, low: int = -_MAX_INT) -> None:
    v = op.get(name)
    if type(v) is not int or not low <= v <= _MAX_INT:
        raise ValueError(f"inventory op {op.get('op')!r}: {name} must be an integer, got {v!r}")


def _str(op: dict[str, Any], name: str) -> None:
    v = op.get(name)
    if not isinstance(v, str) or not v:
        raise ValueError(f"inventory op {op.get('op')!r}: {name} must be a non-empty string")


def _num_opt(op: dict[str, Any], name: str) -> None:
    v = op.get(name)
    if v is not None and (isinstance(v, bool) or not isinstance(v, int | float) or v != v):
        raise ValueError(f"inventory op {op.get('op')!r}: {name} must be a number, got {v!r}")


def _lines(op: dict[str, Any]) -> None:
    lines = op.get("lines")
    if not isinstance(lines, list):
        raise ValueError(f"inventory op {op.get('op')!r}: lines must be a list")
    for line in lines:
        if not isinstance(line, dict):
            raise ValueError(f"inventory op {op.get('op')!r}: a line must be an object")
        _str(line, "sku")
        _int(line, "qty", 0)


def _check(op: dict[str, Any]) -> None:
    kind = op.get("op")
    if kind in ("set", "adjust"):
        for name in ("eid", "sku", "loc"):
            _str(op, name)
        _int(op, "on_hand" if kind == "set" else "delta")
        _int(op, "day")
        for name in ("rp", "max"):
            _num_opt(op, name)
        for name in ("lt", "lp"):
            if op.get(name) is not None:
                _int(op, name, 0)
    elif kind == "sale":
        for name in ("eid", "loc"):
            _str(op, name)
        _int(op, "day")
        _lines(op)
    elif kind == "alloc":
        for name in ("oid", "mode"):
            _str(op, name)
        _int(op, "day")
        _lines(op)
        cands = op.get("cands")
        if not isinstance(cands, list) or not all(
            isinstance(c, list | tuple)
            and len(c) == 2
            and isinstance(c[0], str)
            and c[0]
            and type(c[1]) is int
            for c in cands
        ):
            raise ValueError("inventory op 'alloc': cands must be [[location_id, safety], ...]")
    elif kind == "release":
        _str(op, "oid")
        _int(op, "day")
    elif kind in ("peek", "price"):
        _str(op, "sku")
    else:
        raise ValueError(f"unknown inventory op {kind!r}")
