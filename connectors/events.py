"""The input event contract (SPEC §3): bytes off a topic in, a checked `Event` out.

Every check a channel system can fail lives here, so a bad event is turned into
a `Rejected` with a reason that names the field — never an exception that
stops the engine. Money becomes integer cents at this boundary, so no float
ever reaches a total that is kept for years.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

import orjson

from operators.clock import datetime_to_ms

MAX_ID_LEN = 128
MAX_TEXT_LEN = 512
MAX_LINES = 500
MAX_QTY = 1_000_000
MAX_CENTS = 10**13  # 100 billion in currency units: beyond any real order
MAX_STOCK = 10**9

TYPES: dict[str, frozenset[str]] = {
    "clicks": frozenset({"page_view", "product_view", "search"}),
    "carts": frozenset({"cart_add", "cart_remove", "checkout_start"}),
    "orders": frozenset({"order_placed", "order_cancelled", "order_returned"}),
    "stock": frozenset({"stock_set", "stock_adjust"}),
}


@dataclass(slots=True)
class Event:
    """A validated input event. `data` holds the topic-specific fields, normalised."""

    topic: str
    event_id: str
    type: str
    ts: int  # event time, epoch milliseconds
    channel: str | None
    customer_id: str | None
    anonymous_id: str | None
    data: dict[str, Any] = field(default_factory=dict)
    partition: int = 0
    offset: int = 0


@dataclass(slots=True)
class Rejected:
    """An input record that must not be applied: it goes to the dead-letter topic."""

    code: str  # short, stable: used as a metric label
    detail: str
    topic: str
    partition: int
    offset: int
    key: bytes | None
    raw: bytes | None

    @property
    def reason(self) -> str:
        return f"{self.code}: {self.detail}"


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds that depend on configuration and on the wall clock at ingest."""

    now_ms: int  # wall clock when the record was read (for the far-future check)
    max_future_ms: int = 86_400_000
    min_ts_ms: int = 946_684_800_000  # 2000-01-01T00:00:00Z
    max_value_bytes: int = 262_144


class _Invalid(Exception):
    """Internal: carries a reject code and detail up to `parse_record`."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail


def parse_record(
    topic: str,
    value: bytes | None,
    limits: Limits,
    *,
    partition: int = 0,
    offset: int = 0,
    key: bytes | None = None,
) -> Event | Rejected:
    """Decode and validate one record of logical topic `topic`."""
    return _precise(topic, value, limits, partition, offset, key)


def _precise(
    topic: str, value: bytes | None, limits: Limits, partition: int, offset: int, key: bytes | None
) -> Event | Rejected:
    """The field-by-field path: every reject reason comes from here."""
    try:
        obj = _decode(value, limits)
        event = _validate(topic, obj, limits)
    except _Invalid as bad:
        return Rejected(bad.code, bad.detail, topic, partition, offset, key, value)
    event.partition = partition
    event.offset = offset
    return event


def _decode(value: bytes | None, limits: Limits) -> dict[str, Any]:
    if value is None:
        raise _Invalid("empty", "record has no value (tombstone)")
    if len(value) > limits.max_value_bytes:
        raise _Invalid("too_large", f"{len(value)} bytes > {limits.max_value_bytes}")
    try:
        obj = orjson.loads(value)
    except orjson.JSONDecodeError as ex:
        # orjson rejects invalid UTF-8 as a decode error; say which it was.
        try:
            value.decode("utf-8")
        except UnicodeDecodeError:
            raise _Invalid("not_utf8", "value is not valid UTF-8") from ex
        raise _Invalid("invalid_json", str(ex)[:200]) from ex
    if not isinstance(obj, dict):
        raise _Invalid("wrong_type", f"event must be a JSON object, got {type(obj).__name__}")
    return obj


# --- field helpers: each raises _Invalid naming the field ---------------------------


def _req(obj: dict[str, Any], name: str) -> Any:
    v = obj.get(name)
    if v is None:
        raise _Invalid("missing_field", name)
    return v


def _str(
    obj: dict[str, Any], name: str, *, required: bool, max_len: int = MAX_ID_LEN
) -> str | None:
    v = obj.get(name)
    if v is None:
        if required:
            raise _Invalid("missing_field", name)
        return None
    if not isinstance(v, str):
        raise _Invalid("wrong_type", f"{name}: expected string, got {type(v).__name__}")
    if not v or len(v) > max_len:
        raise _Invalid("bad_value", f"{name}: length must be 1..{max_len}")
    return v


def _int(obj: dict[str, Any], name: str, *, required: bool, lo: int, hi: int) -> int | None:
    v = obj.get(name)
    if v is None:
        if required:
            raise _Invalid("missing_field", name)
        return None
    if isinstance(v, bool) or not isinstance(v, int):
        if isinstance(v, float) and v.is_integer():
            v = int(v)
        else:
            raise _Invalid("wrong_type", f"{name}: expected integer, got {type(v).__name__}")
    if v < lo:
        code = "negative_qty" if lo >= 0 and v < 0 else "bad_value"
        raise _Invalid(code, f"{name}: {v} < {lo}")
    if v > hi:
        raise _Invalid("bad_value", f"{name}: {v} > {hi}")
    return v


def _float(obj: dict[str, Any], name: str, *, required: bool, lo: float, hi: float) -> float | None:
    v = obj.get(name)
    if v is None:
        if required:
            raise _Invalid("missing_field", name)
        return None
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise _Invalid("wrong_type", f"{name}: expected number, got {type(v).__name__}")
    if not lo <= v <= hi:
        raise _Invalid("bad_value", f"{name}: {v} outside [{lo}, {hi}]")
    return float(v)


def cents(value: Any, name: str, *, allow_negative: bool = False) -> int:
    """Parse a decimal amount (string or JSON number) to integer cents, exactly."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise _Invalid("wrong_type", f"{name}: expected decimal, got {type(value).__name__}")
    try:
        # str() of a float is its shortest round-trip repr: 19.99 -> "19.99", no drift.
        d = Decimal(value if isinstance(value, str) else str(value))
    except InvalidOperation as ex:
        raise _Invalid("wrong_type", f"{name}: {str(value)[:40]!r} is not a decimal") from ex
    if not d.is_finite():
        raise _Invalid("bad_value", f"{name}: not a finite number")
    if d.adjusted() > 13:
        # Checked before any arithmetic: "1E999999" must not overflow or stall.
        raise _Invalid("bad_value", f"{name}: out of range")
    scaled = d * 100
    if scaled != scaled.to_integral_value():
        raise _Invalid("bad_value", f"{name}: more than 2 decimal places")
    c = int(scaled)
    if c < 0 and not allow_negative:
        raise _Invalid("negative_amount", f"{name}: {d} < 0")
    if abs(c) > MAX_CENTS:
        raise _Invalid("bad_value", f"{name}: {d} is out of range")
    return c


def _ts(obj: dict[str, Any], limits: Limits) -> int:
    return _event_time(_req(obj, "ts"), limits)


def _event_time(v: Any, limits: Limits) -> int:
    if isinstance(v, bool):
        raise _Invalid("wrong_type", "ts: expected RFC 3339 string or epoch milliseconds")
    if isinstance(v, int):
        ms = v
    elif isinstance(v, str):
        if len(v) > 40:
            raise _Invalid("bad_ts", "ts: too long")
        try:
            dt = datetime.fromisoformat(v)
        except ValueError as ex:
            raise _Invalid("bad_ts", f"ts: {v!r} is not RFC 3339") from ex
        if dt.tzinfo is None:
            raise _Invalid("bad_ts", f"ts: {v!r} has no UTC offset")
        ms = datetime_to_ms(dt)
    else:
        raise _Invalid("wrong_type", f"ts: expected string or integer, got {type(v).__name__}")
    if ms < limits.min_ts_ms:
        raise _Invalid("bad_ts", f"ts: {ms} is before the earliest accepted event time")
    if ms > limits.now_ms + limits.max_future_ms:
        raise _Invalid("future_ts", f"ts: {ms} is more than the allowed skew in the future")
    return ms


def _channel(obj: dict[str, Any], *, required: bool) -> str | None:
    ch = _str(obj, "channel", required=required, max_len=32)
    if ch is not None:
        _check_channel(ch)
    return ch


def _check_channel(ch: str) -> None:
    if not (ch.replace("_", "").isalnum() and ch.islower() and ch.isascii()):
        raise _Invalid("bad_value", "channel: must be a lowercase identifier")


# --- per-topic validation ----------------------------------------------------------


def _validate(topic: str, obj: dict[str, Any], limits: Limits) -> Event:
    if topic == "locations":
        return _location(obj)
    types = TYPES.get(topic)
    if types is None:
        raise _Invalid("unknown_topic", f"no contract for topic {topic!r}")
    event_id = _str(obj, "event_id", required=True)
    etype = _str(obj, "type", required=True, max_len=32)
    if etype not in types:
        raise _Invalid("unknown_type", f"type {etype!r} is not one of {sorted(types)}")
    ts = _ts(obj, limits)
    customer_id = _str(obj, "customer_id", required=topic in ("carts", "orders"))
    anonymous_id = _str(obj, "anonymous_id", required=False)
    channel = _channel(obj, required=topic != "stock")
    data: dict[str, Any]
    if topic == "clicks":
        if customer_id is None and anonymous_id is None:
            raise _Invalid("missing_field", "customer_id or anonymous_id")
        data = _click(obj)
    elif topic == "carts":
        data = _cart(obj, etype)
    elif topic == "orders":
        data = _order(obj)
    else:
        data = _stock(obj, etype)
    return Event(topic, event_id, etype, ts, channel, customer_id, anonymous_id, data)  # type: ignore[arg-type]


def _click(obj: dict[str, Any]) -> dict[str, Any]:
    premium = obj.get("premium", False)
    if not isinstance(premium, bool):
        raise _Invalid("wrong_type", "premium: expected boolean")
    data: dict[str, Any] = {
        "session_id": _str(obj, "session_id", required=True),
        "sku": _str(obj, "sku", required=False),
        "category": _str(obj, "category", required=False),
        "premium": premium,
        "query": _str(obj, "query", required=False, max_len=MAX_TEXT_LEN),
        "store_id": _str(obj, "store_id", required=False),
    }
    data.update(_position(obj))
    return data


def _position(obj: dict[str, Any]) -> dict[str, Any]:
    lat = _float(obj, "lat", required=False, lo=-90.0, hi=90.0)
    lon = _float(obj, "lon", required=False, lo=-180.0, hi=180.0)
    if (lat is None) != (lon is None):
        raise _Invalid("missing_field", "lat and lon must come together")
    return {} if lat is None else {"lat": lat, "lon": lon}


def _cart(obj: dict[str, Any], etype: str) -> dict[str, Any]:
    needs_line = etype != "checkout_start"
    data: dict[str, Any] = {
        "sku": _str(obj, "sku", required=needs_line),
        "qty": _int(obj, "qty", required=needs_line, lo=1, hi=MAX_QTY),
        "session_id": _str(obj, "session_id", required=False),
    }
    price = obj.get("unit_price")
    if price is None and needs_line and etype == "cart_add":
        raise _Invalid("missing_field", "unit_price")
    data["unit_price"] = None if price is None else cents(price, "unit_price")
    data.update(_position(obj))
    return data


def _order(obj: dict[str, Any]) -> dict[str, Any]:
    order_id = _str(obj, "order_id", required=True)
    raw_lines = _req(obj, "lines")
    if not isinstance(raw_lines, list):
        raise _Invalid("wrong_type", "lines: expected a list")
    if len(raw_lines) > MAX_LINES:
        raise _Invalid("bad_value", f"lines: more than {MAX_LINES}")
    lines = []
    for i, line in enumerate(raw_lines):
        if not isinstance(line, dict):
            raise _Invalid("wrong_type", f"lines[{i}]: expected an object")
        lines.append(
            {
                "sku": _str(line, "sku", required=True),
                "qty": _int(line, "qty", required=True, lo=1, hi=MAX_QTY),
                "unit_price": cents(_req(line, "unit_price"), f"lines[{i}].unit_price"),
            }
        )
    currency = _str(obj, "currency", required=True, max_len=3)
    _check_currency(currency)  # type: ignore[arg-type]
    return {
        "order_id": order_id,
        "lines": lines,
        "total": cents(_req(obj, "total"), "total"),
        "currency": currency,
        "fulfilment": _fulfilment(obj.get("fulfilment")),
    }


def _check_currency(currency: str) -> None:
    if not (len(currency) == 3 and currency.isalpha() and currency.isupper()):
        raise _Invalid("bad_value", "currency: expected an ISO 4217 code")


def _fulfilment(f: Any) -> dict[str, Any] | None:
    if f is None:
        return None
    if not isinstance(f, dict):
        raise _Invalid("wrong_type", "fulfilment: expected an object")
    mode = f.get("mode")
    if mode == "delivery":
        pos = _position(f)
        if not pos:
            raise _Invalid("missing_field", "fulfilment.lat/lon")
        return {"mode": mode, **pos}
    if mode in ("pickup", "in_store"):
        return {"mode": mode, "store_id": _str(f, "store_id", required=True)}
    raise _Invalid(
        "bad_value", f"fulfilment.mode: {str(mode)[:32]!r} is not delivery/pickup/in_store"
    )


def _stock(obj: dict[str, Any], etype: str) -> dict[str, Any]:
    data: dict[str, Any] = {
        "sku": _str(obj, "sku", required=True),
        "location_id": _str(obj, "location_id", required=True),
        "reorder_point": _int(obj, "reorder_point", required=False, lo=0, hi=MAX_STOCK),
        "max_level": _int(obj, "max_level", required=False, lo=0, hi=MAX_STOCK),
        "lead_time_days": _int(obj, "lead_time_days", required=False, lo=0, hi=365),
    }
    price = obj.get("list_price")
    data["list_price"] = None if price is None else cents(price, "list_price")
    if etype == "stock_set":
        data["on_hand"] = _int(obj, "on_hand", required=True, lo=0, hi=MAX_STOCK)
    else:
        data["delta"] = _int(obj, "delta", required=True, lo=-MAX_STOCK, hi=MAX_STOCK)
    return data


def _location(obj: dict[str, Any]) -> Event:
    location_id = _str(obj, "location_id", required=True)
    kind = _req(obj, "kind")
    if kind not in ("store", "warehouse"):
        raise _Invalid("bad_value", f"kind: {str(kind)[:32]!r} is not store/warehouse")
    active = obj.get("active", True)
    if not isinstance(active, bool):
        raise _Invalid("wrong_type", "active: expected boolean")
    data = {
        "location_id": location_id,
        "kind": kind,
        "lat": _float(obj, "lat", required=True, lo=-90.0, hi=90.0),
        "lon": _float(obj, "lon", required=True, lo=-180.0, hi=180.0),
        "ship_cost_per_km": cents(obj.get("ship_cost_per_km", 0), "ship_cost_per_km"),
        "handling_cost": cents(obj.get("handling_cost", 0), "handling_cost"),
        "active": active,
    }
    # Reference data has no event id or time; the location id is its identity.
    return Event("locations", f"loc:{location_id}", "location", 0, None, None, None, data)
