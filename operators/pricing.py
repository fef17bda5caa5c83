"""Channel price control (SPEC §5.9): order lines far from the SKU's guide price."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

from operators.triggers import Trigger, money

_CENT = Decimal("0.01")


def deviation_pct(unit_price: int, list_price: int) -> Decimal:
    """Signed deviation of a price from the list price, in percent (exact, 2 places)."""
    return (Decimal(unit_price - list_price) * 100 / Decimal(list_price)).quantize(
        _CENT, ROUND_HALF_EVEN
    )


def price_alerts(
    order_id: str,
    channel: str | None,
    store_id: str | None,
    lines: Sequence[Mapping[str, Any]],
    list_prices: Mapping[str, int | None],
    max_deviation_pct: Decimal,
    event_ts: int,
) -> list[Trigger]:
    """One `price_alert` per order line deviating by more than the allowed band."""
    out = []
    for i, line in enumerate(lines):
        sku = line["sku"]
        lp = list_prices.get(sku)
        if not lp:  # no guide price known (or zero): nothing to compare with
            continue
        unit = int(line["unit_price"])
        # Compare exactly: the 2-place rounding of the reported figure must not hide
        # a deviation just over the band (5.004 % shows as 5.00 but is more than 5 %).
        if abs(unit - lp) * 100 <= max_deviation_pct * abs(lp):
            continue
        dev = deviation_pct(unit, lp)
        out.append(
            Trigger(
                kind="price_alert",
                subject_key="sku",
                subject=sku,
                cause=f"{order_id}|{i}",
                event_ts=event_ts,
                reason={
                    "rule": "guide_price_band",
                    "max_deviation_pct": float(max_deviation_pct),
                    "order_id": order_id,
                },
                payload={
                    "sku": sku,
                    "channel": channel,
                    "store_id": store_id,
                    "order_id": order_id,
                    "unit_price": money(unit),
                    "list_price": money(lp),
                    "deviation_pct": float(dev),
                },
            )
        )
    return out
