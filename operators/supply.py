"""Supply-chain triggers (SPEC §5.6, §5.7): allocation plans, reorders, BOPIS suggestions.

The atomic part of allocation (check the stock and take it) runs next to the
stock in Redis; here is what is pure: the shape and figures of the resulting
triggers, from the plan, the ranked candidates and the reorder figures.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from operators.geo import Candidate, plan_cost
from operators.triggers import Trigger, money


def allocation_trigger(
    order_id: str,
    customer_id: str | None,
    event_ts: int,
    mode: str,
    lines: Sequence[Mapping[str, Any]],
    ranked: Sequence[Candidate],
    *,
    split: bool,
) -> Trigger:
    """The plan the stock script settled on, with its cost and the figures behind it.

    `split` says the whole-order pass found no single location; the payload's
    `split` says whether the parcels really leave from more than one place.
    """
    used = [ln.get("location_id") for ln in lines]
    by_id = {c.location_id: c for c in ranked}
    chosen = [by_id[i] for i in dict.fromkeys(u for u in used if u is not None) if i in by_id]
    cost = plan_cost((c.location_id for c in chosen), ranked) if mode == "delivery" else 0
    backorders = sum(1 for ln in lines if ln.get("status") == "backorder")
    if mode == "pickup":
        rule = "pickup_at_store"
    elif not chosen:
        rule = "no_stock"
    elif split:
        rule = "split_by_line"
    else:
        rule = "cheapest_location_with_every_line"
    return Trigger(
        kind="allocation",
        subject_key="order_id",
        subject=order_id,
        cause="plan",
        event_ts=event_ts,
        reason={
            "rule": rule,
            "backorder_lines": backorders,
            "candidates_considered": len(ranked),
            # a pickup ships nothing: its store is named, with no shipping figures
            "chosen": [
                {"location_id": c.location_id}
                if mode == "pickup"
                else {
                    "location_id": c.location_id,
                    "distance_km": round(c.distance_km, 3),
                    "cost": money(c.cost),
                }
                for c in chosen
            ],
        },
        payload={
            "order_id": order_id,
            "customer_id": customer_id,
            "mode": mode,
            "lines": [
                {
                    "sku": ln["sku"],
                    "qty": ln["qty"],
                    "location_id": ln.get("location_id"),
                    "status": ln["status"],
                }
                for ln in lines
            ],
            "cost": money(cost),
            "split": len(chosen) > 1,
        },
    )


def reorder_trigger(
    *,
    sku: str,
    location_id: str,
    on_hand: int,
    reorder_point: float,
    max_level: float,
    quantity: int,
    derived: bool,
    daily_rate: float | None,
    sigma: float | None,
    lead_time_days: int,
    crossing: int,
    z: float,
    service_level: float,
    event_ts: int,
) -> Trigger:
    """(s, S) reorder: `crossing` numbers the crossings of this (sku, location)."""
    reason: dict[str, Any] = {
        "rule": "derived_reorder_point" if derived else "configured_reorder_point",
        "on_hand": on_hand,
        "reorder_point": round(reorder_point, 2),
        "order_up_to": round(max_level, 2),
    }
    if derived:
        reason.update(
            daily_demand=round(daily_rate or 0.0, 3),
            daily_sigma=round(sigma or 0.0, 3),
            lead_time_days=lead_time_days,
            service_level=service_level,
            z=round(z, 4),
            formula="daily_demand * lead_time + z * daily_sigma * sqrt(lead_time)",
        )
    return Trigger(
        kind="reorder",
        subject_key="sku",
        subject=sku,
        cause=f"{location_id}|{crossing}",
        event_ts=event_ts,
        reason=reason,
        payload={
            "sku": sku,
            "location_id": location_id,
            "on_hand": on_hand,
            "reorder_point": round(reorder_point, 2),
            "max_level": round(max_level, 2),
            "quantity": quantity,
        },
    )


def bopis_trigger(
    customer_id: str,
    sku: str,
    store: Candidate,
    units: int,
    position_from: str,
    warehouses: int,
    day: int,
    event_ts: int,
    holdout: bool,
) -> Trigger:
    """Online out of stock, a store nearby has it: suggest picking it up (once a day per SKU)."""
    return Trigger(
        kind="bopis_suggestion",
        subject_key="customer_id",
        subject=customer_id,
        cause=f"{sku}|{day}",
        event_ts=event_ts,
        reason={
            "rule": "online_out_of_stock",
            "warehouses_checked": warehouses,
            "position_from": position_from,
        },
        payload={
            "sku": sku,
            "store_id": store.location_id,
            "distance_km": round(store.distance_km, 2),
            "units_available": units,
        },
        holdout=holdout,
    )
