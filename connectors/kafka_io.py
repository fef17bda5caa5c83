"""Kafka input and output for the engine's dataflow.

The source is a Bytewax `FixedPartitionedSource` with one partition per Kafka
topic-partition, so Bytewax spreads them over workers and processes. It
resumes from the offsets the engine stored next to its state in Redis (they
are written only after the state of a batch is durable), and in catch-up mode
it ends each partition at end-of-partition. When a partition is idle in live
mode it emits a `Tick`, so event time can move on and timers fire.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from bytewax.outputs import DynamicSink, StatelessSinkPartition
from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Producer,
    TopicPartition,
)

from common import metrics
from connectors.errors import ConnectorError

log = logging.getLogger(__name__)
# librdkafka's own messages go through logging (so `--log-format json` covers
# them) instead of being printed to stderr in its own format.
RDKAFKA_LOG = logging.getLogger("librdkafka")

# Set by the CLI's SIGINT/SIGTERM handler: every partition then ends at its
# next batch, so the dataflow finishes normally and the sinks flush.
SHUTDOWN = threading.Event()

# How long an idle partition waits before it is polled again (librdkafka keeps
# fetching in the background, so this bounds the added latency, not throughput).
IDLE_POLL = timedelta(milliseconds=10)
# Live mode: an idle partition sends a Tick this often, so that timers still
# fire on time when no event moves the watermark.
TICK_MS = 200


@dataclass(slots=True)
class Record:
    """One Kafka record, as read. `topic` is the logical name (prefix removed)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    read_at_ms: int


@dataclass(slots=True)
class Tick:
    """No input on a partition for a while: lets the clock advance by wall time."""

    wall_ms: int


@dataclass(slots=True)
class PartitionMark:
    """A partition opened (`at_end` False) or reached its end (True).

    The event-time clock waits for open partitions and stops waiting for
    those at their end, so one topic read ahead of another cannot make
    time pass for events still queued.
    """

    part: str  # "topic#partition", logical topic name
    at_end: bool


@dataclass(slots=True)
class OutMessage:
    topic: str  # full topic name (prefix included)
    key: bytes | None
    value: bytes


@dataclass(slots=True)
class Confirm:
    """Not a message: once every message before it is delivered, the sink hands
    `receipt` to its confirmer (see `KafkaOutput`)."""

    receipt: Any


class Confirmer(Protocol):
    """Told what was delivered: the receipts, and the producer's next offset per
    "topic#partition" it has written to (full topic names)."""

    def confirm(self, receipts: list[Any], offsets: dict[str, int]) -> None: ...

    def close(self) -> None: ...


def _part_name(topic: str, partition: int) -> str:
    return f"{topic}#{partition}"


class _PartitionReader(StatefulSourcePartition[Record | Tick | PartitionMark, int]):
    def __init__(
        self,
        config: dict[str, Any],
        full_topic: str,
        logical: str,
        partition: int,
        start: int,
        batch_size: int,
        until_caught_up: bool,
        tick_ms: int,
    ) -> None:
        self._consumer = Consumer(config)
        self._tp = TopicPartition(full_topic, partition)
        self._consumer.assign([TopicPartition(full_topic, partition, start)])
        self._logical = logical
        self._partition = partition
        self._next = start
        self._batch_size = batch_size
        self._until_caught_up = until_caught_up
        self._tick_ms = tick_ms
        self._last_data_ms = int(time.time() * 1000)
        self._done = False
        self._opened = False
        self._part = _part_name(logical, partition)
        self._awake: datetime | None = None

    def next_batch(self) -> list[Record | Tick | PartitionMark]:
        if self._done or SHUTDOWN.is_set():
            raise StopIteration
        out: list[Record | Tick | PartitionMark] = []
        if not self._opened:
            self._opened = True
            return [PartitionMark(self._part, at_end=False)]
        # Never block here: Bytewax polls every partition of a worker in turn, so
        # a blocking wait on one idle partition delays all the others.
        msgs = self._consumer.consume(self._batch_size, 0)
        now_ms = int(time.time() * 1000)
        self._awake = None if msgs else datetime.now(UTC) + IDLE_POLL
        for msg in msgs:
            err = msg.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    out.append(PartitionMark(self._part, at_end=True))
                    if self._until_caught_up:
                        self._done = True
                    continue
                if err.fatal():
                    raise ConnectorError(f"kafka: {self._logical}#{self._partition}: {err}")
                log.warning("kafka: %s#%s: %s", self._logical, self._partition, err)
                continue
            out.append(
                Record(self._logical, self._partition, msg.offset(), msg.key(), msg.value(), now_ms)
            )
            self._next = msg.offset() + 1
        if out:
            self._last_data_ms = now_ms
            self._report_lag()
        elif not self._until_caught_up and now_ms - self._last_data_ms >= self._tick_ms:
            self._last_data_ms = now_ms
            out.append(Tick(now_ms))
            self._report_lag()
        return out

    def _report_lag(self) -> None:
        # The end offset librdkafka learnt from its last fetch: no request to the broker.
        _, high = self._consumer.get_watermark_offsets(self._tp, cached=True)
        if high >= 0 and self._next >= 0:
            metrics.LAG.set(self._logical, self._partition, max(0, high - self._next))

    def next_awake(self) -> datetime | None:
        return self._awake

    def snapshot(self) -> int:
        return self._next

    def close(self) -> None:
        self._consumer.close()


class KafkaInput(FixedPartitionedSource[Record | Tick | PartitionMark, int]):
    """All partitions of the given topics; resume offsets from `resume_offsets`."""

    def __init__(
        self,
        config: dict[str, Any],
        topics: dict[str, str],
        *,
        resume_offsets: Callable[[], dict[str, int]],
        batch_size: int = 1000,
        until_caught_up: bool = False,
        tick_ms: int = TICK_MS,
    ) -> None:
        self._config = config
        self._topics = topics  # full name -> logical name
        self._resume_offsets = resume_offsets
        self._batch_size = batch_size
        self._until_caught_up = until_caught_up
        self._tick_ms = tick_ms

    def list_parts(self) -> list[str]:
        return [
            _part_name(full, p)
            for full, parts in topic_partitions(self._config, self._topics).items()
            for p in parts
        ]

    def build_part(self, step_id: str, for_part: str, resume_state: int | None) -> _PartitionReader:
        full, _, p = for_part.rpartition("#")
        start = resume_state
        if start is None:
            start = self._resume_offsets().get(
                _part_name(self._topics[full], int(p)), OFFSET_BEGINNING
            )
        return _PartitionReader(
            self._config,
            full,
            self._topics[full],
            int(p),
            start,
            self._batch_size,
            self._until_caught_up,
            self._tick_ms,
        )


def topic_partitions(config: dict[str, Any], topics: Iterable[str]) -> dict[str, list[int]]:
    """Each topic's partition numbers, asked of the cluster with the consumer's own
    config (same security settings, no admin-only keys); a missing topic is an error."""
    probe = Consumer(config)
    try:
        md = probe.list_topics(timeout=10)
    finally:
        probe.close()
    out = {}
    for full in topics:
        meta = md.topics.get(full)
        if meta is None or meta.error is not None:
            raise ConnectorError(
                f"kafka: topic {full!r} does not exist; run `omnipulse topics create`"
            )
        out[full] = sorted(meta.partitions)
    return out


class OffsetCommitter:
    """Commits processed offsets to the engine's consumer group.

    The engine resumes from the offsets it keeps in Redis next to its state;
    these commits are what `kafka-consumer-groups`, Burrow or `omnipulse lag`
    read. They are made only after the batch's state is in Redis, so the
    group's lag never claims more than is done. A failed commit is logged and
    retried with the next batch: it hides lag for a moment, loses nothing.
    """

    def __init__(self, config: dict[str, Any]) -> None:
        self._config = config
        self._consumer: Consumer | None = None

    def commit(self, offsets: dict[str, int]) -> bool:
        """`offsets` maps "full topic#partition" to the next offset to read."""
        if not offsets:
            return True
        if self._consumer is None:
            self._consumer = Consumer(self._config)
        parts = []
        for key, offset in offsets.items():
            topic, _, partition = key.rpartition("#")
            parts.append(TopicPartition(topic, int(partition), offset))
        try:
            self._consumer.commit(offsets=parts, asynchronous=False)
        except KafkaException as ex:
            log.warning("kafka: committing offsets to the consumer group failed: %s", ex)
            return False
        return True

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None


def consumer_config(bootstrap: str, group: str, extra: dict[str, str]) -> dict[str, Any]:
    return {
        "bootstrap.servers": bootstrap,
        "group.id": group,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "enable.partition.eof": True,
        "auto.offset.reset": "earliest",
        "fetch.wait.max.ms": 50,
        "logger": RDKAFKA_LOG,
        **extra,
    }


def producer_config(bootstrap: str, extra: dict[str, str]) -> dict[str, Any]:
    return {
        "bootstrap.servers": bootstrap,
        "linger.ms": 5,
        "enable.idempotence": True,
        "compression.type": "lz4",
        "logger": RDKAFKA_LOG,
        **extra,
    }


class _ProducerPartition(StatelessSinkPartition[OutMessage | Confirm]):
    def __init__(self, config: dict[str, Any], confirmer: Confirmer | None = None) -> None:
        self._producer = Producer(config)
        self._confirmer = confirmer
        self._errors: list[str] = []
        self._next: dict[str, int] = {}  # "topic#p" -> offset after the last delivered

    def _on_delivery(self, err: Any, msg: Any) -> None:
        if err is not None:
            self._errors.append(f"{msg.topic()}: {err}")
            return
        part = _part_name(msg.topic(), msg.partition())
        self._next[part] = max(self._next.get(part, 0), msg.offset() + 1)

    def write_batch(self, items: list[OutMessage | Confirm]) -> None:
        receipts = []
        for item in items:
            if isinstance(item, Confirm):
                receipts.append(item.receipt)
                continue
            self._producer.produce(item.topic, item.value, item.key, on_delivery=self._on_delivery)
            self._producer.poll(0)
        # Triggers are claimed in Redis before they get here: make sure they
        # are on the broker before they are confirmed and the next batch is taken.
        left = self._producer.flush(30)
        if self._errors or left:
            errors, self._errors = self._errors, []
            first = errors[0] if errors else "delivery timed out"
            raise ConnectorError(
                f"kafka_out: {len(errors) + left} messages not delivered, first: {first}"
            )
        if receipts and self._confirmer is not None:
            try:
                self._confirmer.confirm(receipts, dict(self._next))
            except Exception as ex:
                raise ConnectorError(f"kafka_out: confirming delivered triggers: {ex}") from ex

    def close(self) -> None:
        self._producer.flush(30)
        if self._confirmer is not None:
            self._confirmer.close()


class KafkaOutput(DynamicSink[OutMessage | Confirm]):
    """Produces messages; after each batch's delivery reports, hands its `Confirm`
    receipts to a confirmer made by `confirmer()` in `build` (on the worker)."""

    def __init__(
        self, config: dict[str, Any], confirmer: Callable[[], Confirmer] | None = None
    ) -> None:
        self._config = config
        self._confirmer = confirmer

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _ProducerPartition:
        return _ProducerPartition(
            self._config, self._confirmer() if self._confirmer is not None else None
        )


def produce_all(
    config: dict[str, Any],
    messages: Iterable[OutMessage | Confirm],
    confirmer: Confirmer | None = None,
) -> int:
    """Produce and flush, then confirm; used outside the dataflow (final timer
    sweep, recovery, replay, simulate). Returns the number of messages."""
    part = _ProducerPartition(config, confirmer)
    batch = list(messages)
    part.write_batch(batch)
    return sum(1 for m in batch if isinstance(m, OutMessage))
