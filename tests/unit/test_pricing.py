"""Channel price control (SPEC §5.9): order lines more than 5 % off the guide price."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

import pytest

from operators.pricing import deviation_pct, price_alerts
from operators.triggers import Trigger

T0 = 1_780_000_000_000
BAND = Decimal("5")
LIST = {"sku-a": 10_000, "sku-b": 2_000, "sku-c": 999}  # cents


def alerts(
    lines: Sequence[Mapping[str, Any]],
    list_prices: Mapping[str, int | None] = LIST,
    order_id: str = "o-1",
) -> list[Trigger]:
    return price_alerts(order_id, "marketplace", "st-9", lines, list_prices, BAND, T0)


def line(sku: str, unit_price: int, qty: int = 1) -> dict[str, Any]:
    return {"sku": sku, "qty": qty, "unit_price": unit_price}


@pytest.mark.parametrize(
    ("unit", "listed", "expected"),
    [
        (10_500, 10_000, Decimal("5.00")),
        (9_000, 10_000, Decimal("-10.00")),
        (1_000, 999, Decimal("0.10")),  # 0.1001 %
        (1_049, 999, Decimal("5.01")),  # 5.005005 %
        (2, 3, Decimal("-33.33")),
        (10_000, 10_000, Decimal("0.00")),
    ],
)
def test_deviation_is_exact_to_two_places(unit: int, listed: int, expected: Decimal) -> None:
    got = deviation_pct(unit, listed)
    assert isinstance(got, Decimal)
    assert got == expected
    assert str(got) == str(expected)


def test_more_than_five_percent_fires_with_the_figures() -> None:
    [t] = alerts([line("sku-a", 10_600)])
    assert t.kind == "price_alert"
    assert t.subject == "sku-a"
    assert t.event_ts == T0
    assert t.holdout is False
    assert t.payload["sku"] == "sku-a"
    assert t.payload["channel"] == "marketplace"
    assert t.payload["store_id"] == "st-9"
    assert t.payload["unit_price"] == "106.00"
    assert t.payload["list_price"] == "100.00"
    assert t.payload["deviation_pct"] == 6.0
    assert t.reason["rule"] == "guide_price_band"
    assert t.reason["order_id"] == "o-1"


def test_exactly_five_percent_does_not_fire() -> None:
    assert alerts([line("sku-a", 10_500), line("sku-a", 9_500)]) == []
    assert alerts([line("sku-b", 2_100), line("sku-b", 1_900)]) == []


def test_just_over_five_percent_fires_even_when_it_rounds_to_five() -> None:
    # 1050.04 against 1000.00 is 5.004 %: more than 5 %, shown as 5.00.
    big = {"sku-x": 100_000}
    [up] = alerts([line("sku-x", 105_004)], big)
    [down] = alerts([line("sku-x", 94_996)], big)
    assert up.payload["deviation_pct"] == 5.0
    assert down.payload["deviation_pct"] == -5.0
    assert alerts([line("sku-x", 105_000), line("sku-x", 95_000)], big) == []


def test_negative_deviation_fires() -> None:
    [t] = alerts([line("sku-a", 9_000)])
    assert t.payload["deviation_pct"] == -10.0
    assert t.payload["unit_price"] == "90.00"


def test_no_or_zero_list_price_gives_nothing() -> None:
    prices: dict[str, int | None] = {"sku-a": None, "sku-b": 0}
    assert alerts([line("sku-a", 1), line("sku-b", 50_000), line("sku-z", 7)], prices) == []


def test_one_alert_per_deviating_line_with_distinct_ids() -> None:
    lines = [
        line("sku-a", 12_000),  # +20 %
        line("sku-b", 2_000),  # on the guide price
        line("sku-a", 8_000),  # -20 %, same SKU again
        line("sku-c", 1_100),  # +10.11 %
    ]
    out = alerts(lines)
    assert [(t.subject, t.payload["deviation_pct"]) for t in out] == [
        ("sku-a", 20.0),
        ("sku-a", -20.0),
        ("sku-c", 10.11),
    ]
    assert len({t.trigger_id for t in out}) == 3


def test_ids_are_stable_per_order_and_differ_between_orders() -> None:
    first = [t.trigger_id for t in alerts([line("sku-a", 12_000)])]
    again = [t.trigger_id for t in alerts([line("sku-a", 12_000)])]
    other = [t.trigger_id for t in alerts([line("sku-a", 12_000)], order_id="o-2")]
    assert first == again
    assert set(first).isdisjoint(other)
