"""Churn in the batch: learn delayed labels, score, emit `churn_risk` (SPEC §5.8).

Each customer has at most one pending scored vector (`cx` in the profile). It
is labelled 0 when the customer orders again within the horizon, 1 when the
watermark passes the horizon without an order, learned once (predict before
learn, so the model's live AUC is progressive), and cleared with the same
write that stores the labels. The model's snapshot goes into that same
pipeline, so a restart resumes with exactly the labels the store has consumed.

A customer with orders is scored at each new order and, while their last order
is under a year old, every 30 days of event time (the periodic review that lets
the seed heuristic, which needs a gap, ever fire).
"""

from __future__ import annotations

from typing import Any

import orjson

from flows.worker import ChurnUpdate, Worker
from operators.churn import (
    RETAINED,
    ChurnInputs,
    Pending,
    features,
    heuristic,
    heuristic_score,
    label_at_watermark,
    label_on_order,
)
from operators.clock import DAY_MS
from operators.customer import CustomerLabels, Facts, as_of
from operators.policy import local_day
from operators.triggers import Trigger

REVIEW_EVERY_MS = 30 * DAY_MS
ACTIVE_FOR_MS = 365 * DAY_MS
# Due churn reviews taken before one decision point: a year of 30-day reviews
# and their horizons, with room to spare (each step moves the next one later).
MAX_CATCH_UP = 64


def churn_step(
    w: Worker,
    cid: str,
    lab: CustomerLabels,
    facts: Facts,
    state: dict[str, Any],
    now: int,
    holdout: bool,
) -> list[Trigger]:
    """Learn the pending label if it is known, score when due; the triggers."""
    rules, model = w.rules.churn, w.model
    assert model is not None, "Worker.connect loads the churn model"
    update = w.churn_updates.setdefault(cid, ChurnUpdate(lab.churn_pending, lab.churn_pending))
    pending = orjson.loads(lab.churn_pending) if lab.churn_pending else None
    if pending is not None:
        # judged at the review's event time, never with orders from after it,
        # so a catch-up run that already holds later orders labels as live did
        p = Pending(cid, int(pending["t"]), pending["x"])
        h = rules.horizon_ms
        returns = [
            ts for ts, _ in facts.orders if ts <= now and label_on_order(p, ts, h) is not None
        ]
        y = RETAINED if returns else label_at_watermark(p, now, h)
        if y is not None:
            # when the label became known (the return, or the horizon): the
            # learner learns a batch's labels in that order, as a live run would
            at = min(returns) if returns else p.scored_at + h
            # queued for the learner in settle, with the swap that takes the vector
            update.learn.append((p.scored_at, pending["x"], y, pending.get("b"), at))
            lab.churn_pending = update.new = pending = None
    # `facts` are as of the review (operators.customer.as_of); a clamped
    # judgement time may be later than the review, so cut again at `now`
    facts = as_of(facts, now)
    # An order at the same instant but later in the batch is not in the mark's
    # count: keep as many orders as the mark counts, the earliest first.
    past = sorted(o for o in facts.orders if o[0] <= now)[: facts.frequency]
    frequency, monetary, last_order = facts.frequency, facts.monetary_cents, facts.last_order_ms
    if frequency < 1 or last_order is None:
        return []
    new_order = lab.churn_scored_at is None or last_order > lab.churn_scored_at
    periodic = (
        lab.churn_scored_at is not None
        and now >= lab.churn_scored_at + REVIEW_EVERY_MS
        and now - last_order <= ACTIVE_FOR_MS
    )
    if not (new_order or periodic):
        return []
    # the customer as of `now`: the mark's F/M/last order, the labels just
    # judged, orders up to now (a catch-up batch already holds later ones);
    # the rings and the channels' first use are cut at `now` by `features`
    profile_now = {
        **state,
        "n": frequency,
        "m": monetary,
        "lo": last_order,
        "s": lab.segment,
        "t": lab.tier,
    }
    inputs = ChurnInputs.from_profile(profile_now, past, abandoned_carts=lab.abandoned_carts)
    x = features(inputs, now, today=local_day(now, w.rules.tz), window_days=rules.window_days)
    score = model.predict_one(x)
    lab.churn_score, lab.churn_scored_at = score, now
    base = heuristic_score(x, rules.interval_increase, rules.activity_drop)
    if pending is None:
        lab.churn_pending = update.new = orjson.dumps({"t": now, "x": x, "b": base}).decode()
    out = []
    if score >= rules.threshold:
        out.append(_trigger(w, cid, "model", f"model|{now}", now, score, x, holdout))
    if heuristic(x, rules.interval_increase, rules.activity_drop):
        cause = f"heuristic|{last_order}"  # once per gap since the last order
        out.append(_trigger(w, cid, "interval_and_activity_drop", cause, now, score, x, holdout))
    return out


def churn_step_at(
    w: Worker,
    cid: str,
    lab: CustomerLabels,
    facts: Facts,
    state: dict[str, Any],
    now: int,
    holdout: bool,
) -> list[Trigger]:
    """`churn_step` at `now`, after the reviews, horizons and orders that came before it.

    A catch-up batch can hold a customer's order from after a review was due
    but before the timer sweep reached it; the review would then find a newer
    score and be skipped, so which scoring points exist (and which labels are
    learned) would depend on batching. Taking the due ones first, on the facts
    as they stood then, makes them the same as in a live run.
    """
    out: list[Trigger] = []
    # Orders not scored yet: each has its own decision point, normally judged
    # at its mark. A batch read again after a crash between its apply and its
    # settle has no marks (its events are duplicates by then) and is judged at
    # the customer's last event only; scoring the orders here keeps the same
    # scoring points, and so the same labels, as a run without the crash.
    since = lab.churn_scored_at
    unscored = sorted({ts for ts, _ in facts.orders if (since is None or ts > since) and ts < now})
    h = w.rules.churn.horizon_ms
    for _ in range(MAX_CATCH_UP + len(unscored)):
        before = as_of(facts, (unscored[0] if unscored else now) - 1)
        due = next_churn_ms(lab, before, h)
        if due is not None and due < (unscored[0] if unscored else now):
            out.extend(churn_step(w, cid, lab, facts, state, due, holdout))
        elif unscored:
            out.extend(churn_step(w, cid, lab, facts, state, unscored.pop(0), holdout))
        else:
            break
    out.extend(churn_step(w, cid, lab, facts, state, now, holdout))
    return out


def next_churn_ms(lab: CustomerLabels, facts: Facts, horizon_ms: int) -> int | None:
    """When time alone next matters: a pending label's horizon, or the next review."""
    due = []
    if lab.churn_pending:
        due.append(int(orjson.loads(lab.churn_pending)["t"]) + horizon_ms + 1)
    if lab.churn_scored_at is not None and facts.last_order_ms is not None:
        nxt = lab.churn_scored_at + REVIEW_EVERY_MS
        if nxt - facts.last_order_ms <= ACTIVE_FOR_MS:
            due.append(nxt)
    return min(due) if due else None


def _trigger(
    w: Worker,
    cid: str,
    rule: str,
    cause: str,
    now: int,
    score: float,
    x: dict[str, float],
    holdout: bool,
) -> Trigger:
    assert w.model is not None
    top = w.model.top_features(x, 3)
    return Trigger(
        kind="churn_risk",
        subject_key="customer_id",
        subject=cid,
        cause=cause,
        event_ts=now,
        reason={
            "rule": rule,
            "score": round(score, 4),
            "threshold": w.rules.churn.threshold,
            "gap_ratio": round(x["gap_ratio"], 3),
            "interactions_last_30": x["interactions_last_30"],
            "interactions_prev_30": x["interactions_prev_30"],
            "top_features": [{"feature": n, "contribution": v} for n, v in top],
        },
        payload={"score": round(score, 4), "top_features": [n for n, _ in top]},
        holdout=holdout,
    )
