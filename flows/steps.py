"""The engine's per-batch step: parse, apply to Redis, decide, claim, emit.

A batch costs a fixed number of pipelined Redis round trips whatever its size:
(0) stitch anonymous histories, when the batch has any; (1) one Lua call per
customer plus the clock; (2) the M distribution and ranks; (3) labels,
timers, trigger claims and counters. Decisions between (2) and (3) are pure
functions from `operators`.

Bytewax calls a `flat_map_batch` mapper from every worker thread of a
process, so each thread gets its own `_Worker` (client, clock).
"""

from __future__ import annotations

import base64
import logging
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import redis

from connectors.events import Event, Limits, Rejected, parse_record
from connectors.kafka_io import OutMessage, Record, Tick
from omnipulse.settings import DLQ_TOPIC, Settings
from operators.clock import DAY_MS, Watermark, ms_to_rfc3339
from operators.customer import (
    CustomerLabels,
    MonetaryRank,
    SegmentRules,
    TierRules,
    decide,
    next_review_ms,
    percentile_rank,
)
from operators.triggers import Trigger
from state.customers import Applied, CustomerStore, facts_from, labels_from

log = logging.getLogger(__name__)

IDLE_ADVANCE_MS = 1000
SWEEP_LIMIT = 2000
DLQ_RAW_LIMIT = 65_536

ORDER_KIND = {"order_placed": "op", "order_cancelled": "oc", "order_returned": "or"}
CART_KIND = {"cart_add": "ca", "cart_remove": "cr", "checkout_start": "cs"}


@dataclass(slots=True)
class Rules:
    segments: SegmentRules
    tiers: TierRules
    holdout_share: float
    trigger_ttl_s: int

    @classmethod
    def from_settings(cls, s: Settings) -> Rules:
        return cls(
            # SegmentRules mirrors [segments] field for field.
            segments=SegmentRules(
                **{
                    f.name: getattr(s.segments, f.name)
                    for f in fields(SegmentRules)
                    if f.name != "offers"
                },
                offers=dict(s.segments.offers),
            ),
            tiers=TierRules(
                gold_spend_cents=int(s.tiers.gold_spend * 100),
                platinum_spend_cents=int(s.tiers.platinum_spend * 100),
                window_days=s.tiers.window_days,
            ),
            holdout_share=s.policy.holdout_share,
            trigger_ttl_s=max(int(s.engine.dedup_ttl.total_seconds()), 86_400),
        )


@dataclass(slots=True)
class _Review:
    """One decision point of one customer: judge the state after `mark` at `now`."""

    customer_id: str
    now: int
    state: dict[str, Any]
    orders: tuple[tuple[int, int], ...]
    final_state: dict[str, Any]
    timer_seen: int | None = None
    is_last: bool = True


@dataclass
class _Worker:
    settings: Settings
    live: bool
    client: redis.Redis
    store: CustomerStore
    rules: Rules
    clock: Watermark
    tz: ZoneInfo | None
    counters: Counter[str] = field(default_factory=Counter)
    offsets: dict[str, int] = field(default_factory=dict)  # "topic#p" -> next offset


class EngineStep:
    """The `flat_map_batch` mapper of the engine flow."""

    def __init__(self, settings: Settings, *, redis_url: str, live: bool) -> None:
        self.settings = settings
        self.redis_url = redis_url
        self.live = live
        self._local = threading.local()

    # Built lazily in each worker thread: never at import or in __init__.
    def worker(self) -> _Worker:
        w = getattr(self._local, "worker", None)
        if w is None:
            s = self.settings
            client = redis.Redis.from_url(self.redis_url)
            store = CustomerStore.for_settings(client, s)
            clock = store.watermark(
                int(s.engine.allowed_lateness.total_seconds() * 1000), _wall_ms()
            )
            tz = None if s.engine.timezone == "UTC" else ZoneInfo(s.engine.timezone)
            w = _Worker(s, self.live, client, store, Rules.from_settings(s), clock, tz)
            self._local.worker = w
        return w

    def __call__(self, items: list[Record | Tick]) -> list[OutMessage]:
        return self.process(items)

    def process(self, items: Sequence[Record | Tick]) -> list[OutMessage]:
        w = self.worker()
        wall = _wall_ms()
        limits = Limits(
            now_ms=wall,
            max_future_ms=int(w.settings.engine.max_future.total_seconds() * 1000),
            min_ts_ms=w.settings.engine.min_event_time,
            max_value_bytes=w.settings.engine.max_value_bytes,
        )
        out: list[OutMessage] = []
        events: list[Event] = []
        for item in items:
            if isinstance(item, Tick):
                if self.live and w.settings.engine.idle_advance:
                    w.clock.advance_idle(item.wall_ms, IDLE_ADVANCE_MS)
                continue
            w.offsets[f"{item.topic}#{item.partition}"] = item.offset + 1
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
                events.append(parsed)
        triggers = apply_events(w, events, wall)
        triggers.extend(sweep(w))
        out.extend(self.trigger_message(t, w) for t in triggers)
        return out

    def _dead_letter(self, w: _Worker, r: Rejected, wall: int) -> OutMessage:
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

    def trigger_message(self, t: Trigger, w: _Worker) -> OutMessage:
        rec = t.to_record(_wall_ms())
        rec["event_ts"] = ms_to_rfc3339(t.event_ts)
        rec["emitted_at"] = ms_to_rfc3339(rec["emitted_at"])
        return OutMessage(
            w.settings.kafka.trigger_topic(t.kind), t.subject.encode(), orjson.dumps(rec)
        )


def _wall_ms() -> int:
    return int(time.time() * 1000)


def _day(ms: int, tz: ZoneInfo | None) -> int:
    if tz is None:
        return ms // DAY_MS
    off = datetime.fromtimestamp(ms / 1000, tz).utcoffset()
    return (ms + int(off.total_seconds() * 1000 if off else 0)) // DAY_MS


def _compact(e: Event, tz: ZoneInfo | None) -> dict[str, Any] | None:
    """The few fields apply_customer.lua needs, under short names."""
    base: dict[str, Any] = {"ts": e.ts, "d": _day(e.ts, tz), "ch": e.channel}
    d = e.data
    if e.topic == "clicks":
        base.update(k="v", cat=d.get("category"), pr=1 if d.get("premium") else 0)
    elif e.topic == "carts":
        base.update(k=CART_KIND[e.type], sku=d.get("sku"), q=d.get("qty"), p=d.get("unit_price"))
    elif e.topic == "orders":
        base.update(
            k=ORDER_KIND[e.type],
            oid=d["order_id"],
            tot=d["total"],
            skus=[ln["sku"] for ln in d["lines"]],
        )
    else:
        return None  # stock and locations do not touch customer state
    return {k: v for k, v in base.items() if v is not None}


def apply_events(w: _Worker, events: list[Event], wall: int) -> list[Trigger]:
    """Rounds 0-3 for one batch of valid events."""
    store = w.store
    batches: dict[tuple[str, bool], list[tuple[str, dict[str, Any]]]] = defaultdict(list)
    stitch_pairs = []
    late = 0
    max_ts = w.clock.max_event_ms
    for e in events:
        w.counters[f"events:{e.topic}"] += 1
        if e.topic == "locations":
            continue
        late += w.clock.observe(e.ts, wall)
        max_ts = max(max_ts, e.ts)
        compact = _compact(e, w.tz)
        if compact is None:
            continue
        if e.customer_id is not None:
            if e.anonymous_id is not None:
                stitch_pairs.append((e.anonymous_id, e.customer_id))
            batches[(e.customer_id, False)].append((e.event_id, compact))
        elif e.anonymous_id is not None:
            batches[(e.anonymous_id, True)].append((e.event_id, compact))
    w.counters["late"] += late
    if not batches:
        _flush_counters(w)
        return []
    # Round 0: stitching puts the visitor's history first in the customer's list.
    for (anon, cid), history in store.take_anonymous(stitch_pairs).items():
        batches[(cid, False)].insert(
            0, (f"stitch:{anon}", {"k": "st", "ts": 0, "d": 0, "a": history})
        )
    results, durable = store.apply(dict(batches), w.clock.now, max_ts)
    w.clock.merge(durable, wall)
    redirected: dict[tuple[str, bool], list[tuple[str, dict[str, Any]]]] = defaultdict(list)
    for r in results:
        w.counters["duplicates"] += r.duplicates
        if r.redirect:
            redirected[(r.redirect, False)].extend(batches[(r.subject, True)])
    if redirected:
        more, _ = store.apply(dict(redirected), w.clock.now, max_ts)
        results.extend(more)
    store.update_monetary(results)
    reviews = []
    for r in results:
        if r.anonymous or not r.applied:
            continue
        reviews.extend(_reviews_of(r))
    return _judge(w, reviews)


def _reviews_of(r: Applied) -> list[_Review]:
    """Decision points: after each order or premium view, and at the customer's last event."""
    out = []
    for mark in r.marks:
        state = dict(r.final)
        state.update({k: mark.get(k) for k in ("n", "m", "fo", "lo")})
        # only a premium view's mark speaks about the premium run
        state["pd"] = mark.get("pd")
        out.append(_Review(r.subject, int(mark["ts"]), state, r.orders, r.final, is_last=False))
    last_ts = int(r.final.get("la") or 0)
    if not out or last_ts > out[-1].now:
        out.append(_Review(r.subject, last_ts, dict(r.final), r.orders, r.final))
    else:
        out[-1].is_last = True
    return out


def _judge(w: _Worker, reviews: list[_Review]) -> list[Trigger]:
    """Rounds 2-3: rank, decide (pure), then write labels/timers and claim triggers."""
    if not reviews:
        _flush_counters(w)
        return []
    positions, customers, total = w.store.monetary_positions(
        [int(v.state.get("m") or 0) for v in reviews]
    )
    labels: dict[str, CustomerLabels] = {}
    timers: dict[str, tuple[int | None, int | None]] = {}
    triggers: list[Trigger] = []
    for review, (below, equal) in zip(reviews, positions, strict=True):
        cid = review.customer_id
        lab = labels.get(cid) or labels_from(review.final_state)
        labels[cid] = lab
        facts = facts_from(review.state, review.orders)
        rank = _rank_excluding_self(review, below, equal, customers, total)
        # A customer's clock never runs backwards: a late event is judged at
        # the latest time the customer was already judged at, not before it.
        now = max(review.now, lab.judged_at or 0)
        lab.judged_at = now
        triggers.extend(
            decide(
                cid, lab, facts, rank, now, w.rules.segments, w.rules.tiers, w.rules.holdout_share
            )
        )
        if review.is_last:
            nxt = next_review_ms(facts, now, w.rules.segments, w.rules.tiers)
            timers[cid] = (review.timer_seen, nxt)
    claims = w.store.commit_decisions(
        labels,
        timers,
        [(t.subject, t.trigger_id) for t in triggers],
        w.rules.trigger_ttl_s,
        _take_counters(w, triggers),
        _take_offsets(w),
    )
    return [t for t, ok in zip(triggers, claims, strict=True) if ok]


def _rank_excluding_self(
    review: _Review, below: int, equal: int, customers: int, total: int
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


def sweep(w: _Worker) -> list[Trigger]:
    """Time-driven reviews that the watermark has made due (e.g. turning `sleeping`)."""
    return sweep_once(w)[0]


def sweep_once(w: _Worker) -> tuple[list[Trigger], int]:
    """One pass over due reviews; returns the triggers and how many were due."""
    now = w.clock.now
    shards = range(w.settings.engine.timer_shards)
    due = w.store.due_reviews(shards, now, SWEEP_LIMIT)
    if not due:
        return [], 0
    states = w.store.read([cid for cid, _ in due])
    reviews = []
    for cid, at in due:
        if cid not in states:
            # The profile is gone (deleted by an operator): drop its timer.
            w.store.commit_decisions({}, {cid: (at, None)}, [], 0, {})
            continue
        final, orders = states[cid]
        reviews.append(_Review(cid, at, final, orders, final, timer_seen=at))
    return _judge(w, reviews), len(due)


def _take_counters(w: _Worker, triggers: list[Trigger]) -> dict[str, int]:
    for t in triggers:
        w.counters[f"decided:{t.kind}"] += 1
    out = dict(w.counters)
    w.counters.clear()
    return out


def _take_offsets(w: _Worker) -> dict[str, int]:
    out, w.offsets = w.offsets, {}
    return out


def _flush_counters(w: _Worker) -> None:
    if w.counters or w.offsets:
        w.store.commit_decisions({}, {}, [], 0, _take_counters(w, []), _take_offsets(w))
