"""Abandoned cart (SPEC §5.5): when a cart's deadline is due and what the trigger says.

A cart is the profile's open lines `{sku: [qty, unit_price_cents, last_added_ms]}`
plus the time of its last activity. Its deadline is that time + `abandoned_after`;
an order covering the lines or emptying the cart removes them before the deadline
(that bookkeeping is in `state/lua/apply_customer.lua`). Stock is judged at the
deadline, from what is available then, not when the cart was filled.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from operators.clock import ms_to_rfc3339
from operators.triggers import Trigger, money

#: A cart line as kept in the profile: (qty, unit price in cents, last added at ms).
CartLine = Sequence[int]


@dataclass(frozen=True, slots=True)
class CartRules:
    abandoned_after_ms: int = 3_600_000
    discount_pct: int = 10
    core_discount_pct: int = 15
    low_stock_hint: int = 5
    cooldown_ms: int = 86_400_000


@dataclass(frozen=True, slots=True)
class CartOutcome:
    """The decision on one cart deadline; `decided_for` is the activity time it settles."""

    decided_for: int
    result: str  # "fired", "cooldown", "sold_out" or "expired"
    trigger: Trigger | None = None
    sold_out: tuple[str, ...] = ()


def pending_deadline(
    cart: Mapping[str, CartLine],
    last_activity: int | None,
    decided_for: int | None,
    rules: CartRules,
) -> int | None:
    """The deadline still to be decided, or None (empty cart, or already decided)."""
    if not cart or last_activity is None:
        return None
    if decided_for is not None and decided_for >= last_activity:
        return None
    return last_activity + rules.abandoned_after_ms


def open_carts(
    cart: Mapping[str, CartLine],
    last_activity: int | None,
    lapsed: Sequence[Sequence[object]],
    decided_for: int | None,
    lapped: int | None,
) -> list[tuple[int, Mapping[str, CartLine]]]:
    """Carts still to be decided, oldest first, as (last activity, lines).

    `lapsed` are snapshots of carts whose deadline passed before a later event
    of the customer was applied (see apply_customer.lua); `lapped` is the last
    activity of the newest of them, which the open cart must be past to count.
    """
    done = -1 if decided_for is None else decided_for
    out = [
        (int(ca), lines)  # type: ignore[call-overload]
        for ca, lines in lapsed
        if int(ca) > done and lines  # type: ignore[call-overload]
    ]
    if cart and last_activity is not None and last_activity > max(done, lapped or -1):
        out.append((last_activity, cart))
    return sorted(out, key=lambda c: c[0])


def decide_abandoned_cart(
    customer_id: str,
    cart: Mapping[str, CartLine],
    last_activity: int | None,
    decided_for: int | None,
    last_fired: int | None,
    segment: str | None,
    available: Mapping[str, int | None],
    now: int,
    rules: CartRules,
    holdout: bool,
    expire_before: int = 0,
) -> CartOutcome | None:
    """Decide a due cart at event time `now`; None while nothing is due.

    `available[sku]` is the stock a delivery could be served from (net of safety
    stock), or None when no stock is recorded for the SKU at all: such an item
    is offered without a stock reminder rather than dropped on missing data.
    `last_fired` is the deadline of the customer's last abandoned-cart trigger.
    A deadline before `expire_before` (when timers started, for state kept by an
    older version) is settled as "expired" without a trigger.
    """
    deadline = pending_deadline(cart, last_activity, decided_for, rules)
    if deadline is None or deadline > now or last_activity is None:
        return None
    if deadline < expire_before:
        return CartOutcome(last_activity, "expired")
    if last_fired is not None and deadline - last_fired < rules.cooldown_ms:
        return CartOutcome(last_activity, "cooldown")
    items = []
    sold_out = []
    value = 0
    for sku in sorted(cart):
        qty, price = int(cart[sku][0]), int(cart[sku][1] or 0)
        left = available.get(sku)
        if left is not None and left <= 0:
            sold_out.append(sku)
            continue
        item: dict[str, object] = {"sku": sku, "qty": qty, "unit_price": money(price)}
        if left is not None and left <= rules.low_stock_hint:
            item["stock_left"] = left
            item["stock_reminder"] = f"only {left} left"
        items.append(item)
        value += qty * price
    if not items:
        return CartOutcome(last_activity, "sold_out", sold_out=tuple(sold_out))
    pct = rules.core_discount_pct if segment == "core" else rules.discount_pct
    trigger = Trigger(
        kind="abandoned_cart",
        subject_key="customer_id",
        subject=customer_id,
        cause=f"cart|{last_activity}",
        event_ts=deadline,
        reason={
            "rule": "cart_abandoned",
            "last_cart_activity": ms_to_rfc3339(last_activity),
            "abandoned_after_minutes": rules.abandoned_after_ms // 60_000,
            "segment": segment,
            "sold_out_left_out": sold_out,
        },
        payload={
            "items": items,
            "discount_pct": pct,
            "cart_value": money(value),
            "discounted_value": money(value - value * pct // 100),
        },
        holdout=holdout,
    )
    return CartOutcome(last_activity, "fired", trigger, tuple(sold_out))
