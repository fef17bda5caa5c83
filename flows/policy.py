"""Settling a batch's decisions: claims, daily caps, quiet hours, uplift counters.

One round trip writes the labels and timers and settles every trigger (a Lua
call per customer, a SET NX per SKU/order trigger); a second writes the
counters that depend on those outcomes and, last, the resume offsets. What
comes back is the list of trigger records to emit now.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from flows.worker import Worker
from omnipulse import metrics
from operators.clock import ms_to_rfc3339
from operators.customer import CustomerLabels
from operators.policy import MARKETING_KINDS, local_day
from operators.triggers import Trigger
from state.ledger import ClaimItem, TriggerLedger


def record_of(t: Trigger) -> dict[str, Any]:
    """The trigger record as emitted, less `emitted_at` (stamped by the sink)."""
    rec = t.to_record(0)
    del rec["emitted_at"]
    rec["event_ts"] = ms_to_rfc3339(t.event_ts)
    return rec


def settle(
    w: Worker,
    labels: dict[str, CustomerLabels],
    timers: dict[str, tuple[int | None, int | None]],
    customer_triggers: Iterable[Trigger],
    other_triggers: Iterable[Trigger] = (),
    release_for: Iterable[str] = (),
) -> list[dict[str, Any]]:
    """Write decisions, settle triggers; returns the records to emit now."""
    rules, now = w.rules, w.clock.now
    items: dict[str, list[ClaimItem]] = defaultdict(list)
    for t in customer_triggers:
        marketing = t.kind in MARKETING_KINDS
        release = rules.quiet.release_ms(t.event_ts) if marketing and rules.quiet else None
        record = record_of(t)
        if release:
            record["held_until"] = ms_to_rfc3339(release)
        items[t.subject].append(
            ClaimItem(
                t.trigger_id,
                t.kind,
                t.event_ts,
                local_day(t.event_ts, rules.tz),
                marketing,
                t.holdout,
                release or 0,
                record,
            )
        )
        if release:
            # wake the customer up when the quiet hours end
            seen, nxt = timers.get(t.subject, (None, None))
            timers[t.subject] = (seen, release if nxt is None else min(nxt, release))
    for cid in release_for:
        items.setdefault(cid, [])
    others = list(other_triggers)

    pipe = w.store.pipeline()
    w.store.queue_commit(pipe, labels, timers, {})
    updates, w.churn_updates = w.churn_updates, {}
    _queue_labels(w, pipe, updates)
    swaps = {
        cid: w.store.queue_swap(pipe, cid, "cx", u.expected, u.new)
        for cid, u in updates.items()
        if u.expected != u.new
    }
    slots = {}
    for cid, its in items.items():
        its.sort(key=lambda i: (i.event_ts, i.kind, i.trigger_id))
        slots[cid] = w.ledger.queue_customer(pipe, cid, its, now)
    other_slots = [w.ledger.queue_other(pipe, t.trigger_id) for t in others]
    replies = w.store.execute(pipe, "settle triggers") if len(pipe) else []

    _learn(w, updates, swaps, replies)
    out: list[dict[str, Any]] = []
    for cid, slot in slots.items():
        result = TriggerLedger.settlement(replies[slot])
        for it, outcome in zip(items[cid], result.outcomes, strict=True):
            group = "holdout" if it.holdout else "treated"
            if outcome == "capped":
                w.counters[f"suppressed:{it.kind}"] += 1
                continue
            if outcome == "dup":
                continue
            if it.marketing:
                w.counters[f"uplift:{it.kind}:{group}:sent"] += 1
            if outcome == "held":
                w.counters[f"held:{it.kind}"] += 1
            else:
                out.append(it.record)
        for kind, holdout in result.conversions:
            group = "holdout" if holdout else "treated"
            w.counters[f"uplift:{kind}:{group}:converted"] += 1
        out.extend(result.released)
    for t, slot in zip(others, other_slots, strict=True):
        if replies[slot]:
            out.append(record_of(t))
    for rec in out:
        w.counters[f"emitted:{rec['kind']}"] += 1
    flush(w)
    return out


def _queue_labels(w: Worker, pipe: Any, updates: dict[str, Any]) -> None:
    """Queue the decided labels for the learner, ahead of the swaps that take their vectors.

    A label's id is the customer and the time of the score it labels. If the
    swap then fails (another worker took the vector first, and queued the same
    id) or the batch is read again after a crash, the learner sees the id twice
    and learns it once.
    """
    assert w.model_store is not None
    for cid, u in updates.items():
        for t, x, y, base, at in u.learn:
            w.model_store.queue_label(pipe, f"{cid}|{t}", x, y, base, at)


def _learn(w: Worker, updates: dict[str, Any], swaps: dict[str, int], replies: list[Any]) -> None:
    """Count the labels whose pending vector this worker took."""
    for cid, u in updates.items():
        if not u.learn:
            continue
        if cid in swaps and not replies[swaps[cid]]:
            w.counters["churn:label_taken_elsewhere"] += 1
            continue
        for _, _, y, _, _ in u.learn:
            w.counters[f"churn:labels_{'churned' if y else 'retained'}"] += 1


def sync_model(w: Worker) -> None:
    """Learn what the batch queued (if this process is the learner), or reload the
    learner's newer snapshot: the next batch scores with it, as a lone worker would."""
    if w.model is not None and w.model_store is not None:
        w.model.sync(w.model_store, remember_ms=w.dedup_ttl_ms)


def flush(w: Worker) -> None:
    """The clock, counters, then the resume offsets: written once the batch's state is in."""
    counters, offsets = w.take_counters(), w.take_offsets()
    if not counters and not offsets and w.clock.max_event_ms <= w.persisted_clock_ms:
        return
    pipe = w.store.pipeline()
    w.store.queue_clock(pipe, w.clock.max_event_ms, w.clock.highest_ms)
    w.persisted_clock_ms = w.clock.max_event_ms
    w.store.queue_commit(pipe, {}, {}, counters, offsets)
    w.store.execute(pipe, "commit counters and offsets")
    metrics.count_batch(counters)
    if w.committer is not None and offsets:
        # "clicks#0" -> "<prefix>clicks#0": the full topic name, same partition
        prefixed = w.settings.kafka.topic
        w.committer.commit({prefixed(k): off for k, off in offsets.items()})
