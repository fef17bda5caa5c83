"""RFM segments, membership tiers, review times and segment triggers (SPEC §5.2, §5.3)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from operators.clock import DAY_MS
from operators.customer import (
    CustomerLabels,
    Facts,
    MonetaryRank,
    SegmentRules,
    TierRules,
    as_of,
    decide,
    next_review_ms,
    percentile_rank,
    segment_of,
    tier_of,
)
from operators.triggers import Trigger, in_holdout, trigger_id

T0 = 1_780_000_000_000  # the last order, in epoch ms
SEG = SegmentRules()
TIERS = TierRules()
MID = MonetaryRank(percentile=0.5, mean_cents=10_000, customers=100)
TOP = MonetaryRank(percentile=0.9, mean_cents=10_000, customers=100)
LOW = MonetaryRank(percentile=0.1, mean_cents=10_000, customers=100)


def buyer(frequency: int, monetary_cents: int = 10_000, last: int = T0) -> Facts:
    """A customer with `frequency` orders, the last at `last`, spending `monetary_cents`."""
    each = monetary_cents // max(frequency, 1)
    orders = tuple((last - i * DAY_MS, each) for i in range(frequency))
    return Facts(
        frequency=frequency,
        monetary_cents=monetary_cents,
        first_activity_ms=last - 400 * DAY_MS,
        first_order_ms=orders[-1][0] if orders else None,
        last_order_ms=last if frequency else None,
        orders=orders,
    )


def visitor(first_activity: int = T0) -> Facts:
    return Facts(0, 0, first_activity, None, None)


def pct(p: float, mean_cents: float = 10_000) -> MonetaryRank:
    return MonetaryRank(percentile=p, mean_cents=mean_cents, customers=100)


def fresh() -> CustomerLabels:
    return CustomerLabels(segment=None, tier=None, invited_streak_day=None)


# --- segment_of: the table, in order ------------------------------------------------


@pytest.mark.parametrize(
    ("facts", "rank", "age", "expected"),
    [
        # core: R <= 7 and F >= 5 and M in the top 20 %
        (buyer(5), TOP, 0, "core"),
        (buyer(12), TOP, 3 * DAY_MS, "core"),
        (buyer(5), TOP, 7 * DAY_MS, "core"),
        (buyer(5), TOP, 7 * DAY_MS + 1, "regular"),
        (buyer(4), TOP, 0, "regular"),
        (buyer(5), pct(0.8), 0, "core"),
        (buyer(5), pct(0.7999), 0, "regular"),
        # new: R <= 7 and F <= 1
        (buyer(1), TOP, 0, "new"),
        (buyer(1), MID, 7 * DAY_MS, "new"),
        (buyer(1), TOP, 7 * DAY_MS + 1, "regular"),
        (buyer(2), TOP, DAY_MS, "regular"),
        # new is checked before potential: F = 1 in the middle band stays new
        (buyer(1), MID, DAY_MS, "new"),
        # potential: R <= 15 and 1 <= F <= 2 and M in P25..P75
        (buyer(1), MID, 7 * DAY_MS + 1, "potential"),
        (buyer(2), MID, 0, "potential"),
        (buyer(2), MID, 15 * DAY_MS, "potential"),
        (buyer(2), MID, 15 * DAY_MS + 1, "regular"),
        (buyer(2), pct(0.25), DAY_MS, "potential"),
        (buyer(2), pct(0.75), DAY_MS, "potential"),
        (buyer(2), pct(0.2499), DAY_MS, "regular"),
        (buyer(2), pct(0.7501), DAY_MS, "regular"),
        (buyer(3), MID, DAY_MS, "regular"),
        # sleeping: R >= 90 and F >= 1 and M >= mean M
        (buyer(1, 10_000), pct(0.5, 10_000), 90 * DAY_MS, "sleeping"),
        (buyer(1, 10_000), pct(0.5, 10_000), 90 * DAY_MS - 1, "regular"),
        (buyer(1, 9_999), pct(0.5, 10_000), 90 * DAY_MS, "regular"),
        (buyer(7, 80_000), TOP, 400 * DAY_MS, "sleeping"),
        # regular: none of the above
        (buyer(3), LOW, 30 * DAY_MS, "regular"),
    ],
)
def test_segment_table(facts: Facts, rank: MonetaryRank, age: int, expected: str) -> None:
    assert segment_of(facts, rank, T0 + age, SEG) == expected


def test_customer_without_orders_is_judged_from_first_activity() -> None:
    seen = visitor(first_activity=T0)
    assert segment_of(seen, MID, T0 + 7 * DAY_MS, SEG) == "new"
    assert segment_of(seen, MID, T0 + 7 * DAY_MS + 1, SEG) == "regular"
    # Never sleeping without an order, however long ago the first visit.
    assert segment_of(seen, MID, T0 + 365 * DAY_MS, SEG) == "regular"


def test_customer_with_no_activity_has_no_segment() -> None:
    assert segment_of(Facts(0, 0, None, None, None), MID, T0, SEG) is None


def test_recency_is_from_the_last_order_not_the_first_activity() -> None:
    facts = replace(buyer(5), first_activity_ms=T0 - 1000 * DAY_MS)
    assert segment_of(facts, TOP, T0 + DAY_MS, SEG) == "core"


def test_segment_rules_are_configurable() -> None:
    rules = SegmentRules(core_min_frequency=3, core_recency_days=30, sleeping_recency_days=60)
    assert segment_of(buyer(3), TOP, T0 + 30 * DAY_MS, rules) == "core"
    assert segment_of(buyer(1), MID, T0 + 60 * DAY_MS, rules) == "sleeping"


# --- percentile_rank ----------------------------------------------------------------


def test_percentile_rank_mid_rank() -> None:
    assert percentile_rank(0, 1, 1) == 0.5
    assert percentile_rank(4, 1, 5) == pytest.approx(0.9)
    assert percentile_rank(0, 1, 5) == pytest.approx(0.1)
    assert percentile_rank(0, 4, 4) == 0.5  # all equal: all in the middle
    assert percentile_rank(0, 0, 0) == 0.5


def test_exactly_the_top_fifth_can_be_core() -> None:
    for n in (5, 10, 20, 100):
        core = sum(
            segment_of(buyer(5), pct(percentile_rank(i, 1, n)), T0, SEG) == "core" for i in range(n)
        )
        assert core == n // 5


def test_exactly_the_middle_half_can_be_potential() -> None:
    for n in (4, 8, 100):
        potential = sum(
            segment_of(buyer(2), pct(percentile_rank(i, 1, n)), T0, SEG) == "potential"
            for i in range(n)
        )
        assert potential == n // 2


# --- tier_of ------------------------------------------------------------------------


def orders_facts(*orders: tuple[int, int]) -> Facts:
    last = max(ts for ts, _ in orders)
    return Facts(
        frequency=len(orders),
        monetary_cents=sum(c for _, c in orders),
        first_activity_ms=min(ts for ts, _ in orders),
        first_order_ms=min(ts for ts, _ in orders),
        last_order_ms=last,
        orders=tuple(orders),
    )


def test_no_order_no_tier() -> None:
    assert tier_of(visitor(), T0, TIERS) == (None, 0)


def test_silver_from_the_first_order() -> None:
    assert tier_of(orders_facts((T0, 1)), T0, TIERS) == ("silver", 1)


@pytest.mark.parametrize(
    ("spend", "tier"),
    [
        (499_999, "silver"),
        (500_000, "gold"),
        (1_999_999, "gold"),
        (2_000_000, "platinum"),
        (9_000_000, "platinum"),
    ],
)
def test_tier_thresholds(spend: int, tier: str) -> None:
    facts = orders_facts((T0 - 100 * DAY_MS, spend - 1000), (T0, 1000))
    assert tier_of(facts, T0, TIERS) == (tier, spend)


def test_spend_outside_the_365_day_window_does_not_count() -> None:
    facts = orders_facts((T0, 2_500_000), (T0 + 200 * DAY_MS, 1000))
    assert tier_of(facts, T0 + 365 * DAY_MS - 1, TIERS) == ("platinum", 2_501_000)
    # (now - 365 d, now]: an order exactly 365 days old has left the window.
    assert tier_of(facts, T0 + 365 * DAY_MS, TIERS) == ("silver", 1000)


def test_customer_whose_orders_all_expired_stays_silver() -> None:
    facts = orders_facts((T0, 900_000))
    assert tier_of(facts, T0 + 800 * DAY_MS, TIERS) == ("silver", 0)


def test_tier_thresholds_are_configurable() -> None:
    rules = TierRules(gold_spend_cents=100, platinum_spend_cents=200, window_days=30)
    facts = orders_facts((T0 - 40 * DAY_MS, 1000), (T0, 150))
    assert tier_of(facts, T0, rules) == ("gold", 150)


# --- next_review_ms -----------------------------------------------------------------


def test_next_review_walks_the_recency_boundaries() -> None:
    facts = orders_facts((T0, 10_000))
    assert next_review_ms(facts, T0, SEG, TIERS) == T0 + 7 * DAY_MS + 1
    assert next_review_ms(facts, T0 + 7 * DAY_MS, SEG, TIERS) == T0 + 7 * DAY_MS + 1
    assert next_review_ms(facts, T0 + 7 * DAY_MS + 1, SEG, TIERS) == T0 + 15 * DAY_MS + 1
    assert next_review_ms(facts, T0 + 15 * DAY_MS + 1, SEG, TIERS) == T0 + 90 * DAY_MS
    assert next_review_ms(facts, T0 + 90 * DAY_MS, SEG, TIERS) == T0 + 365 * DAY_MS
    assert next_review_ms(facts, T0 + 365 * DAY_MS, SEG, TIERS) is None


def test_next_review_includes_an_older_order_leaving_the_tier_window() -> None:
    facts = orders_facts((T0 - 360 * DAY_MS, 600_000), (T0, 10_000))
    assert next_review_ms(facts, T0, SEG, TIERS) == T0 + 5 * DAY_MS


def test_next_review_for_a_visitor_uses_first_activity() -> None:
    assert next_review_ms(visitor(T0), T0 + DAY_MS, SEG, TIERS) == T0 + 7 * DAY_MS + 1


def test_next_review_none_without_any_basis() -> None:
    assert next_review_ms(Facts(0, 0, None, None, None), T0, SEG, TIERS) is None


def test_no_time_driven_change_happens_between_reviews() -> None:
    """Judging only at review times sees every segment and tier change on time."""
    facts = orders_facts(
        (T0 - 300 * DAY_MS, 300_000),
        (T0 - 200 * DAY_MS, 250_000),
        (T0 - 10 * DAY_MS, 1000),
        (T0 - 5 * DAY_MS, 1000),
        (T0, 1000),
    )
    rank = pct(0.85, mean_cents=100_000)
    now = T0
    reviews = 0
    while (due := next_review_ms(facts, now, SEG, TIERS)) is not None:
        state = (segment_of(facts, rank, now, SEG), tier_of(facts, now, TIERS)[0])
        for t in (now + 1, (now + due) // 2, due - 1):
            if now < t < due:
                assert (segment_of(facts, rank, t, SEG), tier_of(facts, t, TIERS)[0]) == state
        now = due
        reviews += 1
    assert reviews >= 5
    # core -> regular -> sleeping, and gold -> silver, all went through reviews.
    assert segment_of(facts, rank, now, SEG) == "sleeping"
    assert tier_of(facts, now, TIERS)[0] == "silver"


# --- decide -------------------------------------------------------------------------

OFFERS = SegmentRules(
    offers={
        "core": "1:1 advisor",
        "potential": "bundle",
        "sleeping": "wake-up coupon",
        "core_potential": "vip preorder",
    }
)


def by_kind(triggers: list[Trigger]) -> dict[str, Trigger]:
    out = {t.kind: t for t in triggers}
    assert len(out) == len(triggers), "one trigger per kind per decision"
    return out


def test_first_order_gives_new_segment_and_silver_tier() -> None:
    labels = fresh()
    facts = orders_facts((T0, 4_999))
    got = by_kind(decide("cust-1", labels, facts, MID, T0, OFFERS, TIERS, 0.0))
    assert set(got) == {"segment_change", "tier_change"}
    seg = got["segment_change"]
    assert seg.subject == "cust-1"
    assert seg.payload == {"old_segment": None, "new_segment": "new", "offer": None}
    assert seg.reason["rule"] == "rfm_new"
    assert seg.reason["monetary"] == "49.99"
    assert seg.reason["frequency"] == 1
    assert got["tier_change"].payload == {
        "old_tier": None,
        "new_tier": "silver",
        "spend_12m": "49.99",
    }
    assert (labels.segment, labels.tier) == ("new", "silver")


def test_nothing_changes_nothing_is_emitted() -> None:
    labels = fresh()
    facts = orders_facts((T0, 10_000))
    assert decide("cust-1", labels, facts, MID, T0, OFFERS, TIERS, 0.0)
    assert decide("cust-1", labels, facts, MID, T0 + DAY_MS, OFFERS, TIERS, 0.0) == []


def test_segment_change_carries_old_new_and_offer() -> None:
    labels = CustomerLabels(segment="regular", tier="gold", invited_streak_day=None)
    facts = orders_facts(*[(T0 - i * DAY_MS, 120_000) for i in range(5)])
    got = decide("cust-2", labels, facts, TOP, T0, OFFERS, TIERS, 0.0)
    assert [t.kind for t in got] == ["segment_change"]
    assert got[0].payload == {
        "old_segment": "regular",
        "new_segment": "core",
        "offer": "1:1 advisor",
    }
    assert got[0].event_ts == T0
    assert labels.segment == "core"


def test_turning_sleeping_with_time_is_a_win_back() -> None:
    labels = fresh()
    facts = orders_facts((T0, 20_000))
    rank = pct(0.5, mean_cents=15_000)
    decide("cust-3", labels, facts, rank, T0, OFFERS, TIERS, 0.0)
    before = decide("cust-3", labels, facts, rank, T0 + 90 * DAY_MS - 1, OFFERS, TIERS, 0.0)
    assert [(t.kind, t.payload["new_segment"]) for t in before] == [("segment_change", "regular")]
    assert labels.segment == "regular"
    got = decide("cust-3", labels, facts, rank, T0 + 90 * DAY_MS, OFFERS, TIERS, 0.0)
    assert [t.kind for t in got] == ["win_back"]
    assert got[0].payload == {
        "old_segment": "regular",
        "new_segment": "sleeping",
        "offer": "wake-up coupon",
    }
    assert got[0].reason["recency_days"] == 90
    assert labels.segment == "sleeping"


def test_tier_upgrade_at_exactly_5000() -> None:
    labels = CustomerLabels(segment="regular", tier="silver", invited_streak_day=None)
    facts = orders_facts((T0 - 30 * DAY_MS, 400_000), (T0, 100_000))
    got = by_kind(decide("cust-4", labels, facts, LOW, T0, OFFERS, TIERS, 0.0))
    tier = got["tier_change"]
    assert tier.payload == {"old_tier": "silver", "new_tier": "gold", "spend_12m": "5000.00"}
    assert tier.reason["gold_at"] == "5000.00"
    assert tier.reason["platinum_at"] == "20000.00"
    assert labels.tier == "gold"


def test_tier_downgrade_when_spend_leaves_the_window() -> None:
    labels = CustomerLabels(segment="sleeping", tier="platinum", invited_streak_day=None)
    facts = orders_facts((T0, 2_000_005))
    rank = pct(0.5, mean_cents=1000)
    assert decide("cust-5", labels, facts, rank, T0 + 365 * DAY_MS - 1, OFFERS, TIERS, 0.0) == []
    got = decide("cust-5", labels, facts, rank, T0 + 365 * DAY_MS, OFFERS, TIERS, 0.0)
    assert [t.kind for t in got] == ["tier_change"]
    assert got[0].payload == {"old_tier": "platinum", "new_tier": "silver", "spend_12m": "0.00"}


def test_vip_invitation_once_per_premium_streak() -> None:
    labels = CustomerLabels(segment="regular", tier=None, invited_streak_day=None)
    day = 20_500
    seen = visitor(T0 - 30 * DAY_MS)

    def run(streak: tuple[int, int] | None) -> list[Trigger]:
        facts = replace(seen, premium_streak=streak)
        return decide("cust-6", labels, facts, MID, T0, OFFERS, TIERS, 0.0)

    assert run(None) == []
    assert run((day, day + 1)) == []  # two days are not enough
    got = run((day, day + 2))
    assert [t.kind for t in got] == ["vip_invitation"]
    assert got[0].payload == {
        "old_segment": "regular",
        "new_segment": "core_potential",
        "offer": "vip preorder",
    }
    assert got[0].reason["consecutive_days"] == 3
    assert run((day, day + 2)) == []  # the same streak again
    assert run((day, day + 5)) == []  # the streak goes on: still the same one
    again = run((day + 10, day + 12))  # a new streak after a break
    assert [t.kind for t in again] == ["vip_invitation"]
    assert again[0].trigger_id != got[0].trigger_id


def test_trigger_ids_are_deterministic() -> None:
    facts = orders_facts((T0, 600_000))

    def ids(now: int, labels: CustomerLabels, customer: str = "cust-7") -> list[str]:
        return [t.trigger_id for t in decide(customer, labels, facts, MID, now, OFFERS, TIERS, 0.0)]

    first = ids(T0, fresh())
    assert len(first) == 2
    assert len(set(first)) == 2
    assert ids(T0, fresh()) == first
    # Noticed later (another batching of the same history): the same ids.
    assert ids(T0 + 3 * DAY_MS, fresh()) == first
    # A different transition or customer: different ids.
    other = CustomerLabels(segment="regular", tier="silver", invited_streak_day=None)
    assert set(ids(T0, other)).isdisjoint(first)
    assert set(ids(T0, fresh(), "cust-8")).isdisjoint(first)
    # A different state behind the same transition: different ids.
    more = replace(facts, monetary_cents=700_000, orders=((T0, 700_000),))
    moved = [t.trigger_id for t in decide("cust-7", fresh(), more, MID, T0, OFFERS, TIERS, 0.0)]
    assert set(moved).isdisjoint(first)


def test_holdout_marks_every_trigger_of_the_customer() -> None:
    facts = replace(orders_facts((T0, 10_000)), premium_streak=(1, 3))
    held = decide("cust-9", fresh(), facts, MID, T0, OFFERS, TIERS, 1.0)
    treated = decide("cust-9", fresh(), facts, MID, T0, OFFERS, TIERS, 0.0)
    assert len(held) == 3
    assert all(t.holdout for t in held)
    assert not any(t.holdout for t in treated)
    # Holdout only marks; the decision and its id do not change.
    assert [t.trigger_id for t in held] == [t.trigger_id for t in treated]


def test_trigger_record_shape() -> None:
    t = decide("cust-1", fresh(), orders_facts((T0, 10_000)), MID, T0, OFFERS, TIERS, 0.0)[0]
    record = t.to_record(emitted_at_ms=T0 + 5)
    assert record["customer_id"] == "cust-1"
    assert record["trigger_id"] == trigger_id(t.kind, "cust-1", t.cause)
    assert record["event_ts"] == T0
    assert record["emitted_at"] == T0 + 5
    assert record["holdout"] is False
    assert set(record) == {
        "trigger_id",
        "kind",
        "customer_id",
        "event_ts",
        "emitted_at",
        "reason",
        "payload",
        "holdout",
    }


# --- holdout share (operators/triggers.py) ------------------------------------------


def test_holdout_share_is_five_percent() -> None:
    held = sum(in_holdout(f"cust-{i}", 0.05) for i in range(100_000))
    assert 4_000 <= held <= 6_000


def test_holdout_is_stable_and_bounded() -> None:
    ids = [f"c{i}" for i in range(2_000)]
    assert [in_holdout(i, 0.05) for i in ids] == [in_holdout(i, 0.05) for i in ids]
    assert not any(in_holdout(i, 0.0) for i in ids)
    assert all(in_holdout(i, 1.0) for i in ids)
    # A larger share only adds customers: nobody leaves the control group.
    small = {i for i in ids if in_holdout(i, 0.05)}
    large = {i for i in ids if in_holdout(i, 0.10)}
    assert small < large


def test_facts_as_of_a_moment_leave_out_later_orders() -> None:
    DAY = DAY_MS
    facts = orders_facts((T0 - 20 * DAY, 1000), (T0 - 10 * DAY, 2000), (T0, 4000))
    then = as_of(facts, T0 - 10 * DAY)
    assert (then.frequency, then.monetary_cents) == (2, 3000)
    assert then.last_order_ms == T0 - 10 * DAY and then.first_order_ms == T0 - 20 * DAY
    assert then.orders == ((T0 - 20 * DAY, 1000), (T0 - 10 * DAY, 2000))
    # judged before the first order: no orders at all yet
    before = as_of(facts, T0 - 30 * DAY)
    assert (before.frequency, before.first_order_ms, before.last_order_ms) == (0, None, None)
    # nothing later than the moment: the same facts
    assert as_of(facts, T0) is facts
