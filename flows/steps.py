"""The engine's per-batch step: parse, apply, decide, settle, emit.

A batch costs a fixed number of pipelined Redis round trips whatever its size
(see `flows.customers`, `flows.commerce` and `flows.policy` for the rounds);
the decisions between them are pure functions from `operators`. After the
batch's own events, a timer sweep takes the decisions that time alone made
due (segment boundaries, cart deadlines, journey steps, quiet hours' end).
"""

from __future__ import annotations

import base64
import hashlib
import threading
from collections.abc import Sequence
from typing import Any

import orjson

from connectors.events import Event, Limits, Rejected, parse_record
from connectors.kafka_io import Confirm, OutMessage, PartitionMark, Record, Tick
from flows.commerce import apply_inventory, bopis, cart_availability
from flows.customers import Review, apply_customers, due_cart_skus, judge, reviews_of
from flows.policy import flush, settle, sync_model
from flows.worker import Worker, wall_ms
from omnipulse import metrics
from omnipulse.settings import DLQ_TOPIC, Settings
from operators.clock import ms_to_rfc3339
from state.model import SharedChurnModel

# Live mode: input quiet this long lets the wall clock move event time on. With
# the input's idle ticks (connectors.kafka_io TICK_MS) it bounds how late a
# timer fires when no traffic moves the watermark (SPEC §8: <= 1 s).
IDLE_ADVANCE_MS = 200
SWEEP_LIMIT = 2000
DLQ_RAW_LIMIT = 65_536
SUBJECT_KEYS = ("customer_id", "order_id", "sku", "location_id")


class EngineStep:
    """The `flat_map_batch` mapper of the engine flow."""

    def __init__(
        self, settings: Settings, *, redis_url: str, live: bool, bootstrap: str | None = None
    ) -> None:
        self.settings = settings
        self.redis_url = redis_url
        self.live = live
        self.bootstrap = bootstrap  # for consumer-group commits; None: no commits
        self._local = threading.local()
        self._model: SharedChurnModel | None = None  # one per process, for every thread
        self._connecting = threading.Lock()
        # Ids are replaced right after parsing: nothing downstream (Redis,
        # trigger topics, metrics) ever sees a raw customer or anonymous id.
        self._pseudonym = settings.privacy.pseudonymizer()

    # Built lazily in each worker thread: never at import or in __init__.
    def worker(self) -> Worker:
        w = getattr(self._local, "worker", None)
        if w is None:
            with self._connecting:
                w = Worker.connect(
                    self.settings,
                    self.redis_url,
                    live=self.live,
                    bootstrap=self.bootstrap,
                    model=self._model,
                )
                self._model = w.model
                metrics.STATE.model = self.model_metrics
            self._local.worker = w
        return w

    def model_metrics(self) -> dict[str, Any] | None:
        """The process's churn model figures, for /metrics (None before it is loaded)."""
        return None if self._model is None else self._model.metrics()

    def __call__(self, items: list[Record | Tick | PartitionMark]) -> list[OutMessage | Confirm]:
        return self.process(items)

    def process(self, items: Sequence[Record | Tick | PartitionMark]) -> list[OutMessage | Confirm]:
        """The batch's messages, then its receipts for the sink to confirm once delivered."""
        w = self.worker()
        wall = wall_ms()
        limits = Limits(
            now_ms=wall,
            max_future_ms=int(w.settings.engine.max_future.total_seconds() * 1000),
            min_ts_ms=w.settings.engine.min_event_time,
            max_value_bytes=w.settings.engine.max_value_bytes,
        )
        out: list[OutMessage | Confirm] = []
        events: list[Event] = []
        # Ordered input sweeps what the previous batch made due before this
        # batch moves the clock: the same order of work, but the sweep and the
        # batch's events each commit whole, so a crash between them leaves a
        # batch that is simply read again (see README, "Crash recovery").
        ordered = w.settings.engine.ordered_input
        swept = []
        if ordered:
            w.batch = batch_key(items)
            # the pass is done once per batch, also when the batch is read again
            if not w.batch or w.store.swept() != w.batch:
                # labels of the last batch that a killed run queued but did not
                # learn: learned before this batch scores anyone, as a clean run
                # learns them at the end of that batch (once this batch's sweep
                # is done, the queue holds its labels: those wait for the end)
                sync_model(w)
                swept = sweep(w)
        w.clock.settle(wall)  # a caught-up partition's grace may have run out
        per_topic: dict[str, int] = {}
        ingest = wall
        for item in items:
            if isinstance(item, Tick):
                if self.live and w.settings.engine.idle_advance:
                    w.clock.advance_idle(item.wall_ms, IDLE_ADVANCE_MS)
                continue
            if isinstance(item, PartitionMark):
                if item.at_end:
                    w.clock.caught_up(item.part, wall)
                else:
                    w.clock.opened(item.part)
                continue
            part = f"{item.topic}#{item.partition}"
            w.offsets[part] = item.offset + 1
            if not per_topic:
                ingest = item.read_at_ms
            per_topic[item.topic] = per_topic.get(item.topic, 0) + 1
            parsed = parse_record(
                item.topic,
                item.value,
                limits,
                partition=item.partition,
                offset=item.offset,
                key=item.key,
            )
            if isinstance(parsed, Rejected):
                out.append(self._dead_letter(w, parsed, wall))
            else:
                if self._pseudonym is not None:
                    parsed.customer_id = self._pseudonym.optional(parsed.customer_id)
                    parsed.anonymous_id = self._pseudonym.optional(parsed.anonymous_id)
                w.counters[f"events:{parsed.topic}"] += 1
                if parsed.topic != "locations":  # reference data has no event time
                    w.counters["late"] += w.clock.observe(parsed.ts, wall, part)
                events.append(parsed)
        caused = process_events(w, events, wall)
        # ordered input swept first, before this batch moved the clock; a
        # catch-up run drains every due review (see `sweep`)
        timed = swept if ordered else sweep(w, drain=not self.live)
        records = [*swept, *caused] if ordered else [*caused, *timed]
        sync_model(w)  # once per batch, after the sweep: its labels sort in with the rest
        out.extend(self.message(rec, w) for rec in records)
        out.extend(Confirm(r) for r in w.take_receipts())
        done = wall_ms()
        metrics.count_records(per_topic, sum(per_topic.values()))
        metrics.observe_watermark(done, w.clock.now)
        if records:
            metrics.observe_triggers(caused, done, ingest_ms=ingest, timers=False)
            metrics.observe_triggers(timed, done, ingest_ms=ingest, timers=True)
        return out

    def _dead_letter(self, w: Worker, r: Rejected, wall: int) -> OutMessage:
        w.counters[f"rejected:{r.code}"] += 1
        raw = r.raw or b""
        # A dead letter must itself fit in a Kafka message: keep a prefix of
        # a huge value and say how big it was.
        record = {
            "reason": r.reason,
            "code": r.code,
            "source_topic": w.settings.kafka.topic(r.topic),
            "partition": r.partition,
            "offset": r.offset,
            "raw_value": base64.b64encode(raw[:DLQ_RAW_LIMIT]).decode(),
            "raw_size": len(raw),
            "raw_truncated": len(raw) > DLQ_RAW_LIMIT,
            "seen_at": ms_to_rfc3339(wall),
        }
        return OutMessage(w.settings.kafka.topic(DLQ_TOPIC), r.key, orjson.dumps(record))

    def message(self, record: dict[str, Any], w: Worker) -> OutMessage:
        """A trigger record as a Kafka message, stamped with its emission time."""
        return trigger_message(w.settings, record)


def trigger_message(settings: Settings, record: dict[str, Any]) -> OutMessage:
    """A trigger record as a Kafka message, stamped with its emission time."""
    record["emitted_at"] = ms_to_rfc3339(wall_ms())
    key = next((record[k] for k in SUBJECT_KEYS if record.get(k) is not None), None)
    return OutMessage(
        settings.kafka.trigger_topic(record["kind"]),
        key.encode() if key is not None else None,
        orjson.dumps(record),
    )


def process_events(w: Worker, events: list[Event], wall: int) -> list[dict[str, Any]]:
    """Apply a batch's valid events and settle what they decide."""
    if not events:
        flush(w)
        return []
    applied = apply_customers(w, events, wall)
    commerce = apply_inventory(w, events)
    finals = {r.subject: r.final for r in applied}
    customer_triggers = bopis(w, events, finals, commerce.stock)
    reviews = [v for r in applied for v in reviews_of(r)]
    decided = judge(w, reviews)
    return settle(
        w,
        decided.labels,
        decided.timers,
        [*decided.triggers, *customer_triggers],
        commerce.triggers,
    )


def sweep(w: Worker, drain: bool = False) -> list[dict[str, Any]]:
    """Time-driven reviews that the watermark has made due.

    Live, one bounded pass per batch keeps latency flat. A catch-up run drains
    them all: otherwise the reviews fall behind the events, and what they
    decide (churn labels at the horizon, above all) comes out of time order.
    """
    out, due = sweep_once(w)
    while drain and due >= SWEEP_LIMIT:
        more, due = sweep_once(w)
        out.extend(more)
    return out


def sweep_once(w: Worker) -> tuple[list[dict[str, Any]], int]:
    """One pass over due reviews; returns the records to emit and how many were due."""
    now = w.clock.now
    shards = range(w.settings.engine.timer_shards)
    due = w.store.due_reviews(shards, now, SWEEP_LIMIT)
    if not due:
        return [], 0
    states = w.store.read([cid for cid, _ in due])
    gone = {cid: (at, None) for cid, at in due if cid not in states}
    if gone:
        # The profile is gone (deleted by an operator): drop its timer.
        settle(w, {}, gone, [])
    reviews = []
    for cid, at in due:
        if cid in states:
            final, orders = states[cid]
            reviews.append(Review(cid, at, final, orders, final, timer_seen=at))
    skus = due_cart_skus(states, w)
    available = cart_availability(w, skus) if skus else {}
    decided = judge(w, reviews, available)
    holding = [cid for cid, (final, _) in states.items() if final.get("hq")]
    w.sweep_mark = w.batch  # committed with this settlement: the pass is done
    records = settle(w, decided.labels, decided.timers, decided.triggers, release_for=holding)
    return records, len(due)


def batch_key(items: Sequence[Record | Tick | PartitionMark]) -> str:
    """An id of an ordered-input batch: the offsets it ends at ("" without records).

    The same batch, read again after a restart, gets the same id.
    """
    ends: dict[str, int] = {}
    for item in items:
        if isinstance(item, Record):
            part = f"{item.topic}#{item.partition}"
            ends[part] = max(ends.get(part, 0), item.offset + 1)
    if not ends:
        return ""
    text = ",".join(f"{k}@{v}" for k, v in sorted(ends.items()))
    return hashlib.sha1(text.encode()).hexdigest()[:20]
