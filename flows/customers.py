"""Customer rounds of a batch: apply events to profiles, then judge customers.

Applying costs a fixed number of pipelined round trips whatever the batch size:
(0) stitch anonymous histories, when the batch has any; (1) one Lua call per
customer plus the clock. Judging reads the M distribution in one more round
and calls the pure decisions in `operators`. Decisions driven by time alone
(a cart deadline, a journey step, the end of quiet hours) are taken only by
timer sweeps, at the watermark; an event's review just schedules them.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import orjson

from connectors.events import Event
from flows.churn import churn_step_at, next_churn_ms
from flows.sales import record_sales
from flows.worker import Worker
from operators.cart import decide_abandoned_cart, open_carts
from operators.customer import (
    CustomerLabels,
    MonetaryRank,
    as_of,
    decide,
    next_review_ms,
    percentile_rank,
)
from operators.journey import decide_journey, next_step_due
from operators.policy import local_day
from operators.triggers import Trigger, in_holdout
from state.customers import Applied, facts_from, labels_from

ORDER_KIND = {"order_placed": "op", "order_cancelled": "oc", "order_returned": "or"}
CART_KIND = {"cart_add": "ca", "cart_remove": "cr", "checkout_start": "cs"}


@dataclass(slots=True)
class Review:
    """One decision point of one customer: judge the state after `mark` at `now`."""

    customer_id: str
    now: int
    state: dict[str, Any]
    orders: tuple[tuple[int, int], ...]
    final_state: dict[str, Any]
    timer_seen: int | None = None  # set for a timer sweep's review
    is_last: bool = True


@dataclass(slots=True)
class Decisions:
    labels: dict[str, CustomerLabels] = field(default_factory=dict)
    timers: dict[str, tuple[int | None, int | None]] = field(default_factory=dict)
    triggers: list[Trigger] = field(default_factory=list)


def compact(e: Event, w: Worker) -> dict[str, Any] | None:
    """The few fields apply_customer.lua needs, under short names."""
    base: dict[str, Any] = {"ts": e.ts, "d": local_day(e.ts, w.rules.tz), "ch": e.channel}
    d = e.data
    if e.topic == "clicks":
        base.update(
            k="v",
            cat=d.get("category"),
            pr=1 if d.get("premium") else 0,
            sid=d.get("session_id"),
            st=d.get("store_id"),
            lat=d.get("lat"),
            lon=d.get("lon"),
        )
    elif e.topic == "carts":
        base.update(
            k=CART_KIND[e.type],
            sku=d.get("sku"),
            q=d.get("qty"),
            p=d.get("unit_price"),
            sid=d.get("session_id"),
            lat=d.get("lat"),
            lon=d.get("lon"),
        )
    elif e.topic == "orders":
        f = d.get("fulfilment") or {}
        base.update(
            k=ORDER_KIND[e.type],
            oid=d["order_id"],
            tot=d["total"],
            skus=[ln["sku"] for ln in d["lines"]],
            st=f.get("store_id"),
            lat=f.get("lat"),
            lon=f.get("lon"),
        )
    else:
        return None  # stock and locations do not touch customer state
    return {k: v for k, v in base.items() if v is not None}


def apply_customers(w: Worker, events: list[Event], wall: int) -> list[Applied]:
    """Rounds 0-1: stitch, then apply each customer's events in one Lua call."""
    store = w.store
    batches: dict[tuple[str, bool], list[tuple[str, dict[str, Any]]]] = defaultdict(list)
    stitch_pairs = [
        (e.anonymous_id, e.customer_id)
        for e in events
        if e.customer_id is not None and e.anonymous_id is not None
    ]
    # a visitor who logs in within this batch: its events of the batch are the
    # customer's, in batch order (applied to the visitor, they would reach the
    # customer only after the customer's own events, out of time order)
    stitching = dict(reversed(stitch_pairs))  # the first login of the batch wins
    for e in events:
        c = compact(e, w)
        if c is None:
            continue
        if e.customer_id is not None:
            batches[(e.customer_id, False)].append((e.event_id, c))
        elif e.anonymous_id in stitching:
            batches[(stitching[e.anonymous_id], False)].append((e.event_id, c))
        elif e.anonymous_id is not None:
            batches[(e.anonymous_id, True)].append((e.event_id, c))
    if not batches:
        return []
    # Round 0: stitching puts the visitor's history first in the customer's list.
    taken = store.take_anonymous(stitch_pairs)
    for (anon, cid), history in taken.items():
        batches[(cid, False)].insert(
            0, (f"stitch:{anon}", {"k": "st", "ts": 0, "d": 0, "a": history})
        )
    # The basis persisted so far, not this batch's: a batch read again after a
    # crash must find the clock where it was before the batch (flush moves it).
    # with ordered input, each call of the batch is named: a batch read again gets
    # the same replies back (the stitch may be gone from the events by then)
    first, second = (f"{w.batch}:1", f"{w.batch}:2") if w.batch else ("", "")
    results, durable = store.apply(dict(batches), w.clock.now, w.persisted_clock_ms, first)
    w.clock.merge(durable, wall)
    redirected: dict[tuple[str, bool], list[tuple[str, dict[str, Any]]]] = defaultdict(list)
    for r in results:
        w.counters["duplicates"] += r.duplicates
        if r.redirect:
            redirected[(r.redirect, False)].extend(batches[(r.subject, True)])
    if redirected:
        more, _ = store.apply(dict(redirected), w.clock.now, w.persisted_clock_ms, second)
        results.extend(more)
    if w.batch:
        for subject, anonymous in [*batches, *redirected]:
            kind = "a" if anonymous else "c"
            w.replies.append(store.keys.replies(store.keys.subject(kind, subject)))
    # the M distribution, conversion counters and stitched histories, from the
    # effects each profile keeps pending until this round has applied them
    if w.batch:
        # with ordered input the histories go at the commit: a batch read
        # again must see the same events, stitches included
        w.handed.extend(taken)
        store.update_monetary(results)
    else:
        store.update_monetary(results, handed=list(taken))
    record_sales(w, results)
    # A customer whose events were all duplicates is judged too: the batch may
    # be re-read after a crash that came before its decisions were written,
    # and the claims keep whatever was already emitted from going out twice.
    return [r for r in results if not r.anonymous and (r.applied or r.duplicates or r.again)]


def reviews_of(r: Applied) -> list[Review]:
    """Decision points: after each order or premium view, and at the customer's last event."""
    out = []
    for mark in r.marks:
        state = dict(r.final)
        state.update({k: mark.get(k) for k in ("n", "m", "fo", "lo")})
        # only a premium view's mark speaks about the premium run
        state["pd"] = mark.get("pd")
        out.append(Review(r.subject, int(mark["ts"]), state, r.orders, r.final, is_last=False))
    last_ts = int(r.final.get("la") or 0)
    if not out or last_ts > out[-1].now:
        out.append(Review(r.subject, last_ts, dict(r.final), r.orders, r.final))
    else:
        out[-1].is_last = True
    return out


def judge(
    w: Worker, reviews: list[Review], available: dict[str, int | None] | None = None
) -> Decisions:
    """Rank, then decide (pure) each review; `available` is cart stock for sweeps."""
    out = Decisions()
    if not reviews:
        return out
    rules = w.rules
    positions, customers, total = w.store.monetary_positions(
        [int(v.state.get("m") or 0) for v in reviews]
    )
    for review, (below, equal) in zip(reviews, positions, strict=True):
        cid = review.customer_id
        lab = out.labels.get(cid) or labels_from(review.final_state)
        out.labels[cid] = lab
        rank = _rank_excluding_self(review, below, equal, customers, total)
        # A customer's clock never runs backwards: a late event is judged at
        # the latest time the customer was already judged at, not before it.
        now = max(review.now, lab.judged_at or 0)
        # ...on the facts as they stood then (a timer review in a catch-up batch
        # sees a state that already holds the batch's later orders)
        facts = as_of(facts_from(review.state, review.orders), now)
        lab.judged_at = now
        holdout = in_holdout(cid, rules.holdout_share)
        out.triggers.extend(
            decide(cid, lab, facts, rank, now, rules.segments, rules.tiers, rules.holdout_share)
        )
        final = review.final_state
        carts = _open_carts(final, lab)
        if review.timer_seen is not None:
            out.triggers.extend(_timed(w, cid, lab, facts, carts, available or {}, holdout))
            carts = _open_carts(final, lab)
        # at every order mark too, at the mark's own time, so what is scored and
        # labelled does not depend on batching or on which topic was read first
        out.triggers.extend(churn_step_at(w, cid, lab, facts, final, review.now, holdout))
        if review.is_last:
            held = _held_releases(final.get("hq"))
            if review.timer_seen is not None:
                # this sweep's settlement releases what is due now
                held = [q for q in held if q > w.clock.now]
            due = [
                next_review_ms(facts, now, rules.segments, rules.tiers),
                min((ca + rules.cart.abandoned_after_ms for ca, _ in carts), default=None),
                next_step_due(facts.first_order_ms, rules.journey_steps, lab.journey_done),
                next_churn_ms(lab, facts, rules.churn.horizon_ms),
                *held,
            ]
            pending = [t for t in due if t is not None]
            out.timers[cid] = (review.timer_seen, min(pending) if pending else None)

    return out


def _timed(
    w: Worker,
    cid: str,
    lab: CustomerLabels,
    facts: Any,
    carts: list[tuple[int, Any]],
    available: dict[str, int | None],
    holdout: bool,
) -> list[Trigger]:
    """Cart deadlines and journey steps that the watermark has made due."""
    rules, now = w.rules, w.clock.now
    out: list[Trigger] = []
    for last_activity, lines in carts:  # oldest first: the cooldown counts in order
        decided = decide_abandoned_cart(
            cid,
            lines,
            last_activity,
            lab.cart_decided_for,
            lab.cart_last_fired,
            lab.segment,
            available,
            now,
            rules.cart,
            holdout,
            w.timers_since,
        )
        if decided is None:
            break  # not due yet, nor are the later ones
        lab.cart_decided_for = decided.decided_for
        w.counters[f"cart:{decided.result}"] += 1
        if decided.trigger is not None:
            lab.cart_last_fired = decided.trigger.event_ts
            lab.abandoned_carts += 1
            out.append(decided.trigger)
    journey = decide_journey(
        cid,
        facts.first_order_ms,
        facts.orders,
        rules.journey_steps,
        lab.journey_done,
        now,
        holdout,
        w.timers_since,
    )
    if journey.done:
        lab.journey_done = (*lab.journey_done, *journey.done)
        w.counters["journey:cancelled"] += len(journey.cancelled)
        w.counters["journey:expired"] += len(journey.expired)
        out.extend(journey.triggers)
    return out


def due_cart_skus(states: dict[str, Any], w: Worker) -> list[str]:
    """SKUs of the carts whose deadline the watermark has passed (to read their stock)."""
    skus: list[str] = []
    for final, _ in states.values():
        for ca, lines in _open_carts(final, labels_from(final)):
            if ca + w.rules.cart.abandoned_after_ms <= w.clock.now:
                skus.extend(lines)
    return skus


def _open_carts(final: dict[str, Any], lab: CustomerLabels) -> list[tuple[int, Any]]:
    lapsed = final.get("lap")
    return open_carts(
        final.get("cart") or {},
        _int(final.get("ca")),
        lapsed if isinstance(lapsed, list) else [],
        lab.cart_decided_for,
        _int(final.get("alc")),
    )


def _held_releases(raw: Any) -> list[int]:
    if not raw:
        return []
    held = orjson.loads(raw)
    return [int(x["q"]) for x in held] if isinstance(held, list) else []


def _int(v: Any) -> int | None:
    return None if v is None else int(v)


def _rank_excluding_self(
    review: Review, below: int, equal: int, customers: int, total: int
) -> MonetaryRank:
    """The ranks were read with the customer's final M in the set; judge the mark's M."""
    final_in = int(review.final_state.get("n") or 0) >= 1
    final_m = int(review.final_state.get("m") or 0)
    n, m = int(review.state.get("n") or 0), int(review.state.get("m") or 0)
    if final_in:
        customers -= 1
        total -= final_m
        if final_m < m:
            below -= 1
        elif final_m == m:
            equal -= 1
    if n >= 1:
        customers += 1
        total += m
        equal += 1
    mean = total / customers if customers else 0.0
    return MonetaryRank(percentile_rank(below, equal, customers), mean, customers)
