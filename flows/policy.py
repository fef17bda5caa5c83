"""Settling a batch's decisions: claims, daily caps, quiet hours, uplift counters.

One round trip writes the labels and timers and settles every trigger (a Lua
call per customer, a SET NX per SKU/order trigger), preceded by the
settlement's outbox entry (`state.outbox`); a second writes the batch's
counters and, last, the resume offsets. What comes back is the list of trigger
records to emit now; a `Receipt` for the sink goes to `w.receipts`. The
counters that describe the settlement's outcome (emitted, suppressed, held,
uplift exposures) travel with the receipt and are added when delivery is
confirmed, or by the start-up recovery, so they count each trigger once even
when a crash makes a batch run twice.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from typing import Any

import orjson

from common import metrics
from flows.worker import Worker
from operators.clock import ms_to_rfc3339
from operators.customer import CustomerLabels
from operators.policy import MARKETING_KINDS, local_day
from operators.triggers import Trigger
from state.ledger import ClaimItem, TriggerLedger
from state.outbox import Receipt, emission_counters


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
    token = w.next_token() if items or others else None

    # One transaction: a crash leaves all of the settlement or none of it.
    pipe = w.client.pipeline(transaction=True)
    if token is not None:
        assert w.outbox is not None
        w.outbox.queue_pending(
            pipe,
            token,
            w.writer,
            list(items),
            [(t.trigger_id, orjson.dumps(record_of(t))) for t in others],
        )
    updates, w.churn_updates = w.churn_updates, {}
    exact = w.settings.engine.ordered_input
    # labels go to the learner's queue in this transaction, ahead of the swaps
    # that take their vectors (see `_queue_labels`, `sync_model`)
    _queue_labels(w, pipe, updates)
    if exact:
        # one reader takes every vector it read: count the labels with the
        # transaction that queues them, so a crash cannot lose the count
        _learn(w, updates, {}, [])
    # what the decisions counted goes with them; input counters go with the offsets
    decided = _decision_counters(w)
    w.store.queue_commit(pipe, labels, timers, decided)
    swaps = {
        cid: w.store.queue_swap(pipe, cid, "cx", u.expected, u.new)
        for cid, u in updates.items()
        if u.expected != u.new
    }
    slots = {}
    for cid, its in items.items():
        its.sort(key=lambda i: (i.event_ts, i.kind, i.trigger_id))
        slots[cid] = w.ledger.queue_customer(pipe, cid, its, now, token or "")
    other_slots = [w.ledger.queue_other(pipe, t.trigger_id, token or "") for t in others]
    # With ordered input the batch commits in this same transaction (offsets,
    # clock, counters): a crash leaves the batch wholly done or to be read again.
    committed = _queue_flush(w, pipe) if exact else None
    replies = w.store.execute(pipe, "settle triggers") if len(pipe) else []

    if not exact:
        _learn(w, updates, swaps, replies)
    out: list[dict[str, Any]] = []
    counters: Counter[str] = Counter()
    with_entry: list[str] = []
    for cid, slot in slots.items():
        result = TriggerLedger.settlement(replies[slot])
        for it, outcome in zip(items[cid], result.outcomes, strict=True):
            if outcome == "emit":
                out.append(it.record)
        out.extend(result.released)
        counters.update(result.counters)
        if result.outbox:
            with_entry.append(cid)
    for t, slot in zip(others, other_slots, strict=True):
        if replies[slot]:
            out.append(record_of(t))
    counters.update(emission_counters(out))
    if token is not None:
        if out or with_entry or counters:
            w.receipts.append(Receipt(token, w.writer, with_entry, dict(counters)))
        else:
            w.dropped.append(token)
    metrics.count_batch(decided)
    if exact:
        if committed:
            _committed(w, *committed)
    else:
        flush(w)
    return out


# Counters that describe the input read: written with the resume offsets (flush).
INPUT_COUNTERS = (
    "events:",
    "rejected:",
    "late",
    "duplicates",
    "inventory:duplicate_",
    "locations:",
)


def _decision_counters(w: Worker) -> dict[str, int]:
    """Take the counters of decisions made so far (all but the input counters)."""
    out = {k: n for k, n in w.counters.items() if n and not k.startswith(INPUT_COUNTERS)}
    for k in out:
        del w.counters[k]
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
        # Ordered input has one reader: it is the learner, without waiting for a
        # lease a killed run may still hold, so a restart learns as a clean run.
        ordered = w.settings.engine.ordered_input
        w.model.sync(w.model_store, remember_ms=w.dedup_ttl_ms, force=ordered)


def flush(w: Worker) -> None:
    """The clock, counters, then the resume offsets: written once the batch's state is in."""
    pipe = w.client.pipeline(transaction=True)
    queued = _queue_flush(w, pipe)
    if queued is None:
        return
    w.store.execute(pipe, "commit counters and offsets")
    _committed(w, *queued)


def _queue_flush(w: Worker, pipe: Any) -> tuple[dict[str, int], dict[str, int]] | None:
    """Queue what `flush` writes: (offsets, counters); None when there is nothing."""
    counters, offsets = w.take_counters(), w.take_offsets()
    dropped, w.dropped = w.dropped, []
    memo, w.memo = w.memo, ""
    swept, w.sweep_mark = w.sweep_mark, ""
    sales, w.pending_sales = w.pending_sales, []
    if (
        not counters
        and not sales
        and not w.handed
        and not offsets
        and not dropped
        and not memo
        and not swept
        and w.clock.max_event_ms <= w.persisted_clock_ms
        and (w.cluster is None or w.seq <= w.seq_written)
    ):
        return None
    if dropped and w.outbox is not None:
        w.outbox.queue_drop(pipe, dropped)
    if memo:
        w.inventory.forget(pipe, memo)
    if swept:
        w.store.queue_swept(pipe, swept, w.cluster.index if w.cluster else 0)
    if sales and w.sales is not None:
        for tallies in sales:
            w.sales.queue_add(pipe, tallies)
    for key in w.replies:
        pipe.delete(key)  # the batch is committed: its apply replies are not needed
    w.replies = []
    if w.handed:
        w.store.queue_handed(pipe, w.handed)
        w.handed = []
    w.store.queue_clock(pipe, w.clock.max_event_ms, w.clock.highest_ms)
    w.persisted_clock_ms = w.clock.max_event_ms
    moved = {
        part: ms
        for part, ms in w.clock.partition_max.items()
        if ms and w.persisted_partitions.get(part) != ms
    }
    if moved:
        w.store.queue_partition_clocks(pipe, moved)
        w.persisted_partitions.update(moved)
    if w.cluster is not None:
        # ordered input: the worker's resume point names the batch it ends
        w.store.queue_commit(pipe, {}, {}, counters)
        w.cluster.queue_progress(pipe, w.seq, offsets, w.clock.ended_at)
        w.seq_written = w.seq
    else:
        w.store.queue_commit(pipe, {}, {}, counters, offsets)
    return offsets, counters


def _committed(w: Worker, offsets: dict[str, int], counters: dict[str, int]) -> None:
    """After the commit: count it in the metrics, tell the consumer group (lag tools)."""
    metrics.count_batch(counters)
    if w.committer is not None and offsets:
        if w.cluster is not None and w.cluster.count > 1:
            # shown to lag tools once every worker has committed the batch
            # (by worker 0, at the next batch's start: see flows.cluster)
            if w.cluster.index == 0:
                w.group_pending.update(offsets)
            return
        # "clicks#0" -> "<prefix>clicks#0": the full topic name, same partition
        prefixed = w.settings.kafka.topic
        w.committer.commit({prefixed(k): off for k, off in offsets.items()})
