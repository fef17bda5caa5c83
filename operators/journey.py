"""New-customer journey (SPEC §5.4): steps at fixed delays after the first order.

A step is due at exactly first order + delay (event time). A step whose name
says "coupon" is cancelled when the customer ordered again before it was due.
Which steps are done (sent or cancelled) is kept per customer, by name.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field

from operators.clock import ms_to_rfc3339
from operators.triggers import Trigger


@dataclass(frozen=True, slots=True)
class JourneyOutcome:
    triggers: list[Trigger] = field(default_factory=list)
    done: tuple[str, ...] = ()  # steps settled now (sent or cancelled)
    cancelled: tuple[str, ...] = ()
    expired: tuple[str, ...] = ()


def next_step_due(
    first_order_ms: int | None, steps: Mapping[str, int], done: Collection[str]
) -> int | None:
    """Due time of the earliest step not done yet, or None."""
    if first_order_ms is None:
        return None
    due = [first_order_ms + delay for name, delay in steps.items() if name not in done]
    return min(due) if due else None


def decide_journey(
    customer_id: str,
    first_order_ms: int | None,
    orders: tuple[tuple[int, int], ...],
    steps: Mapping[str, int],
    done: Collection[str],
    now: int,
    holdout: bool,
    expire_before: int = 0,
) -> JourneyOutcome:
    """The steps due by `now` (event time) that are not done yet, in due order.

    A step due before `expire_before` (when timers started: a customer whose
    first order predates this engine) is settled without a trigger: "usage
    tips" a month after the first order would be noise.
    """
    if first_order_ms is None:
        return JourneyOutcome()
    fo = first_order_ms
    due = sorted((fo + delay, name) for name, delay in steps.items() if name not in done)
    triggers: list[Trigger] = []
    settled: list[str] = []
    cancelled: list[str] = []
    expired: list[str] = []
    for at, name in due:
        if at > now:
            break
        settled.append(name)
        if at < expire_before:
            expired.append(name)
            continue
        if "coupon" in name and any(fo < ts <= at for ts, _ in orders):
            cancelled.append(name)
            continue
        triggers.append(
            Trigger(
                kind="journey_step",
                subject_key="customer_id",
                subject=customer_id,
                cause=f"{name}|{fo}",
                event_ts=at,
                reason={
                    "rule": "new_customer_journey",
                    "first_order_ts": ms_to_rfc3339(fo),
                    "hours_after_first_order": (at - fo) / 3_600_000,
                },
                payload={"step": name},
                holdout=holdout,
            )
        )
    return JourneyOutcome(triggers, tuple(settled), tuple(cancelled), tuple(expired))
