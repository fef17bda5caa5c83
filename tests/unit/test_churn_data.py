"""The CDNOW -> orders conversion of the churn benchmark (bench/churn_data.py)."""

from __future__ import annotations

import sys
import zipfile
from decimal import Decimal
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root: bench/

from bench.churn_data import (
    CDNOW_MEMBER,
    cdnow_text,
    order_lines,
    parse_cdnow,
    to_events,
)
from connectors.events import Event, Limits, parse_record

SAMPLE = """ customer_id  date number_of_cds  dollar_value
 00002 19970112  1   12.00
 00001 19970101  1   11.77
 00002 19970112  3   77.00
 00003 19970102  2   20.76
 00003 19970330  2   19.54
 00004 19970101  0   0.00
 00005 19970101  3   10.00
"""


def events() -> list[dict]:
    return list(to_events(parse_cdnow(SAMPLE)))


def test_lines_add_up_to_the_total_exactly() -> None:
    for cds, dollars in [(1, "12.00"), (3, "77.00"), (2, "20.76"), (3, "10.00"), (7, "0.01")]:
        lines = order_lines(cds, Decimal(dollars))
        assert sum(Decimal(ln["unit_price"]) * ln["qty"] for ln in lines) == Decimal(dollars)
        assert sum(ln["qty"] for ln in lines) == cds
        assert all(ln["sku"] == "CD" and ln["qty"] > 0 for ln in lines)
    assert order_lines(2, Decimal("20.76")) == [{"sku": "CD", "qty": 2, "unit_price": "10.38"}]
    assert order_lines(3, Decimal("10.00")) == [
        {"sku": "CD", "qty": 2, "unit_price": "3.33"},
        {"sku": "CD", "qty": 1, "unit_price": "3.34"},
    ]


def test_orders_in_time_order_with_unique_ids_then_the_clock() -> None:
    ev = events()
    orders, clock = ev[:-1], ev[-1]
    assert len(orders) == 7
    assert [e["ts"] for e in orders] == sorted(e["ts"] for e in orders)
    assert orders[0]["ts"] == "1997-01-01T12:00:00Z"
    # same day: file order
    assert [e["customer_id"] for e in orders[:3]] == ["cdnow-00001", "cdnow-00004", "cdnow-00005"]
    assert len({e["event_id"] for e in ev}) == len(ev)
    assert len({e["order_id"] for e in orders}) == len(orders)
    two = [e for e in orders if e["customer_id"] == "cdnow-00002"]
    assert [e["order_id"] for e in two] == ["cdnow-00002-19970112-1", "cdnow-00002-19970112-2"]
    assert [e["total"] for e in two] == ["12.00", "77.00"]
    for e in orders:
        assert e["topic"] == "orders" and e["type"] == "order_placed"
        assert e["currency"] == "USD" and e["channel"] == "web" and "fulfilment" not in e
        total = sum(Decimal(ln["unit_price"]) * ln["qty"] for ln in e["lines"])
        assert total == Decimal(e["total"])
    assert clock["topic"] == "clicks" and clock["ts"] == "1997-07-08T12:00:00Z"  # +100 days
    assert events() == ev  # deterministic


def test_every_line_passes_the_engine_parser() -> None:
    limits = Limits(now_ms=1_800_000_000_000, min_ts_ms=0)
    for e in events():
        topic = e.pop("topic")
        got = parse_record(topic, orjson.dumps(e), limits)
        assert isinstance(got, Event), got
        if topic == "orders":
            assert got.data["total"] == int(Decimal(e["total"]) * 100)


def test_reads_the_file_out_of_a_wheel(tmp_path: Path) -> None:
    whl = tmp_path / "lifetimes-0.11.3-py3-none-any.whl"
    with zipfile.ZipFile(whl, "w") as z:
        z.writestr(CDNOW_MEMBER, SAMPLE)
    assert len(parse_cdnow(cdnow_text(whl))) == 7


def test_offline_evaluation_labels_on_return_and_at_the_horizon() -> None:
    from bench.churn_eval import Evaluation

    day = 86_400_000
    t0 = 900_000_000_000
    ev = Evaluation()
    ev.order("a", t0, 1000)
    ev.order("b", t0, 1000)
    ev.order("a", t0 + 90 * day, 500)  # exactly at the horizon: a return
    assert ev.model.labels == {0: 1, 1: 0}
    ev.advance(t0 + 90 * day + 1)  # b's horizon passed without an order
    assert ev.model.labels == {0: 1, 1: 1}
    ev.advance(t0 + 121 * day)  # b's review at day 120 scores again (a's score still waits)
    assert ev.book.pending("b") is not None and ev.kind["b"] == "review"
    assert ev.model.n_labels == 2
