"""New-customer journey (SPEC §5.4): steps at +24 h, +3 d and +7 d after the first order."""

from __future__ import annotations

from collections.abc import Collection

from operators.clock import DAY_MS, HOUR_MS
from operators.journey import JourneyOutcome, decide_journey, next_step_due

FO = 1_780_000_000_000  # the first order, in epoch ms
STEPS = {"tips_24h": 24 * HOUR_MS, "recommend_3d": 3 * DAY_MS, "coupon_7d": 7 * DAY_MS}
FIRST = ((FO, 10_000),)  # (order ts, net cents): the first order only


def decide(
    now: int,
    orders: tuple[tuple[int, int], ...] = FIRST,
    done: Collection[str] = (),
    first_order: int | None = FO,
    customer_id: str = "cust-1",
) -> JourneyOutcome:
    return decide_journey(customer_id, first_order, orders, STEPS, done, now, False)


def steps(out: JourneyOutcome) -> list[str]:
    return [t.payload["step"] for t in out.triggers]


def test_each_step_is_due_exactly_at_its_delay() -> None:
    for name, delay in STEPS.items():
        before = decide(FO + delay - 1)
        at = decide(FO + delay)
        assert name not in steps(before)
        assert name in steps(at)
        t = next(t for t in at.triggers if t.payload["step"] == name)
        assert t.event_ts == FO + delay
        assert t.kind == "journey_step"
        assert t.subject == "cust-1"


def test_only_due_steps_in_due_order() -> None:
    assert decide(FO).triggers == []
    assert decide(FO).done == ()
    assert steps(decide(FO + 2 * DAY_MS)) == ["tips_24h"]
    assert steps(decide(FO + 3 * DAY_MS)) == ["tips_24h", "recommend_3d"]
    late = decide(FO + 30 * DAY_MS)  # the watermark jumped: every step, in order
    assert steps(late) == ["tips_24h", "recommend_3d", "coupon_7d"]
    assert late.done == ("tips_24h", "recommend_3d", "coupon_7d")
    assert [t.event_ts for t in late.triggers] == [FO + d for d in STEPS.values()]


def test_done_steps_are_skipped() -> None:
    out = decide(FO + 3 * DAY_MS, done=("tips_24h",))
    assert steps(out) == ["recommend_3d"]
    assert out.done == ("recommend_3d",)
    assert decide(FO + 30 * DAY_MS, done=tuple(STEPS)).triggers == []


def test_no_journey_without_a_first_order() -> None:
    out = decide(FO + 30 * DAY_MS, orders=(), first_order=None)
    assert out.triggers == [] and out.done == ()


def test_coupon_cancelled_when_the_customer_ordered_again_before_it() -> None:
    orders = (*FIRST, (FO + 2 * DAY_MS, 5_000))
    out = decide(FO + 7 * DAY_MS, orders=orders, done=("tips_24h", "recommend_3d"))
    assert out.triggers == []
    assert out.cancelled == ("coupon_7d",)
    assert out.done == ("coupon_7d",)  # settled: not considered again


def test_repeat_order_does_not_cancel_the_other_steps() -> None:
    orders = (*FIRST, (FO + HOUR_MS, 5_000))
    out = decide(FO + 7 * DAY_MS, orders=orders)
    assert steps(out) == ["tips_24h", "recommend_3d"]
    assert out.cancelled == ("coupon_7d",)


def test_coupon_sent_when_the_second_order_comes_after_it() -> None:
    orders = (*FIRST, (FO + 7 * DAY_MS + 1, 5_000))
    out = decide(FO + 8 * DAY_MS, orders=orders, done=("tips_24h", "recommend_3d"))
    assert steps(out) == ["coupon_7d"]
    assert out.cancelled == ()


def test_the_first_order_itself_does_not_cancel_the_coupon() -> None:
    out = decide(FO + 7 * DAY_MS, done=("tips_24h", "recommend_3d"))
    assert steps(out) == ["coupon_7d"]


def test_step_ids_are_stable_and_distinct() -> None:
    a = decide(FO + 7 * DAY_MS)
    b = decide(FO + 9 * DAY_MS)
    ids = [t.trigger_id for t in a.triggers]
    assert ids == [t.trigger_id for t in b.triggers]
    assert len(set(ids)) == 3
    other = decide(FO + 7 * DAY_MS, customer_id="cust-2")
    assert set(ids).isdisjoint(t.trigger_id for t in other.triggers)


def test_next_step_due() -> None:
    assert next_step_due(FO, STEPS, ()) == FO + 24 * HOUR_MS
    assert next_step_due(FO, STEPS, ("tips_24h",)) == FO + 3 * DAY_MS
    assert next_step_due(FO, STEPS, ("tips_24h", "recommend_3d")) == FO + 7 * DAY_MS
    assert next_step_due(FO, STEPS, tuple(STEPS)) is None
    assert next_step_due(None, STEPS, ()) is None
