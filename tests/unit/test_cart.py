"""Abandoned cart (SPEC §5.5): the deadline and what the trigger offers at it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from operators.cart import CartLine, CartOutcome, CartRules, decide_abandoned_cart, pending_deadline
from operators.clock import DAY_MS, HOUR_MS

T0 = 1_780_000_000_000  # the last cart activity, in epoch ms
RULES = CartRules()
DEADLINE = T0 + HOUR_MS

# sku -> (qty, unit price in cents, last added at)
CART: dict[str, CartLine] = {
    "sku-a": (2, 1999, T0 - 60_000),
    "sku-b": (1, 4550, T0),
}
PLENTY = {"sku-a": 100, "sku-b": 100}


def decide(
    cart: Mapping[str, CartLine] = CART,
    *,
    last_activity: int | None = T0,
    decided_for: int | None = None,
    last_fired: int | None = None,
    segment: str | None = "regular",
    available: Mapping[str, int | None] = PLENTY,
    now: int = DEADLINE,
    rules: CartRules = RULES,
    customer_id: str = "cust-1",
    holdout: bool = False,
) -> CartOutcome | None:
    return decide_abandoned_cart(
        customer_id,
        cart,
        last_activity,
        decided_for,
        last_fired,
        segment,
        available,
        now,
        rules,
        holdout,
    )


def fired(**kw: Any) -> CartOutcome:
    out = decide(**kw)
    assert out is not None and out.result == "fired" and out.trigger is not None, out
    return out


# --- the deadline ----------------------------------------------------------------------


def test_pending_deadline_is_last_activity_plus_abandoned_after() -> None:
    assert pending_deadline(CART, T0, None, RULES) == T0 + HOUR_MS
    slow = CartRules(abandoned_after_ms=2 * HOUR_MS)
    assert pending_deadline(CART, T0, None, slow) == T0 + 2 * HOUR_MS


def test_no_deadline_for_an_empty_cart_or_without_activity() -> None:
    assert pending_deadline({}, T0, None, RULES) is None
    assert pending_deadline(CART, None, None, RULES) is None


def test_no_deadline_once_decided_for_the_last_activity() -> None:
    assert pending_deadline(CART, T0, T0, RULES) is None
    assert pending_deadline(CART, T0, T0 + 1, RULES) is None
    # New activity after the decision: a new deadline.
    assert pending_deadline(CART, T0, T0 - 1, RULES) == DEADLINE


def test_nothing_before_the_deadline() -> None:
    assert decide(now=DEADLINE - 1) is None
    assert decide(now=T0) is None


def test_fires_at_the_deadline_with_event_ts_equal_to_it() -> None:
    out = fired(now=DEADLINE)
    assert out.decided_for == T0
    assert out.trigger is not None
    assert out.trigger.kind == "abandoned_cart"
    assert out.trigger.subject == "cust-1"
    assert out.trigger.event_ts == DEADLINE
    # Decided late (the watermark moved on well past it): still the deadline.
    late = fired(now=DEADLINE + 5 * HOUR_MS)
    assert late.trigger is not None and late.trigger.event_ts == DEADLINE


def test_already_decided_cart_gives_nothing() -> None:
    assert decide(decided_for=T0, now=DEADLINE + DAY_MS) is None
    assert decide(decided_for=T0 + 10, now=DEADLINE + DAY_MS) is None


def test_empty_cart_gives_nothing() -> None:
    assert decide({}, now=DEADLINE + DAY_MS) is None


# --- what the trigger offers -----------------------------------------------------------


def test_items_quantities_and_prices_are_exact_decimal_strings() -> None:
    t = fired().trigger
    assert t is not None
    assert t.payload["items"] == [
        {"sku": "sku-a", "qty": 2, "unit_price": "19.99"},
        {"sku": "sku-b", "qty": 1, "unit_price": "45.50"},
    ]
    assert t.payload["cart_value"] == "85.48"  # 2 * 19.99 + 45.50


def test_discount_is_10_percent_and_15_for_core() -> None:
    regular = fired(segment="regular").trigger
    core = fired(segment="core").trigger
    unknown = fired(segment=None).trigger
    assert regular is not None and core is not None and unknown is not None
    assert regular.payload["discount_pct"] == 10
    assert unknown.payload["discount_pct"] == 10
    assert core.payload["discount_pct"] == 15


def test_stock_reminder_only_at_or_below_the_low_stock_hint() -> None:
    t = fired(available={"sku-a": 5, "sku-b": 6}).trigger
    assert t is not None
    a, b = t.payload["items"]
    assert a["sku"] == "sku-a" and a["stock_left"] == 5
    assert a["stock_reminder"] == "only 5 left"
    assert b["sku"] == "sku-b" and "stock_left" not in b
    low = fired(available={"sku-a": 1, "sku-b": 3}).trigger
    assert low is not None
    assert [i["stock_left"] for i in low.payload["items"]] == [1, 3]


def test_sold_out_sku_is_left_out_and_named_in_the_reason() -> None:
    out = fired(available={"sku-a": 0, "sku-b": 100})
    t = out.trigger
    assert t is not None
    assert [i["sku"] for i in t.payload["items"]] == ["sku-b"]
    assert t.payload["cart_value"] == "45.50"  # only what is still for sale
    assert t.reason["sold_out_left_out"] == ["sku-a"]
    assert out.sold_out == ("sku-a",)


def test_negative_availability_counts_as_sold_out() -> None:
    out = fired(available={"sku-a": -2, "sku-b": 4})
    assert out.sold_out == ("sku-a",)


def test_cart_with_nothing_left_is_sold_out_and_fires_nothing() -> None:
    out = decide(available={"sku-a": 0, "sku-b": 0})
    assert out is not None
    assert out.result == "sold_out"
    assert out.trigger is None
    assert set(out.sold_out) == {"sku-a", "sku-b"}
    assert out.decided_for == T0  # settled: not decided again


def test_unknown_stock_is_offered_without_a_reminder() -> None:
    t = fired(available={"sku-a": None}).trigger  # sku-b not in the mapping at all
    assert t is not None
    assert [i["sku"] for i in t.payload["items"]] == ["sku-a", "sku-b"]
    assert all("stock_left" not in i for i in t.payload["items"])
    assert t.payload["cart_value"] == "85.48"


# --- cooldown --------------------------------------------------------------------------


def test_second_deadline_within_the_cooldown_is_held_back() -> None:
    out = decide(last_fired=DEADLINE - 23 * HOUR_MS)
    assert out is not None
    assert out.result == "cooldown"
    assert out.trigger is None
    assert out.decided_for == T0
    just_inside = decide(last_fired=DEADLINE - DAY_MS + 1)
    assert just_inside is not None and just_inside.result == "cooldown"


def test_deadline_past_the_cooldown_fires() -> None:
    assert fired(last_fired=DEADLINE - DAY_MS - 1).trigger is not None
    assert fired(last_fired=DEADLINE - DAY_MS).trigger is not None  # 24 h apart exactly


def test_cooldown_is_configurable() -> None:
    short = CartRules(cooldown_ms=HOUR_MS)
    assert fired(last_fired=DEADLINE - 2 * HOUR_MS, rules=short).trigger is not None
    held = decide(last_fired=DEADLINE - 30 * 60_000, rules=short)
    assert held is not None and held.result == "cooldown"


# --- ids -------------------------------------------------------------------------------


def test_trigger_id_is_stable_for_the_same_cart() -> None:
    first = fired().trigger
    again = fired(now=DEADLINE + HOUR_MS).trigger  # decided at another watermark
    assert first is not None and again is not None
    assert first.trigger_id == again.trigger_id


def test_trigger_id_differs_for_another_activity_time_or_customer() -> None:
    first = fired().trigger
    later = fired(last_activity=T0 + 1, now=DEADLINE + 1).trigger
    other = fired(customer_id="cust-2").trigger
    assert first is not None and later is not None and other is not None
    assert len({first.trigger_id, later.trigger_id, other.trigger_id}) == 3


def test_holdout_marks_the_trigger_without_changing_it() -> None:
    held = fired(holdout=True).trigger
    treated = fired().trigger
    assert held is not None and treated is not None
    assert held.holdout is True and treated.holdout is False
    assert held.trigger_id == treated.trigger_id
    assert held.payload == treated.payload
