"""The engine's Prometheus metrics, one set per process.

Every process of an engine exports its own figures on its own HTTP port
(`connectors.http`); Prometheus adds them up across instances. Counters and
histograms are in-process and start from zero when a process starts
(`rate()` and `increase()` handle the reset). Figures about shared state --
customers known, the churn model -- are the same whichever process reports
them: aggregate those with `max()`, not `sum()`. The lag of a partition is
reported only by the process that reads it.

Recording is per batch, never per event: counters take a batch's totals,
histograms one observation per trigger, per Redis pipeline or per batch.
Metric objects live at module level, as prometheus_client expects; they hold
no connection.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import Any

from prometheus_client import Counter, Gauge, Histogram, disable_created_metrics
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import REGISTRY, Collector

# No `<name>_created` series beside every counter and histogram: they double the
# series count and nothing here reads them (Prometheus handles resets itself).
disable_created_metrics()

_LATENCY_BUCKETS = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 3600.0,
    86400.0,
)  # fmt: skip
_LATENESS_BUCKETS = (
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 3600.0, 86400.0,
)  # fmt: skip
_REDIS_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
)  # fmt: skip
_SIZE_BUCKETS = (1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000)

EVENTS_IN = Counter(
    "omnipulse_events_in", "Input records read, per logical topic (valid or not)", ["topic"]
)
EVENTS_REJECTED = Counter(
    "omnipulse_events_rejected",
    "Input records rejected to the dead-letter topic, per reason code",
    ["reason"],
)
EVENTS_DUPLICATE = Counter(
    "omnipulse_events_duplicate", "Events not applied because their event_id was seen before"
)
EVENTS_LATE = Counter(
    "omnipulse_events_late", "Events older than the watermark (applied, but late)"
)
TRIGGERS_EMITTED = Counter("omnipulse_triggers_emitted", "Triggers emitted, per kind", ["kind"])
TRIGGERS_SUPPRESSED = Counter(
    "omnipulse_triggers_suppressed",
    "Marketing triggers suppressed by the per-customer daily cap, per kind",
    ["kind"],
)
TRIGGERS_HELD = Counter(
    "omnipulse_triggers_held",
    "Marketing triggers held for the end of quiet hours, per kind",
    ["kind"],
)
CHANNEL_ORDERS = Counter(
    "omnipulse_channel_orders", "Orders placed, per channel (as applied)", ["channel"]
)
CHANNEL_REVENUE = Counter(
    "omnipulse_channel_revenue",
    "Value of the orders placed, per channel, in the orders' currency units; gross: "
    "cancellations and returns are netted out by `omnipulse report`, not here",
    ["channel"],
)
CHURN_LABELS = Counter(
    "omnipulse_churn_labels",
    "Churn labels learned by this process's model since it started",
    ["label"],
)
REDIS_RETRIES = Counter(
    "omnipulse_redis_retries",
    "Redis calls retried because Redis was unreachable, per call",
    ["call"],
)
CONSUMER_LAG = Gauge(
    "omnipulse_consumer_lag",
    "Records on the partition after the engine's read position (this process's partitions)",
    ["topic", "partition"],
)
WATERMARK_LAG = Gauge(
    "omnipulse_watermark_lag_seconds", "Wall clock minus the event-time watermark"
)
REDIS_UP = Gauge(
    "omnipulse_redis_up", "1 while the engine's Redis calls succeed, 0 during an outage"
)
TRIGGER_LATENCY = Histogram(
    "omnipulse_trigger_latency_seconds",
    "Trigger emission time minus its cause: basis=event_time (the cause's event time) "
    "or basis=ingest (when the engine read the records that caused it)",
    ["kind", "basis"],
    buckets=_LATENCY_BUCKETS,
)
TIMER_LATENESS = Histogram(
    "omnipulse_timer_lateness_seconds",
    "How long after its due time (event time, read on the wall clock) a timer trigger fired",
    ["kind"],
    buckets=_LATENESS_BUCKETS,
)
REDIS_CALL = Histogram(
    "omnipulse_redis_call_seconds",
    "Duration of the engine's Redis round trips (pipelines and single calls), per call",
    ["call"],
    buckets=_REDIS_BUCKETS,
)
REDIS_PIPELINE_SIZE = Histogram(
    "omnipulse_redis_pipeline_commands",
    "Commands per Redis pipeline, per call",
    ["call"],
    buckets=_SIZE_BUCKETS,
)
BATCH_SIZE = Histogram(
    "omnipulse_batch_size", "Input records per engine batch", buckets=_SIZE_BUCKETS
)

REDIS_UP.set(1)

# Redis stats-counter prefix -> labelled counter; the rest of the name is the label.
_BY_PREFIX: dict[str, Counter] = {
    "rejected": EVENTS_REJECTED,
    "emitted": TRIGGERS_EMITTED,
    "suppressed": TRIGGERS_SUPPRESSED,
    "held": TRIGGERS_HELD,
}


def count_batch(counters: Mapping[str, int]) -> None:
    """Add a batch's counters (the names kept in the `<prefix>:stats` hash)."""
    for name, n in counters.items():
        if not n:
            continue
        prefix, _, rest = name.partition(":")
        labelled = _BY_PREFIX.get(prefix)
        if labelled is not None:
            labelled.labels(rest).inc(n)
        elif name == "duplicates":
            EVENTS_DUPLICATE.inc(n)
        elif name == "late":
            EVENTS_LATE.inc(n)
        elif name == "churn:labels_churned":
            CHURN_LABELS.labels("churned").inc(n)
        elif name == "churn:labels_retained":
            CHURN_LABELS.labels("retained").inc(n)


def count_sales(rows: Iterable[tuple[str, int, int]]) -> None:
    """A batch's sales: (channel, orders placed, their value in cents) rows."""
    for channel, placed, gross_cents in rows:
        if placed:
            CHANNEL_ORDERS.labels(channel).inc(placed)
        if gross_cents:
            CHANNEL_REVENUE.labels(channel).inc(gross_cents / 100)


def count_records(per_topic: Mapping[str, int], batch_size: int) -> None:
    """A batch's input: records per logical topic, and its size."""
    for topic, n in per_topic.items():
        EVENTS_IN.labels(topic).inc(n)
    if batch_size:
        BATCH_SIZE.observe(batch_size)


def _ms(ts: Any) -> int | None:
    if isinstance(ts, int):
        return ts
    if isinstance(ts, str):
        try:
            return int(datetime.fromisoformat(ts).timestamp() * 1000)
        except ValueError:
            return None
    return None


def observe_triggers(
    records: Iterable[Mapping[str, Any]],
    emitted_ms: int,
    *,
    ingest_ms: int | None,
    timers: bool,
) -> None:
    """Latency of each trigger emitted at `emitted_ms`.

    `ingest_ms` is when the engine read the batch that caused them (None when
    no input caused them, as in the final sweep of a catch-up run). Timer
    triggers are due at their event time, or at the end of the quiet hours
    that held them.
    """
    for rec in records:
        kind = rec.get("kind", "")
        event_ms = _ms(rec.get("event_ts"))
        if event_ms is not None:
            TRIGGER_LATENCY.labels(kind, "event_time").observe(
                max(0.0, (emitted_ms - event_ms) / 1000)
            )
        if ingest_ms is not None:
            TRIGGER_LATENCY.labels(kind, "ingest").observe(
                max(0.0, (emitted_ms - ingest_ms) / 1000)
            )
        if timers:
            due = _ms(rec.get("held_until")) or event_ms
            if due is not None:
                TIMER_LATENESS.labels(kind).observe(max(0.0, (emitted_ms - due) / 1000))


def observe_watermark(wall_ms: int, watermark_ms: int) -> None:
    if watermark_ms > 0:
        WATERMARK_LAG.set(max(0.0, (wall_ms - watermark_ms) / 1000))


def observe_redis(call: str, seconds: float, commands: int) -> None:
    REDIS_CALL.labels(call).observe(seconds)
    if commands:
        REDIS_PIPELINE_SIZE.labels(call).observe(commands)


class PartitionLag:
    """Lag of the partitions this process reads; readiness sums it."""

    def __init__(self) -> None:
        self._lag: dict[tuple[str, int], int] = {}
        self._lock = threading.Lock()

    def set(self, topic: str, partition: int, lag: int) -> None:
        with self._lock:
            self._lag[(topic, partition)] = lag
        CONSUMER_LAG.labels(topic, str(partition)).set(lag)

    def total(self) -> int:
        with self._lock:
            return sum(self._lag.values())

    def clear(self) -> None:
        with self._lock:
            for topic, partition in self._lag:
                CONSUMER_LAG.remove(topic, str(partition))
            self._lag.clear()


LAG = PartitionLag()


class StateCollector(Collector):
    """Gauges read when scraped, from sources the runner registers: the churn
    model's progressive metrics (in memory) and the customers known (Redis).

    A source that fails (Redis down) is left out of that scrape; the rest of
    /metrics is still served.
    """

    def __init__(self) -> None:
        self.model: Callable[[], Mapping[str, Any] | None] | None = None
        self.customers: Callable[[], int | None] | None = None

    def collect(self) -> Iterable[GaugeMetricFamily]:
        if self.customers is not None:
            try:
                n = self.customers()
            except Exception:  # a scrape must not fail with Redis: the gauge is left out
                n = None
            if n is not None:
                yield GaugeMetricFamily(
                    "omnipulse_customers", "Customers known to the engine (all processes)", n
                )
        m = self.model() if self.model is not None else None
        if not m:
            return
        for name, key, doc in (
            ("omnipulse_model_auc", "roc_auc", "Churn model progressive ROC AUC"),
            ("omnipulse_model_log_loss", "log_loss", "Churn model progressive log loss"),
            (
                "omnipulse_model_heuristic_auc",
                "heuristic_roc_auc",
                "Seed churn heuristic's ROC AUC on the same labels",
            ),
        ):
            if m.get(key) is not None:
                yield GaugeMetricFamily(name, doc, value=m[key])
        labels = GaugeMetricFamily(
            "omnipulse_model_labels",
            "Labels the churn model has learned (restored from its snapshot, then live)",
            labels=["label"],
        )
        labels.add_metric(["churned"], m.get("labels_churned", 0))
        labels.add_metric(["retained"], m.get("labels_retained", 0))
        yield labels


STATE = StateCollector()
REGISTRY.register(STATE)


def reset_sources() -> None:
    """Forget the state sources and partition lags of a finished run."""
    STATE.model = None
    STATE.customers = None
    LAG.clear()
