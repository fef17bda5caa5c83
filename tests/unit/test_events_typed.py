"""The typed path of `parse_record` against the precise, field-by-field one.

The typed path may only accept what the precise path accepts, with the same
`Event`; everything else it hands over, so every reject keeps its reason. These
tests compare the two on simulated traffic, on records near the contract's
edges, and on random mutations.
"""

from __future__ import annotations

import json
import random
from decimal import Decimal
from itertools import islice
from typing import Any

import orjson
import pytest

from connectors import events
from connectors.events import Event, Limits, Rejected, cents, parse_record
from omnipulse.simulator import Simulator, to_json_bytes

NOW = 1_795_342_500_000  # 2026-11-22T10:15:00Z
TS = NOW - 60_000
LIMITS = Limits(now_ms=NOW)

BASE: dict[str, dict[str, Any]] = {
    "clicks": {
        "event_id": "c-1",
        "type": "product_view",
        "ts": TS,
        "channel": "app",
        "customer_id": "cust-1",
        "session_id": "sess-1",
        "sku": "SKU-1",
        "premium": True,
        "lat": 31.2,
        "lon": 121,
    },
    "carts": {
        "event_id": "k-1",
        "type": "cart_add",
        "ts": "2026-11-22T10:14:00.125Z",
        "channel": "web",
        "customer_id": "cust-1",
        "sku": "SKU-1",
        "qty": 2,
        "unit_price": "19.99",
    },
    "orders": {
        "event_id": "o-1",
        "type": "order_placed",
        "ts": "2026-11-22T18:14:00+08:00",
        "channel": "store",
        "customer_id": "cust-1",
        "order_id": "ORD-1",
        "lines": [
            {"sku": "SKU-1", "qty": 2, "unit_price": "19.99"},
            {"sku": "SKU-2", "qty": 1, "unit_price": 5.1},
        ],
        "total": "45.08",
        "currency": "EUR",
        "fulfilment": {"mode": "delivery", "lat": 31.23, "lon": 121.47},
    },
    "stock": {
        "event_id": "s-1",
        "type": "stock_adjust",
        "ts": TS,
        "sku": "SKU-1",
        "location_id": "WH-1",
        "delta": -3,
        "list_price": 19,
    },
}


def precise(topic: str, raw: bytes | None, limits: Limits = LIMITS) -> Event | Rejected:
    return events._precise(topic, raw, limits, 1, 2, b"k")


def same(topic: str, raw: bytes | None, limits: Limits = LIMITS) -> Event | Rejected:
    """Both paths' answer, asserted equal (an accepted event field by field)."""
    got = parse_record(topic, raw, limits, partition=1, offset=2, key=b"k")
    want = precise(topic, raw, limits)
    # repr too: 3 == 3.0 and 1 == True, but an event must carry the same types
    assert (got, repr(got)) == (want, repr(want)), raw
    return got


def typed_accepts(topic: str, raw: bytes, limits: Limits = LIMITS) -> bool:
    try:
        events._typed(topic, events._SHAPES[topic], raw, limits, 0, 0)
    except events._NOT_VOUCHED:
        return False
    return True


def test_simulated_traffic_takes_the_typed_path_and_agrees() -> None:
    sim = Simulator(seed=5, customers=2_000, start_ms=NOW - 40 * 86_400_000, bad_share=0.1)
    typed = 0
    for r in islice(sim.events(), 20_000):
        raw = to_json_bytes(r.value)
        result = same(r.topic, raw)
        if isinstance(result, Event) and r.topic in events._SHAPES:
            # a valid event is never read twice by the field-by-field checks
            assert typed_accepts(r.topic, raw), raw
            typed += 1
    assert typed > 15_000


@pytest.mark.parametrize("topic", list(BASE))
def test_the_base_records_take_the_typed_path(topic: str) -> None:
    raw = orjson.dumps(BASE[topic])
    assert typed_accepts(topic, raw)
    assert isinstance(same(topic, raw), Event)


def dumps(obj: Any) -> bytes:
    """JSON as a producer may write it; unlike orjson, any integer goes."""
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()


def with_field(topic: str, name: str, value: Any) -> bytes:
    return dumps({**BASE[topic], name: value})


EDGES: list[tuple[str, bytes]] = [
    # what msgspec skips unread in an unknown field, orjson reads (and rejects)
    ("clicks", with_field("clicks", "extra", "x")[:-1] + b',"big":1e400}'),
    ("clicks", with_field("clicks", "extra", "x")[:-1] + b',"big":-' + b"9" * 400 + b"}"),
    ("carts", orjson.dumps(BASE["carts"])[:-1] + b',"note":"\xff"}'),
    ("carts", orjson.dumps(BASE["carts"])[:-1] + b',"note":"\xc0\x80"}'),
    ("carts", orjson.dumps(BASE["carts"])[:-1] + b',"note":"\xed\xa0\x80"}'),
    ("carts", orjson.dumps(BASE["carts"])[:-1] + b',"deep":' + b"[" * 1100 + b"]" * 1100 + b"}"),
    ("carts", orjson.dumps(BASE["carts"])[:-1] + b',"deep":' + b"[" * 900 + b"]" * 900 + b"}"),
    ("orders", orjson.dumps(BASE["orders"]).replace(b'"qty":1', b'"qty":1,"x":1E999', 1)),
    ("orders", orjson.dumps(BASE["orders"]).replace(b'"mode"', b'"x":"\xfe","mode"', 1)),
    ("orders", orjson.dumps(BASE["orders"]).replace(b'"qty":1', b'"qty":1,"name":"tea"', 1)),
    # keys: repeated (the last one counts), escaped
    ("carts", orjson.dumps(BASE["carts"])[:-1] + b',"qty":-1}'),
    ("carts", b'{"qty":"x",' + orjson.dumps(BASE["carts"])[1:]),
    ("carts", orjson.dumps(BASE["carts"]).replace(b'"sku"', b'"s\\u006bu"')),
    ("clicks", orjson.dumps(BASE["clicks"]).replace(b'"sess-1"', b'"s\\u00e9ss"')),
    # spellings only the precise path accepts, and near misses
    ("carts", with_field("carts", "qty", 3.0)),
    ("carts", with_field("carts", "qty", 2**64)),
    ("carts", with_field("carts", "unit_price", "19.990")),
    ("carts", with_field("carts", "unit_price", ".5")),
    ("carts", with_field("carts", "unit_price", "5.")),
    ("carts", with_field("carts", "unit_price", "")),
    ("carts", with_field("carts", "unit_price", " 5")),
    ("carts", with_field("carts", "unit_price", "1e2")),
    ("carts", with_field("carts", "unit_price", "\u0661\u0662")),
    ("carts", with_field("carts", "unit_price", 10**11)),
    ("carts", with_field("carts", "unit_price", 10**11 + 1)),
    ("carts", with_field("carts", "unit_price", "99999999999.99")),
    ("carts", with_field("carts", "unit_price", "100000000000.00")),
    ("carts", with_field("carts", "unit_price", 0.1 + 0.2)),
    ("carts", with_field("carts", "unit_price", -0.0)),
    ("carts", with_field("carts", "unit_price", 1e-7)),
    ("carts", with_field("carts", "unit_price", 2**70)),
    ("carts", b'{"unit_price":1' + b"0" * 400 + b"," + orjson.dumps(BASE["carts"])[1:]),
    ("clicks", with_field("clicks", "ts", 2**64 + 5)),
    ("clicks", with_field("clicks", "ts", -0)),
    ("clicks", with_field("clicks", "ts", "2026-11-22t10:14:00z")),
    ("clicks", with_field("clicks", "ts", "2026-11-22 10:14:00Z")),
    ("clicks", with_field("clicks", "ts", "2026-11-22T10:14:00.1234567Z")),
    ("clicks", with_field("clicks", "ts", "2026-11-22T10:14Z")),
    ("clicks", with_field("clicks", "ts", "20261122T101400Z")),
    ("clicks", with_field("clicks", "channel", "Web")),
    ("clicks", with_field("clicks", "channel", "kiosk_2")),
    ("clicks", with_field("clicks", "channel", "__")),
    ("clicks", with_field("clicks", "channel", "web\n")),
    ("clicks", with_field("clicks", "lat", None)),
    ("clicks", with_field("clicks", "premium", None)),
    ("clicks", with_field("clicks", "customer_id", None)),
    ("clicks", with_field("clicks", "query", "q" * 512)),
    ("clicks", with_field("clicks", "query", "q" * 513)),
    ("clicks", with_field("clicks", "sku", "\U0001f600" * 128)),
    ("clicks", with_field("clicks", "sku", "\U0001f600" * 129)),
    ("stock", with_field("stock", "channel", None)),
    ("stock", with_field("stock", "on_hand", "x")),
    ("stock", with_field("stock", "type", "stock_set")),
    ("orders", with_field("orders", "currency", "ÄÖÜ")),
    ("orders", with_field("orders", "currency", "eur")),
    ("orders", with_field("orders", "fulfilment", {"mode": "pickup", "store_id": "S", "lat": "x"})),
    ("orders", with_field("orders", "fulfilment", {"mode": "delivery", "lat": 1, "lon": 2})),
    ("orders", with_field("orders", "fulfilment", {"mode": "in_store"})),
    ("orders", with_field("orders", "fulfilment", None)),
    ("orders", with_field("orders", "lines", [])),
    ("orders", with_field("orders", "lines", [{"sku": "A", "qty": 1, "unit_price": "1"}] * 501)),
    ("orders", with_field("orders", "type", "order_returned")),
    ("orders", b" \n" + orjson.dumps(BASE["orders"]) + b"\t"),
    ("orders", b"\xef\xbb\xbf" + orjson.dumps(BASE["orders"])),
    ("orders", orjson.dumps([BASE["orders"]])),
]


@pytest.mark.parametrize(("topic", "raw"), EDGES)
def test_edges_agree(topic: str, raw: bytes) -> None:
    same(topic, raw)


def test_extra_fields_are_still_the_typed_paths() -> None:
    raw = with_field("clicks", "page", "home")
    assert typed_accepts("clicks", raw)
    assert isinstance(same("clicks", raw), Event)


def test_limits_agree() -> None:
    raw = orjson.dumps(BASE["carts"])
    for limits in (
        Limits(NOW, max_value_bytes=len(raw)),
        Limits(NOW, max_value_bytes=len(raw) - 1),
    ):
        same("carts", raw, limits)
    for ts in (NOW + 86_400_000, NOW + 86_400_001, LIMITS.min_ts_ms, LIMITS.min_ts_ms - 1):
        same("clicks", with_field("clicks", "ts", ts))


VALUES: list[Any] = [
    None,
    True,
    False,
    0,
    -1,
    1,
    3.0,
    2.5,
    -0.0,
    2**63,
    2**64,
    -(2**63) - 1,
    1e300,
    "",
    "x",
    "19.99",
    "19.999",
    "-1",
    "1e5",
    " 7",
    "NaN",
    "x" * 129,
    "web",
    "WEB",
    "EUR",
    "2026-11-22T10:15:00Z",
    "2026-11-22T10:15:00",
    "2026-02-30T00:00:00Z",
    [],
    [{"sku": "A", "qty": 1, "unit_price": "1.5"}],
    [{"sku": "A", "qty": 0, "unit_price": "1.5"}],
    {},
    {"mode": "pickup", "store_id": "S"},
    {"mode": "delivery", "lat": 1.5},
]
NAMES = [
    "event_id",
    "type",
    "ts",
    "channel",
    "customer_id",
    "anonymous_id",
    "session_id",
    "sku",
    "qty",
    "unit_price",
    "premium",
    "lat",
    "lon",
    "lines",
    "total",
    "currency",
    "fulfilment",
    "on_hand",
    "delta",
    "list_price",
    "reorder_point",
    "extra",
]


def test_random_mutations_agree() -> None:
    rng = random.Random(2026)
    accepted = 0
    for _ in range(4_000):
        topic = rng.choice(list(BASE))
        obj = dict(BASE[rng.choice(list(BASE))] if rng.random() < 0.2 else BASE[topic])
        for _ in range(rng.randrange(0, 3)):
            name = rng.choice(NAMES)
            if rng.random() < 0.3:
                obj.pop(name, None)
            else:
                obj[name] = rng.choice(VALUES)
        accepted += isinstance(same(topic, dumps(obj)), Event)
    assert accepted > 400  # both outcomes are exercised


def random_number(rng: random.Random, whole: int) -> bytes:
    """A JSON number near `whole`, spelled as any producer may."""
    frac = "".join(rng.choice("0123456789") for _ in range(rng.randrange(1, 22)))
    text = f"{whole}.{frac}"
    if rng.random() < 0.3:  # the same value in exponent form
        shift = rng.randrange(1, len(frac) + 1)
        mantissa = (str(abs(whole)) + frac[:shift]).lstrip("0") or "0"
        text = f"{'-' if whole < 0 else ''}{mantissa}.{frac[shift:] or '0'}e-{shift}"
        text = text if rng.random() < 0.5 else text.replace("e-", "E-")
    return text.encode()


def test_number_spellings_agree() -> None:
    rng = random.Random(3)
    carts = orjson.dumps({**BASE["carts"], "unit_price": 0, "lat": 0, "lon": 0})
    accepted = 0
    for _ in range(3_000):
        price = random_number(rng, rng.randrange(0, 10**6))
        if rng.random() < 0.5:  # a float that is a whole number of cents
            price = repr(rng.randrange(0, 10**9) / 100).encode()
        raw = carts.replace(b'"unit_price":0', b'"unit_price":' + price)
        raw = raw.replace(b'"lat":0', b'"lat":' + random_number(rng, rng.randrange(-89, 90)))
        accepted += isinstance(same("carts", raw), Event)
    assert accepted > 1_000


def test_money_agrees_with_cents() -> None:
    rng = random.Random(11)
    amounts: list[Any] = [0, 5, 0.29, 1.15, 19.99, 19.9, 0.1 + 0.2, 1e-7, 99999999999.99, 1e11]
    for _ in range(20_000):
        c = rng.randrange(0, 10 ** rng.randrange(1, 14))
        amounts += [c / 100, str(Decimal(c) / 100), f"{c / 100:.2f}", c, rng.uniform(0, 1e6)]
    for v in amounts:
        try:
            want: int | None = cents(v, "x")
        except events._Invalid:
            want = None
        try:
            got: int | None = events._money(v)
        except events._Invalid:
            got = None
        assert got == want, v
