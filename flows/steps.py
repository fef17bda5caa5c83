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
from dataclasses import dataclass, field
from typing import Any

import orjson

from common import metrics
from common.settings import DLQ_TOPIC, Settings
from connectors.events import Event, Limits, Rejected, parse_record
from connectors.kafka_io import SHUTDOWN, Confirm, OutMessage, PartitionMark, Record, Tick
from connectors.ordered import BatchEnd
from flows.cluster import Share, apply_share, begin, judge_and_settle, owner_subjects
from flows.commerce import apply_inventory, bopis, cart_availability
from flows.customers import Review, apply_customers, due_cart_skus, judge
from flows.policy import flush, settle, sync_model
from flows.worker import PerThread, Worker, wall_ms
from operators.clock import ms_to_rfc3339
from state.cluster import Cluster
from state.model import SharedChurnModel

Item = Record | Tick | PartitionMark

# Live mode: input quiet this long lets the wall clock move event time on. With
# the input's idle ticks (connectors.kafka_io TICK_MS) it bounds how late a
# timer fires when no traffic moves the watermark (SPEC §8: <= 1 s).
IDLE_ADVANCE_MS = 200
SWEEP_LIMIT = 2000
DLQ_RAW_LIMIT = 65_536
SUBJECT_KEYS = ("customer_id", "order_id", "sku", "location_id")
# Ordered input on several workers: how long a worker waits for the others at
# a phase of a batch before it fails with the names of the missing workers.
BARRIER_TIMEOUT_S = 300.0


@dataclass(slots=True)
class Read:
    """What a batch read: records per topic, and when its first record was read."""

    ingest_ms: int
    per_topic: dict[str, int] = field(default_factory=dict)

    def count(self, item: Record) -> None:
        if not self.per_topic:
            self.ingest_ms = item.read_at_ms
        self.per_topic[item.topic] = self.per_topic.get(item.topic, 0) + 1


class EngineStep:
    """The `flat_map_batch` mapper of the engine flow."""

    def __init__(
        self, settings: Settings, *, redis_url: str, live: bool, bootstrap: str | None = None
    ) -> None:
        self.settings = settings
        self.redis_url = redis_url
        self.live = live
        self.bootstrap = bootstrap  # for consumer-group commits; None: no commits
        self._workers: PerThread[Worker] = PerThread()
        self._model: SharedChurnModel | None = None  # one per process, for every thread
        self._connecting = threading.Lock()
        self._pseudonym = settings.privacy.pseudonymizer()

    # Built lazily in each worker thread: never at import or in __init__.
    def worker(self) -> Worker:
        w = self._workers.get()
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
            self._workers.set(w)
        return w

    def model_metrics(self) -> dict[str, Any] | None:
        """The process's churn model figures, for /metrics (None before it is loaded)."""
        return None if self._model is None else self._model.metrics()

    def __call__(self, items: list[Item]) -> list[OutMessage | Confirm]:
        return self.process(items)

    def process(
        self, items: Sequence[Item], end: BatchEnd | None = None
    ) -> list[OutMessage | Confirm]:
        """The batch's messages, then its receipts for the sink to confirm once delivered.

        With ordered input, `end` names the batch and this worker's place among
        the others (one worker when None).
        """
        w = self.worker()
        wall = wall_ms()
        if w.settings.engine.ordered_input:
            end = end or BatchEnd()
            # the cut's wall time: every worker rejects the same events as too far ahead
            return self._ordered(w, items, end, end.wall_ms or wall)
        w.clock.settle(wall)  # a caught-up partition's grace may have run out
        out, events, read = self._read(w, items, wall, Share(None, {}))
        caused = process_events(w, events, wall)
        # a catch-up run drains every due review (see `sweep`)
        timed = sweep(w, drain=not self.live)
        sync_model(w)  # once per batch, after the sweep: its labels sort in with the rest
        return self._emit(w, out, caused, timed, read)

    def _ordered(
        self, w: Worker, items: Sequence[Item], end: BatchEnd, wall: int
    ) -> list[OutMessage | Confirm]:
        """An ordered batch, in the phases of `flows.cluster`.

        What the previous batch made due is swept before this batch moves the
        clock: the sweep and the batch's events each commit whole, so a crash
        between them leaves a batch that is simply read again (README, "Crash
        recovery").
        """
        if w.cluster is None:
            w.cluster = Cluster(
                w.client,
                w.store.keys,
                end.index,
                end.count,
                timeout_s=BARRIER_TIMEOUT_S,
                stop=SHUTDOWN.is_set,
            )
            w.seq = w.seq_written = end.seq - 1  # the resume point it started from
        w.batch = batch_key(items)
        timed = sweep(w) if begin(w, end) else []
        limits = batch_limits(w, wall)
        parsed = [self._parse(item, limits) for item in items]
        everyone = [p for p in parsed if isinstance(p, Event)]
        # who is stitched to whom, read before any worker stitches this batch's visitors
        share = Share(w.cluster, owner_subjects(w, everyone))
        w.cluster.arrive_and_wait(end.seq, "swept")
        w.clock.settle(wall)
        out, mine, read = self._read(w, items, wall, share, parsed)
        # the commit that settles the batch's events also moves the resume point
        # past it (not the sweep's, made before the batch's offsets were read)
        w.seq = end.seq
        caused = apply_share(w, mine, everyone, wall, end)
        if w.seq > w.seq_written:
            flush(w)  # a batch with nothing to settle still moves the resume point
        return self._emit(w, out, timed, caused, read)

    def _parse(self, item: Item, limits: Limits) -> Event | Rejected | None:
        """A record parsed, its ids replaced by pseudonyms (None for ticks and marks)."""
        if not isinstance(item, Record):
            return None
        parsed = parse_record(
            item.topic,
            item.value,
            limits,
            partition=item.partition,
            offset=item.offset,
            key=item.key,
        )
        if isinstance(parsed, Event) and self._pseudonym is not None:
            # Ids are replaced right after parsing: nothing downstream (Redis,
            # trigger topics, metrics) ever sees a raw customer or anonymous id.
            parsed.customer_id = self._pseudonym.optional(parsed.customer_id)
            parsed.anonymous_id = self._pseudonym.optional(parsed.anonymous_id)
        return parsed

    def _read(
        self,
        w: Worker,
        items: Sequence[Item],
        wall: int,
        share: Share,
        parsed: Sequence[Event | Rejected | None] | None = None,
    ) -> tuple[list[OutMessage | Confirm], list[Event], Read]:
        """Move the clock and offsets over the batch; returns (dead letters, this
        worker's valid events, what was read). Every worker's clock sees every
        event; counters and dead letters are the share's."""
        out: list[OutMessage | Confirm] = []
        events: list[Event] = []
        read = Read(ingest_ms=wall)
        limits = batch_limits(w, wall)
        for i, item in enumerate(items):
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
            p = parsed[i] if parsed is not None else self._parse(item, limits)
            if isinstance(p, Rejected):
                if share.first:
                    read.count(item)
                    out.append(self._dead_letter(w, p, wall))
                continue
            assert p is not None
            # reference data has no event time
            late = p.topic != "locations" and w.clock.observe(p.ts, wall, part)
            if share.mine(p):
                read.count(item)
                w.counters[f"events:{p.topic}"] += 1
                w.counters["late"] += late
                events.append(p)
        return out, events, read

    def _emit(
        self,
        w: Worker,
        out: list[OutMessage | Confirm],
        first: list[dict[str, Any]],
        then: list[dict[str, Any]],
        read: Read,
    ) -> list[OutMessage | Confirm]:
        """Dead letters, then triggers in the order decided, then the receipts."""
        out.extend(self.message(rec, w) for rec in [*first, *then])
        out.extend(Confirm(r) for r in w.take_receipts())
        done = wall_ms()
        metrics.count_records(read.per_topic, sum(read.per_topic.values()))
        metrics.observe_watermark(done, w.clock.now)
        ordered = w.settings.engine.ordered_input
        caused, timed = (then, first) if ordered else (first, then)
        if caused or timed:
            metrics.observe_triggers(caused, done, ingest_ms=read.ingest_ms, timers=False)
            metrics.observe_triggers(timed, done, ingest_ms=read.ingest_ms, timers=True)
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


def batch_limits(w: Worker, wall: int) -> Limits:
    """What parsing accepts in a batch read at wall time `wall`."""
    s = w.settings.engine
    return Limits(
        now_ms=wall,
        max_future_ms=int(s.max_future.total_seconds() * 1000),
        min_ts_ms=s.min_event_time,
        max_value_bytes=s.max_value_bytes,
    )


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
    return judge_and_settle(w, applied, bopis(w, events, finals, commerce.stock), commerce)


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
    cl = w.cluster  # ordered input: each worker sweeps its own customers' shards
    shards = [s for s in range(w.settings.engine.timer_shards) if cl is None or cl.owns_shard(s)]
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
