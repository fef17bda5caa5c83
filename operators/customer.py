"""RFM segments, membership tiers and the behaviour upgrade (SPEC §5.2, §5.3).

Pure functions over a customer's facts and an injected `now` (event time, ms).
`evaluate` walks the customer's decision points in order and returns what
changed, the triggers to emit, and when the customer must be looked at again
even if nothing happens (a segment that changes *with time*).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from operators.clock import DAY_MS
from operators.triggers import Trigger, in_holdout, money

SEGMENTS = ("core", "new", "potential", "sleeping", "regular")
TIERS = ("silver", "gold", "platinum")


@dataclass(frozen=True, slots=True)
class SegmentRules:
    core_recency_days: int = 7
    core_min_frequency: int = 5
    core_top_share: float = 0.20
    new_recency_days: int = 7
    new_max_frequency: int = 1
    potential_recency_days: int = 15
    potential_min_frequency: int = 1
    potential_max_frequency: int = 2
    potential_low_pct: float = 0.25
    potential_high_pct: float = 0.75
    sleeping_recency_days: int = 90
    sleeping_min_frequency: int = 1
    premium_streak_days: int = 3
    offers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class TierRules:
    gold_spend_cents: int = 500_000
    platinum_spend_cents: int = 2_000_000
    window_days: int = 365


@dataclass(frozen=True, slots=True)
class Facts:
    """A customer's RFM facts at one decision point."""

    frequency: int
    monetary_cents: int
    first_activity_ms: int | None
    first_order_ms: int | None
    last_order_ms: int | None
    orders: tuple[tuple[int, int], ...] = ()  # (order ts, net cents) of counted orders
    premium_streak: tuple[int, int] | None = None  # (first day, last day) of the current run


@dataclass(frozen=True, slots=True)
class MonetaryRank:
    """Where a monetary value sits among customers with F >= 1."""

    percentile: float  # mid-rank in [0, 1]
    mean_cents: float
    customers: int


@dataclass(slots=True)
class CustomerLabels:
    segment: str | None
    tier: str | None
    invited_streak_day: int | None  # first day of the premium run last invited
    judged_at: int | None = None  # event time of the latest judgement
    cart_decided_for: int | None = None  # last cart activity whose deadline was decided
    cart_last_fired: int | None = None  # deadline of the last abandoned_cart trigger
    journey_done: tuple[str, ...] = ()  # journey steps sent or cancelled
    churn_score: float | None = None  # the model's latest score
    churn_pending: str | None = None  # JSON {t, x, b}: the scored vector awaiting its label
    churn_scored_at: int | None = None  # event time of the latest score
    abandoned_carts: int = 0  # abandoned-cart triggers fired (a churn feature)


def latest_run(days: list[int]) -> tuple[int, int] | None:
    """The run of consecutive days that ends at the latest day: (first, last)."""
    if not days:
        return None
    ordered = sorted(set(days))
    first = last = ordered[-1]
    for d in reversed(ordered[:-1]):
        if d != first - 1:
            break
        first = d
    return first, last


def as_of(facts: Facts, now: int) -> Facts:
    """The facts as they stood at `now`: without the orders placed after it.

    A timer review in a catch-up batch is judged on a state that already holds
    the batch's later orders (those up to its last order); judging "sleeping
    at day 90" with an order from day 120 in the facts would be wrong.
    """
    if facts.last_order_ms is None or facts.last_order_ms <= now:
        return facts
    later = [(ts, net) for ts, net in facts.orders if now < ts <= facts.last_order_ms]
    past = tuple((ts, net) for ts, net in facts.orders if ts <= now)
    frequency = max(0, facts.frequency - len(later))
    first = facts.first_order_ms
    return Facts(
        frequency=frequency,
        monetary_cents=facts.monetary_cents - sum(net for _, net in later),
        first_activity_ms=facts.first_activity_ms,
        first_order_ms=first if frequency and first is not None and first <= now else None,
        last_order_ms=max((ts for ts, _ in past), default=None) if frequency else None,
        orders=past,
        premium_streak=facts.premium_streak,
    )


def recency_ms(facts: Facts, now: int) -> int | None:
    """R: since the last order, or since first activity for a customer without orders."""
    basis = facts.last_order_ms if facts.frequency >= 1 else facts.first_activity_ms
    if basis is None:
        return None
    return max(0, now - basis)


def spend_in_window(orders: tuple[tuple[int, int], ...], now: int, window_days: int) -> int:
    """Net spend of orders in (now - window, now]."""
    start = now - window_days * DAY_MS
    return sum(net for ts, net in orders if start < ts <= now)


def percentile_rank(below: int, equal: int, customers: int) -> float:
    """Mid-rank percentile: a lone customer sits at 0.5, the top of five at 0.9."""
    if customers <= 0:
        return 0.5
    return (below + equal / 2) / customers


def segment_of(facts: Facts, rank: MonetaryRank, now: int, rules: SegmentRules) -> str | None:
    """The seed's RFM table, checked in order: core, new, potential, sleeping."""
    r = recency_ms(facts, now)
    if r is None:
        return None
    f = facts.frequency
    if (
        r <= rules.core_recency_days * DAY_MS
        and f >= rules.core_min_frequency
        and rank.percentile >= 1 - rules.core_top_share
    ):
        return "core"
    if r <= rules.new_recency_days * DAY_MS and f <= rules.new_max_frequency:
        return "new"
    if (
        r <= rules.potential_recency_days * DAY_MS
        and rules.potential_min_frequency <= f <= rules.potential_max_frequency
        and rules.potential_low_pct <= rank.percentile <= rules.potential_high_pct
    ):
        return "potential"
    if (
        r >= rules.sleeping_recency_days * DAY_MS
        and f >= rules.sleeping_min_frequency
        and facts.monetary_cents >= rank.mean_cents
    ):
        return "sleeping"
    return "regular"


def tier_of(facts: Facts, now: int, rules: TierRules) -> tuple[str | None, int]:
    """Membership tier and the rolling spend it was judged on."""
    spend = spend_in_window(facts.orders, now, rules.window_days)
    if facts.frequency < 1:
        return None, spend
    if spend >= rules.platinum_spend_cents:
        return "platinum", spend
    if spend >= rules.gold_spend_cents:
        return "gold", spend
    return "silver", spend


def next_review_ms(facts: Facts, now: int, seg: SegmentRules, tiers: TierRules) -> int | None:
    """The next event time at which time alone could change segment or tier."""
    candidates: list[int] = []
    basis = facts.last_order_ms if facts.frequency >= 1 else facts.first_activity_ms
    if basis is not None:
        # "R <= d" stops holding 1 ms after d days; "R >= 90" starts holding at 90 days.
        for days, edge in (
            (seg.core_recency_days, 1),
            (seg.new_recency_days, 1),
            (seg.potential_recency_days, 1),
            (seg.sleeping_recency_days, 0),
        ):
            candidates.append(basis + days * DAY_MS + edge)
    # An order leaves the rolling tier window `window_days` after it was placed.
    candidates.extend(ts + tiers.window_days * DAY_MS for ts, _ in facts.orders)
    future = [c for c in candidates if c > now]
    return min(future) if future else None


def decide(
    customer_id: str,
    labels: CustomerLabels,
    facts: Facts,
    rank: MonetaryRank,
    now: int,
    seg_rules: SegmentRules,
    tier_rules: TierRules,
    holdout_share: float,
) -> list[Trigger]:
    """Re-judge one customer at `now`; update `labels` in place, return the triggers.

    A trigger's cause is the customer's state (basis time, F, M) plus the
    transition, not the moment it was noticed, so the same history gives the
    same trigger ids however the events were batched.
    """
    out: list[Trigger] = []
    holdout = in_holdout(customer_id, holdout_share)
    fingerprint = (
        f"{facts.last_order_ms or facts.first_activity_ms}|{facts.frequency}|{facts.monetary_cents}"
    )
    r = recency_ms(facts, now)
    recency_days = None if r is None else r // DAY_MS

    new_segment = segment_of(facts, rank, now, seg_rules)
    if new_segment is not None and new_segment != labels.segment:
        kind = "win_back" if new_segment == "sleeping" else "segment_change"
        out.append(
            Trigger(
                kind=kind,
                subject_key="customer_id",
                subject=customer_id,
                cause=f"{labels.segment}>{new_segment}|{fingerprint}",
                event_ts=now,
                reason={
                    "rule": f"rfm_{new_segment}",
                    "recency_days": recency_days,
                    "frequency": facts.frequency,
                    "monetary": money(facts.monetary_cents),
                    "monetary_percentile": round(rank.percentile, 4),
                    "monetary_mean": money(round(rank.mean_cents)),
                },
                payload={
                    "old_segment": labels.segment,
                    "new_segment": new_segment,
                    "offer": seg_rules.offers.get(new_segment),
                },
                holdout=holdout,
            )
        )
        labels.segment = new_segment

    new_tier, spend = tier_of(facts, now, tier_rules)
    if new_tier != labels.tier:
        out.append(
            Trigger(
                kind="tier_change",
                subject_key="customer_id",
                subject=customer_id,
                cause=f"{labels.tier}>{new_tier}|{fingerprint}|{spend}",
                event_ts=now,
                reason={
                    "rule": "rolling_spend",
                    "spend_12m": money(spend),
                    "gold_at": money(tier_rules.gold_spend_cents),
                    "platinum_at": money(tier_rules.platinum_spend_cents),
                },
                payload={"old_tier": labels.tier, "new_tier": new_tier, "spend_12m": money(spend)},
                holdout=holdout,
            )
        )
        labels.tier = new_tier

    out.extend(_behaviour_upgrade(customer_id, labels, facts, now, seg_rules, holdout))
    return out


def _behaviour_upgrade(
    customer_id: str,
    labels: CustomerLabels,
    facts: Facts,
    now: int,
    rules: SegmentRules,
    holdout: bool,
) -> list[Trigger]:
    """Premium-line views on N consecutive days without an order -> VIP invitation."""
    if facts.premium_streak is None:
        return []
    first_day, last_day = facts.premium_streak
    days = last_day - first_day + 1
    if days < rules.premium_streak_days or labels.invited_streak_day == first_day:
        return []
    labels.invited_streak_day = first_day
    return [
        Trigger(
            kind="vip_invitation",
            subject_key="customer_id",
            subject=customer_id,
            cause=f"premium_streak|{first_day}",
            event_ts=now,
            reason={"rule": "premium_browsing_streak", "consecutive_days": days, "orders_since": 0},
            payload={
                "old_segment": labels.segment,
                "new_segment": "core_potential",
                "offer": rules.offers.get("core_potential"),
            },
            holdout=holdout,
        )
    ]


def profile_view(
    customer_id: str, labels: CustomerLabels, facts: Facts, now: int, tiers: TierRules
) -> dict[str, Any]:
    """The analyst's view of a customer (`omnipulse profile`)."""
    r = recency_ms(facts, now)
    _, spend = tier_of(facts, now, tiers)
    return {
        "customer_id": customer_id,
        "frequency": facts.frequency,
        "monetary": money(facts.monetary_cents),
        "first_order_ts": facts.first_order_ms,
        "last_order_ts": facts.last_order_ms,
        "recency_days": None if r is None else r // DAY_MS,
        "segment": labels.segment,
        "tier": labels.tier,
        "spend_12m": money(spend),
        "core_potential": labels.invited_streak_day is not None,
    }
