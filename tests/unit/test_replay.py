"""File replay: JSONL and CSV (plain or gzip) back into (topic, key, value) records."""

from __future__ import annotations

import csv
import gzip
from decimal import Decimal
from itertools import islice
from pathlib import Path
from typing import Any

import orjson
import pytest

from common.errors import OmnipulseError
from connectors.errors import ConnectorError, ReplayError
from connectors.replay import read_events
from omnipulse.simulator import SimRecord, Simulator

START = 1_767_225_600_000
MONEY = ("unit_price", "total", "list_price", "ship_cost_per_km", "handling_cost")


@pytest.fixture(scope="module")
def records() -> list[SimRecord]:
    """Every topic, every event type, all three timestamp spellings."""
    sim = Simulator(seed=2, customers=200, skus=40, stores=6, start_ms=START, time_scale=600)
    ref = sim.reference_data()
    return ref[:6 + 3 + 20] + list(islice(sim.events(), 3000))  # fmt: skip


def as_tuples(recs: list[SimRecord]) -> list[tuple[str, str | None, Any]]:
    return [(r.topic, r.key, r.value) for r in recs]


def write_jsonl(path: Path, recs: list[SimRecord], *, with_topic: bool = True) -> None:
    lines = [orjson.dumps({"topic": r.topic, **r.value} if with_topic else r.value) for r in recs]
    data = b"\n".join(lines) + b"\n"
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)


@pytest.mark.parametrize("name", ["events.jsonl", "events.jsonl.gz", "events.ndjson"])
def test_jsonl_round_trip(tmp_path: Path, records: list[SimRecord], name: str) -> None:
    path = tmp_path / name
    write_jsonl(path, records)
    assert as_tuples(list(read_events(path))) == as_tuples(records)


def test_jsonl_default_topic_blank_lines_and_bom(tmp_path: Path, records) -> None:
    clicks = [r for r in records if r.topic == "clicks"][:50]
    path = tmp_path / "clicks.json"
    write_jsonl(path, clicks, with_topic=False)
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes().replace(b"\n", b"\n\n  \r\n", 3))
    assert as_tuples(list(read_events(path, topic="clicks"))) == as_tuples(clicks)
    with pytest.raises(ReplayError, match=r"clicks\.json:1: cannot tell the topic"):
        list(read_events(path))


def test_a_bad_jsonl_line_is_passed_on_as_bytes(tmp_path: Path) -> None:
    path = tmp_path / "orders.jsonl"
    good = {"topic": "orders", "event_id": "e1", "customer_id": "C1", "type": "order_placed"}
    path.write_bytes(orjson.dumps(good) + b'\n{"event_id": "e2", "type": \n[1, 2]\n\xff\xfe\n')
    out = list(read_events(path, topic="orders"))
    assert out[0] == SimRecord("orders", "C1", {k: v for k, v in good.items() if k != "topic"})
    assert [(r.topic, r.key, r.value) for r in out[1:]] == [
        ("orders", None, b'{"event_id": "e2", "type":'),
        ("orders", None, b"[1, 2]"),  # JSON, but not an event object
        ("orders", None, b"\xff\xfe"),
    ]
    with pytest.raises(ReplayError, match=r"orders\.jsonl:2"):
        list(read_events(path))  # no default topic for the bad line


def test_record_topic_wins_and_must_be_an_input_topic(tmp_path: Path) -> None:
    path = tmp_path / "mixed.jsonl"
    path.write_text('{"topic": "stock", "sku": "S1"}\n{"sku": "S2"}\n{"topic": "triggers.x"}\n')
    it = read_events(path, topic="clicks")
    assert next(it) == SimRecord("stock", "S1", {"sku": "S1"})
    assert next(it) == SimRecord("clicks", None, {"sku": "S2"})
    with pytest.raises(ReplayError, match=r"'triggers\.x' is not one of"):
        next(it)


def _norm(v: dict[str, Any]) -> dict[str, Any]:
    """Money compared as decimals: CSV turns 12.5 and '12.50' into text alike."""
    out = {k: Decimal(str(x)) if k in MONEY else x for k, x in v.items()}
    if "lines" in v:
        out["lines"] = [{**x, "unit_price": Decimal(str(x["unit_price"]))} for x in v["lines"]]
    return out


def write_csv(path: Path, recs: list[SimRecord], rename: dict[str, str]) -> None:
    fields = sorted({k for r in recs for k in r.value})
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wt", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["topic", *(rename.get(k, k) for k in fields)])
        for r in recs:
            row = [r.value.get(k) for k in fields]
            cells = [orjson.dumps(x).decode() if isinstance(x, dict | list) else x for x in row]
            w.writerow([r.topic, *("" if x is None else x for x in cells)])


@pytest.mark.parametrize("name", ["events.csv", "events.csv.gz"])
def test_csv_round_trip_with_a_column_map(tmp_path: Path, records, name: str) -> None:
    rename = {"customer_id": "user", "ts": "time", "lines": "items"}
    path = tmp_path / name
    write_csv(path, records, rename)
    out = list(read_events(path, column_map=rename))
    assert [(r.topic, r.key) for r in out] == [(r.topic, r.key) for r in records]
    assert [_norm(r.value) for r in out] == [_norm(r.value) for r in records]  # type: ignore[arg-type]
    kinds = {type(r.value[k]).__name__ for r in out for k in ("qty", "ts") if k in r.value}
    assert kinds == {"int", "str"}  # qty ints; ts ints or RFC 3339 strings


def test_csv_conversions_and_bad_rows(tmp_path: Path) -> None:
    path = tmp_path / "carts.csv"
    path.write_bytes(
        b"event_id,type,user,qty,unit_price,premium,lat,lines,ts\n"
        b"e1,cart_add,C1,2,19.90,yes,31.2,,1767225600000\n"
        b"e2,cart_add,C2,two,5,maybe,north,[not json,2026-01-01T00:00:00Z\n"
        b"e3,cart_add,C3\n"
        b"e4,cart_add,\xff\xfe,1,1,,,,1\n"
        b",,,,,,,,\n"
    )
    out = list(read_events(path, topic="carts", column_map={"customer_id": "user"}))
    assert out[0] == SimRecord("carts", "C1", {
        "event_id": "e1", "type": "cart_add", "customer_id": "C1", "qty": 2,
        "unit_price": "19.90", "premium": True, "lat": 31.2, "ts": 1767225600000,
    })  # fmt: skip
    # What does not convert goes on as text: the engine rejects it and names the field.
    assert out[1].value == {"event_id": "e2", "type": "cart_add", "customer_id": "C2",
                            "qty": "two", "unit_price": "5", "premium": "maybe",
                            "lat": "north", "lines": "[not json",
                            "ts": "2026-01-01T00:00:00Z"}  # fmt: skip
    assert out[2] == SimRecord("carts", None, b"e3,cart_add,C3")  # too few cells
    assert out[3] == SimRecord("carts", None, b"e4,cart_add,\xff\xfe,1,1,,,,1")  # not UTF-8
    assert len(out) == 4  # the empty row is skipped


@pytest.mark.parametrize(
    ("content", "kwargs", "message"),
    [
        (b"a,b\n1,2\n", {"column_map": {"customer_id": "user"}}, "not in the header"),
        (b"user,customer_id\n1,2\n", {"column_map": {"customer_id": "user"}}, "several columns"),
        (b"a\n1\n", {"fmt": "xml"}, "format 'xml'"),
        (b"a\n1\n", {"topic": "triggers.reorder"}, "not an input topic"),
    ],
)
def test_bad_arguments_raise_replay_errors(tmp_path: Path, content, kwargs, message) -> None:
    path = tmp_path / "x.csv"
    path.write_bytes(content)
    with pytest.raises(ReplayError, match=message):
        list(read_events(path, **kwargs))


def test_format_from_the_name_missing_files_and_error_classes(tmp_path: Path) -> None:
    odd = tmp_path / "dump.txt"
    odd.write_text('{"topic": "stock", "sku": "S1"}\n')
    with pytest.raises(ReplayError, match="cannot tell the format"):
        read_events(odd)
    assert list(read_events(odd, fmt="jsonl")) == [SimRecord("stock", "S1", {"sku": "S1"})]
    with pytest.raises(ReplayError, match="no such file"):
        read_events(tmp_path / "missing.jsonl")
    broken = tmp_path / "broken.jsonl.gz"
    broken.write_bytes(gzip.compress(b'{"topic": "stock"}\n' * 1000)[:60])
    with pytest.raises(ReplayError, match="broken"):
        list(read_events(broken))
    assert issubclass(ReplayError, ConnectorError) and issubclass(ReplayError, OmnipulseError)
