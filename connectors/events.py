"""The input event contract (SPEC §3): bytes off a topic in, a checked `Event` out.

Every check a channel system can fail lives here, so a bad event is turned into
a `Rejected` with a reason that names the field — never an exception that
stops the engine. Money becomes integer cents at this boundary, so no float
ever reaches a total that is kept for years.

Two paths judge a record. The typed path decodes it straight into msgspec
structs whose types and bounds are the contract's, then makes the few checks a
type cannot express (event time, channel spelling, exact money); it only ever
accepts. Whatever it cannot vouch for goes to the precise path, field by field,
which names the first failing field, so a dead letter's reason does not depend
on which path saw the record first. The precise path also accepts the rarer
spellings the typed one leaves to it: an integral float quantity, the
reference data of `locations`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any, Literal, get_args

import msgspec
import orjson
from msgspec import Meta

from operators.clock import datetime_to_ms

MAX_ID_LEN = 128
MAX_TEXT_LEN = 512
MAX_LINES = 500
MAX_QTY = 1_000_000
MAX_CENTS = 10**13  # 100 billion in currency units: beyond any real order
MAX_STOCK = 10**9

# The event types per topic; the typed path's structs check them as these Literals.
_ClickType = Literal["page_view", "product_view", "search"]
_CartType = Literal["cart_add", "cart_remove", "checkout_start"]
_OrderType = Literal["order_placed", "order_cancelled", "order_returned"]
_StockType = Literal["stock_set", "stock_adjust"]

TYPES: dict[str, frozenset[str]] = {
    "clicks": frozenset(get_args(_ClickType)),
    "carts": frozenset(get_args(_CartType)),
    "orders": frozenset(get_args(_OrderType)),
    "stock": frozenset(get_args(_StockType)),
}


class Event(msgspec.Struct):
    """A validated input event. `data` holds the topic-specific fields, normalised.

    A msgspec struct rather than a dataclass: one is made per input record, and
    its constructor runs in C (mutable like a dataclass; the pseudonymiser
    rewrites the ids in place).
    """

    topic: str
    event_id: str
    type: str
    ts: int  # event time, epoch milliseconds
    channel: str | None
    customer_id: str | None
    anonymous_id: str | None
    data: dict[str, Any] = {}  # msgspec gives each event its own empty dict
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
    shape = _SHAPES.get(topic)
    if shape is not None and value is not None and len(value) <= limits.max_value_bytes:
        try:
            return _typed(topic, shape, value, limits, partition, offset)
        except _NOT_VOUCHED:
            pass  # the precise path decides, and names the first failing field
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


# --- the typed path: msgspec structs, then what a type cannot say -------------------
#
# Each struct admits only values the precise path accepts unchanged, so a record
# that decodes is as good as one that passed the field-by-field checks. Every
# field the precise path reads for a topic is declared on its struct (one left
# out would be skipped unchecked). Fields whose presence depends on the event
# type are optional here and checked after decoding. gc=False: a struct lives
# only until its event is built and never takes part in a cycle.

_Id = Annotated[str, Meta(min_length=1, max_length=MAX_ID_LEN)]
_Short = Annotated[str, Meta(min_length=1, max_length=32)]
_Text = Annotated[str, Meta(min_length=1, max_length=MAX_TEXT_LEN)]
_Qty = Annotated[int, Meta(ge=1, le=MAX_QTY)]
_Level = Annotated[int, Meta(ge=0, le=MAX_STOCK)]
_Delta = Annotated[int, Meta(ge=-MAX_STOCK, le=MAX_STOCK)]
_Days = Annotated[int, Meta(ge=0, le=365)]
_Lat = Annotated[float, Meta(ge=-90.0, le=90.0)]
_Lon = Annotated[float, Meta(ge=-180.0, le=180.0)]
# Every integer is bounded. msgspec reads an integer of any length, where orjson
# rejects the record once a number overflows a double; under a repeated key the
# long value would be replaced by the later one, unseen by any other check.
_Epoch = Annotated[int, Meta(ge=0, le=2**63 - 1)]
_Units = Annotated[int, Meta(ge=0, le=MAX_CENTS // 100)]
_Money = _Units | float | str  # made cents by _money(): exactness is not a type's to say


class _Head(msgspec.Struct, kw_only=True, gc=False):
    """What every topic has alike; `type`, `channel` and `customer_id` differ by topic."""

    event_id: _Id
    ts: _Epoch | str
    anonymous_id: _Id | None = None


class _Click(_Head, kw_only=True, gc=False):
    type: _ClickType
    channel: _Short
    customer_id: _Id | None = None
    session_id: _Id
    sku: _Id | None = None
    category: _Id | None = None
    premium: bool = False
    query: _Text | None = None
    store_id: _Id | None = None
    lat: _Lat | None = None
    lon: _Lon | None = None


class _Cart(_Head, kw_only=True, gc=False):
    type: _CartType
    channel: _Short
    customer_id: _Id
    sku: _Id | None = None
    qty: _Qty | None = None
    session_id: _Id | None = None
    unit_price: _Money | None = None
    lat: _Lat | None = None
    lon: _Lon | None = None


class _Line(msgspec.Struct, kw_only=True, gc=False):
    sku: _Id
    qty: _Qty
    unit_price: _Money


class _Fulfilment(msgspec.Struct, kw_only=True, gc=False):
    mode: str
    lat: _Lat | None = None
    lon: _Lon | None = None
    store_id: _Id | None = None


class _Order(_Head, kw_only=True, gc=False):
    type: _OrderType
    channel: _Short
    customer_id: _Id
    order_id: _Id
    lines: Annotated[list[_Line], Meta(max_length=MAX_LINES)]
    total: _Money
    currency: str
    fulfilment: _Fulfilment | None = None


class _Stock(_Head, kw_only=True, gc=False):
    type: _StockType
    channel: _Short | None = None
    customer_id: _Id | None = None
    sku: _Id
    location_id: _Id
    reorder_point: _Level | None = None
    max_level: _Level | None = None
    lead_time_days: _Days | None = None
    list_price: _Money | None = None
    on_hand: _Level | None = None
    delta: _Delta | None = None


# Strict twins, decoded straight from the bytes. msgspec skips an unknown field
# without reading it as closely as orjson does (invalid UTF-8 or a number that
# overflows a double pass unnoticed), so only a record with no unknown field at
# any depth is decoded this way; one with extra fields is decoded by orjson, as
# on the precise path, and then checked against the lenient struct.
class _StrictClick(_Click, kw_only=True, gc=False, forbid_unknown_fields=True):
    pass


class _StrictCart(_Cart, kw_only=True, gc=False, forbid_unknown_fields=True):
    pass


class _StrictLine(_Line, kw_only=True, gc=False, forbid_unknown_fields=True):
    pass


class _StrictFulfilment(_Fulfilment, kw_only=True, gc=False, forbid_unknown_fields=True):
    pass


class _StrictOrder(_Order, kw_only=True, gc=False, forbid_unknown_fields=True):
    lines: Annotated[list[_StrictLine], Meta(max_length=MAX_LINES)]
    fulfilment: _StrictFulfilment | None = None


class _StrictStock(_Stock, kw_only=True, gc=False, forbid_unknown_fields=True):
    pass


class _Unsure(Exception):
    """Internal: the typed path cannot vouch for a record; the precise path judges it."""


# Anything the typed path raises on a record it does not accept.
_NOT_VOUCHED = (
    _Unsure,
    _Invalid,
    msgspec.MsgspecError,
    orjson.JSONDecodeError,
    RecursionError,  # how msgspec meets deep nesting; orjson's depth limit is the rule
)

# The channels SPEC §3 names: lowercase identifiers, no need to check their spelling.
_NAMED_CHANNELS = frozenset(
    {"web", "app", "mini_program", "marketplace", "store", "phone", "social"}
)


@dataclass(frozen=True, slots=True)
class _Shape:
    """How the typed path reads one topic."""

    strict: msgspec.json.Decoder[Any]
    lenient: type[_Head]
    data: Callable[[Any], dict[str, Any]]  # struct -> Event.data


def _typed(
    topic: str, shape: _Shape, value: bytes, limits: Limits, partition: int, offset: int
) -> Event:
    """The typed path; raises one of `_NOT_VOUCHED` for a record it does not accept."""
    try:
        s = shape.strict.decode(value)
    except msgspec.ValidationError:
        # Mostly a field the contract does not name: read it as the precise path does.
        s = msgspec.convert(orjson.loads(value), shape.lenient)
    ts = s.ts
    if type(ts) is not int:
        ts = _event_time(ts, limits)  # RFC 3339: parsed and bounded as on the precise path
    elif ts < limits.min_ts_ms or ts > limits.now_ms + limits.max_future_ms:
        raise _Unsure
    channel = s.channel
    if channel is not None and channel not in _NAMED_CHANNELS:
        _check_channel(channel)
    data = shape.data(s)
    return Event(
        topic,
        s.event_id,
        s.type,
        ts,
        channel,
        s.customer_id,
        s.anonymous_id,
        data,
        partition,
        offset,
    )


def _money(v: int | float | str) -> int:
    """Cents of an amount, exactly as `cents` gives them; the plain spellings
    (19.99, "19.99", "19.9", 5) without a Decimal, any other by `cents` itself."""
    if type(v) is str:
        units, dot, frac = v.partition(".")
        if len(frac) == 2:
            digits = units + frac
        elif len(frac) == 1:
            digits = units + frac + "0"
        elif units and not dot:
            digits = units + "00"
        else:
            digits = ""
        if 0 < len(digits) <= 13 and digits.isascii() and digits.isdigit():
            return int(digits)  # < 10**13: within MAX_CENTS
    elif type(v) is int:
        if 0 <= v <= MAX_CENTS // 100:
            return v * 100
    elif 0.0 <= v <= MAX_CENTS / 100:
        c = round(v * 100)
        # c / 100 == v: v is the double nearest a whole number of cents, so its
        # shortest repr (what `cents` reads) is that amount with <= 2 decimals.
        if c / 100 == v:
            return c
    # the field name is never shown: a record `cents` rejects goes to the precise path
    return cents(v, "amount")


def _put_position(s: _Click | _Cart, data: dict[str, Any]) -> None:
    if s.lat is not None and s.lon is not None:
        data["lat"] = s.lat
        data["lon"] = s.lon
    elif s.lat is not None or s.lon is not None:
        raise _Unsure  # one without the other


def _click_data(s: _Click) -> dict[str, Any]:
    if s.customer_id is None and s.anonymous_id is None:
        raise _Unsure
    data = {
        "session_id": s.session_id,
        "sku": s.sku,
        "category": s.category,
        "premium": s.premium,
        "query": s.query,
        "store_id": s.store_id,
    }
    _put_position(s, data)
    return data


def _cart_data(s: _Cart) -> dict[str, Any]:
    if s.type != "checkout_start" and (s.sku is None or s.qty is None):
        raise _Unsure
    if s.type == "cart_add" and s.unit_price is None:
        raise _Unsure
    data = {
        "sku": s.sku,
        "qty": s.qty,
        "session_id": s.session_id,
        "unit_price": None if s.unit_price is None else _money(s.unit_price),
    }
    _put_position(s, data)
    return data


def _order_data(s: _Order) -> dict[str, Any]:
    _check_currency(s.currency)
    f = s.fulfilment
    fulfilment: dict[str, Any] | None = None
    if f is not None:
        if f.mode == "delivery" and f.lat is not None and f.lon is not None:
            fulfilment = {"mode": f.mode, "lat": f.lat, "lon": f.lon}
        elif f.mode in ("pickup", "in_store") and f.store_id is not None:
            fulfilment = {"mode": f.mode, "store_id": f.store_id}
        else:
            raise _Unsure
    return {
        "order_id": s.order_id,
        "lines": [
            {"sku": ln.sku, "qty": ln.qty, "unit_price": _money(ln.unit_price)} for ln in s.lines
        ],
        "total": _money(s.total),
        "currency": s.currency,
        "fulfilment": fulfilment,
    }


def _stock_data(s: _Stock) -> dict[str, Any]:
    data: dict[str, Any] = {
        "sku": s.sku,
        "location_id": s.location_id,
        "reorder_point": s.reorder_point,
        "max_level": s.max_level,
        "lead_time_days": s.lead_time_days,
        "list_price": None if s.list_price is None else _money(s.list_price),
    }
    if s.type == "stock_set":
        if s.on_hand is None:
            raise _Unsure
        data["on_hand"] = s.on_hand
    else:
        if s.delta is None:
            raise _Unsure
        data["delta"] = s.delta
    return data


# `locations` is not here: reference data is rare, the precise path reads it.
_SHAPES: dict[str, _Shape] = {
    "clicks": _Shape(msgspec.json.Decoder(_StrictClick), _Click, _click_data),
    "carts": _Shape(msgspec.json.Decoder(_StrictCart), _Cart, _cart_data),
    "orders": _Shape(msgspec.json.Decoder(_StrictOrder), _Order, _order_data),
    "stock": _Shape(msgspec.json.Decoder(_StrictStock), _Stock, _stock_data),
}
