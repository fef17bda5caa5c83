"""Ordered input: every input partition merged by event time into fixed-size batches.

The default source (`connectors.kafka_io.KafkaInput`) reads each partition on
its own, so how topics interleave, and where batches end, depends on timing.
State applies events in the order they are read, so two runs over the same
topics can differ. With `engine.ordered_input`, one reader takes all input
partitions and merges them by (event time, topic, partition, offset), and cuts
the merged sequence into batches of exactly `batch_size` records, each closed
by a `BatchEnd`. A record is taken only when every partition still open has a
record waiting, or has reached its end, so what the sequence holds depends on
the topics' contents and the start offsets only. The engine stores its resume
offsets at batch ends, so a restarted engine takes up the same sequence at
the same batch: a crash leaves the same state as a clean run (acceptance of
issue 5). The cost: one reader and one worker for the input, and each value
is parsed once more here for its `ts`.

When the input is live (some partition waits for records that do not exist
yet), a partial batch goes out once the waiting partitions reach their end
again; that part of the sequence follows timing as any live read does.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

from connectors.errors import ConnectorError
from connectors.kafka_io import (
    IDLE_POLL,
    SHUTDOWN,
    PartitionMark,
    Record,
    Tick,
    topic_partitions,
)

log = logging.getLogger(__name__)

ALL = "all"  # the one Bytewax partition of the ordered source
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)


@dataclass(slots=True)
class BatchEnd:
    """The records since the previous `BatchEnd` are one engine batch."""


def event_ms(value: bytes | None) -> int:
    """The `ts` of an event as epoch ms; -1 when there is none (parsed or rejected later)."""
    try:
        v = orjson.loads(value or b"")["ts"]
        if isinstance(v, int) and not isinstance(v, bool):
            return v
        dt = datetime.fromisoformat(v)
        return (dt - _EPOCH) // _MS if dt.tzinfo is not None else -1
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return -1


Item = Record | Tick | PartitionMark | BatchEnd


class _MergedReader(StatefulSourcePartition[Item, None]):
    def __init__(
        self,
        config: dict[str, Any],
        starts: dict[tuple[str, int], int],
        logical: dict[str, str],
        batch_size: int,
        until_caught_up: bool,
        tick_ms: int,
    ) -> None:
        self._consumer = Consumer(config)
        self._consumer.assign([TopicPartition(t, p, off) for (t, p), off in starts.items()])
        self._logical = logical
        self._rank = {topic: i for i, topic in enumerate(sorted(logical))}
        self._parts = sorted(starts)
        self._waiting: dict[tuple[str, int], deque[tuple[int, Record]]] = {
            tp: deque() for tp in self._parts
        }
        self._eof: set[tuple[str, int]] = set()  # at its end as last reported
        self._ended: set[tuple[str, int]] = set()  # its end mark is in the sequence
        self._batch_size = batch_size
        self._until_caught_up = until_caught_up
        self._tick_ms = tick_ms
        self._out: list[Item] = []
        self._records = 0  # records in self._out
        self._opened = False
        self._done = False
        self._awake: datetime | None = None
        self._last_data_ms = int(time.time() * 1000)

    def _name(self, tp: tuple[str, int]) -> str:
        return f"{self._logical[tp[0]]}#{tp[1]}"

    def _pull(self) -> bool:
        msgs = self._consumer.consume(self._batch_size, 0)
        now_ms = int(time.time() * 1000)
        for msg in msgs:
            tp = (msg.topic(), msg.partition())
            err = msg.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    self._eof.add(tp)
                    continue
                if err.fatal():
                    raise ConnectorError(f"kafka: {self._name(tp)}: {err}")
                log.warning("kafka: %s: %s", self._name(tp), err)
                continue
            self._eof.discard(tp)
            rec = Record(self._logical[tp[0]], tp[1], msg.offset(), msg.key(), msg.value(), now_ms)
            self._waiting[tp].append((event_ms(rec.value), rec))
        return bool(msgs)

    def _merge(self) -> bool:
        """Move records to the batch in merged order; True when a batch is complete."""
        while self._records < self._batch_size:
            heads = []
            for tp in self._parts:
                queue = self._waiting[tp]
                if queue:
                    if tp in self._ended:
                        self._ended.discard(tp)  # live input: the partition delivers again
                    ts, rec = queue[0]
                    heads.append((ts, self._rank[tp[0]], tp[1], rec.offset, tp))
                elif tp not in self._ended:
                    if tp not in self._eof:
                        return False  # its next record may come first: wait for it
                    self._ended.add(tp)
                    self._out.append(PartitionMark(self._name(tp), at_end=True))
            if not heads:
                return bool(self._out)  # every partition at its end
            tp = min(heads)[-1]
            self._out.append(self._waiting[tp].popleft()[1])
            self._records += 1
        return True

    def next_batch(self) -> list[Item]:
        if self._done or SHUTDOWN.is_set():
            raise StopIteration
        if not self._opened:
            self._opened = True
            return [PartitionMark(self._name(tp), at_end=False) for tp in self._parts]
        got = self._pull()
        now_ms = int(time.time() * 1000)
        self._awake = None if got else datetime.now(UTC) + IDLE_POLL
        if self._merge():
            out, self._out, self._records = [*self._out, BatchEnd()], [], 0
            self._last_data_ms = now_ms
            return out
        at_end = len(self._ended) == len(self._parts) and not self._out
        if at_end and self._until_caught_up:
            self._done = True
        elif at_end and now_ms - self._last_data_ms >= self._tick_ms:
            self._last_data_ms = now_ms
            return [Tick(now_ms), BatchEnd()]
        return []

    def next_awake(self) -> datetime | None:
        return self._awake

    def snapshot(self) -> None:
        return None  # resume offsets live in Redis, next to the state

    def close(self) -> None:
        self._consumer.close()


class OrderedKafkaInput(FixedPartitionedSource[Item, None]):
    """All partitions of `topics` (full name -> logical name) as one merged sequence."""

    def __init__(
        self,
        config: dict[str, Any],
        topics: dict[str, str],
        *,
        resume_offsets: Callable[[], dict[str, int]],
        batch_size: int = 1000,
        until_caught_up: bool = False,
        tick_ms: int = 1000,
    ) -> None:
        self._config = config
        self._topics = topics
        self._resume_offsets = resume_offsets
        self._batch_size = batch_size
        self._until_caught_up = until_caught_up
        self._tick_ms = tick_ms

    def list_parts(self) -> list[str]:
        return [ALL]

    def build_part(self, step_id: str, for_part: str, resume_state: None) -> _MergedReader:
        resume = self._resume_offsets()
        starts = {
            (full, p): resume.get(f"{self._topics[full]}#{p}", OFFSET_BEGINNING)
            for full, parts in topic_partitions(self._config, self._topics).items()
            for p in parts
        }
        return _MergedReader(
            self._config,
            starts,
            self._topics,
            self._batch_size,
            self._until_caught_up,
            self._tick_ms,
        )
