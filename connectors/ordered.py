"""Ordered input: every input partition merged by event time into fixed-size batches.

The default source (`connectors.kafka_io.KafkaInput`) reads each partition on
its own, so how topics interleave, and where batches end, depends on timing.
State applies events in the order they are read, so two runs over the same
topics can differ. With `engine.ordered_input`, a reader takes all input
partitions and merges them by (event time, topic, partition, offset), and cuts
the merged sequence into numbered batches of exactly `batch_size` records,
each closed by a `BatchEnd`. A record is taken only when every partition still
open has a record waiting, or has reached its end, so what the sequence holds
depends on the topics' contents and the start offsets only. The engine stores
its resume offsets at batch ends, so a restarted engine takes up the same
sequence at the same batch: a crash leaves the same state as a clean run
(acceptance of issue 5).

Every worker of the engine runs such a reader over all partitions and applies
its own share of each batch (`flows.cluster`). The workers agree on each
batch's plan through the state store (`agree`: the first worker to cut batch
N sets its plan, the others take that plan), so they process the same batches
also where timing decides the cut: when the input is live (some partition
waits for records that do not exist yet), a partial batch goes out once the
waiting partitions reach their end again, and idle ticks are batches too.
The cost: each worker reads and parses every record, and each value is
parsed once more here for its `ts`.
"""

from __future__ import annotations

import heapq
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import orjson
from bytewax.inputs import DynamicSource, StatelessSourcePartition
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

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)


@dataclass(slots=True)
class BatchEnd:
    """The records since the previous `BatchEnd` are batch `seq`, as read by
    worker `index` of `count` (every worker reads the same batches). `wall_ms`
    is when the batch was cut: every worker judges its records' times against
    the same wall clock (0: not known, use your own)."""

    seq: int = 0
    index: int = 0
    count: int = 1
    wall_ms: int = 0


class Start(Protocol):
    """Where a worker's reader starts: after batch `seq`, at `offsets` ("topic#p"),
    with the partitions named in `ended` at their end, as that batch left them."""

    @property
    def seq(self) -> int: ...

    @property
    def offsets(self) -> dict[str, int]: ...

    @property
    def ended(self) -> frozenset[str]: ...


# A batch plan, as the workers agree on it (JSON-able): the end offset of each
# partition with records in the batch ("topic#p" -> next offset), the
# partitions whose end the batch reaches, and the wall time of an idle tick.
Plan = dict[str, Any]


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


class _MergedReader(StatelessSourcePartition[Item]):
    """One worker's reader of every input partition.

    Each batch is cut from the records waiting (`_plan`), proposed to the other
    workers (`agree`: the first proposal of a batch number wins), and taken
    out in merged order (`_take`). A worker whose proposal lost takes the
    winner's plan instead: all workers process the same batches, also when
    live input makes the cut depend on timing.
    """

    def __init__(
        self,
        config: dict[str, Any],
        starts: dict[tuple[str, int], int],
        logical: dict[str, str],
        *,
        seq: int,
        ended: frozenset[str],
        index: int,
        count: int,
        agree: Callable[[int, Plan | None], Plan | None],
        batch_size: int,
        until_caught_up: bool,
        tick_ms: int,
    ) -> None:
        self._consumer = Consumer(config)
        self._consumer.assign([TopicPartition(t, p, off) for (t, p), off in starts.items()])
        self._logical = logical
        self._rank = {topic: i for i, topic in enumerate(sorted(logical))}
        self._parts = sorted(starts)
        self._by_name = {self._name(tp): tp for tp in self._parts}
        self._waiting: dict[tuple[str, int], deque[tuple[int, Record]]] = {
            tp: deque() for tp in self._parts
        }
        # next offset known read (records or the partition's end) per partition
        self._read_to: dict[tuple[str, int], int] = {
            tp: off if off >= 0 else 0 for tp, off in starts.items()
        }
        self._eof: set[tuple[str, int]] = set()  # at its end as last reported
        # its end mark is in the sequence (restored from the resume point: the
        # sequence goes on as it would have without a restart)
        self._ended = {tp for tp in self._parts if self._name(tp) in ended}
        self._seq = seq  # the last batch taken
        self._index = index
        self._count = count
        self._agree = agree
        self._batch_size = batch_size
        self._until_caught_up = until_caught_up
        self._tick_ms = tick_ms
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
                    if msg.offset() is not None and msg.offset() >= 0:
                        self._read_to[tp] = max(self._read_to[tp], msg.offset())
                    continue
                if err.fatal():
                    raise ConnectorError(f"kafka: {self._name(tp)}: {err}")
                log.warning("kafka: %s: %s", self._name(tp), err)
                continue
            self._eof.discard(tp)
            self._read_to[tp] = max(self._read_to[tp], msg.offset() + 1)
            rec = Record(self._logical[tp[0]], tp[1], msg.offset(), msg.key(), msg.value(), now_ms)
            self._waiting[tp].append((event_ms(rec.value), rec))
        return bool(msgs)

    def _plan(self, now_ms: int) -> Plan | None:
        """The next batch as this reader would cut it, or None while it must wait.

        Records go in merged order; one is taken only when every partition
        still open has a record waiting or has reached its end, so what a batch
        holds depends on the topics' contents and the start offsets only.
        """
        taken = dict.fromkeys(self._parts, 0)
        ended = set(self._ended)
        newly: list[str] = []
        n = 0
        while n < self._batch_size:
            heads = []
            for tp in self._parts:
                queue, i = self._waiting[tp], taken[tp]
                if i < len(queue):
                    ended.discard(tp)  # live input: the partition delivers again
                    ts, rec = queue[i]
                    heads.append((ts, self._rank[tp[0]], tp[1], rec.offset, tp))
                elif tp not in ended:
                    if tp not in self._eof:
                        return None  # its next record may come first: wait for it
                    ended.add(tp)
                    newly.append(self._name(tp))
            if not heads:
                if not n and not newly:
                    return None  # every partition at its end, as already marked
                break
            tp = min(heads)[-1]
            taken[tp] += 1
            n += 1
        ends = {
            self._name(tp): self._waiting[tp][k - 1][1].offset + 1 for tp, k in taken.items() if k
        }
        return {"ends": ends, "ended": newly, "tick": None, "wall": now_ms}

    def _take(self, plan: Plan) -> list[Item] | None:
        """Batch `plan` in merged order, or None until every record of it is read."""
        ends = {self._by_name[name]: end for name, end in plan["ends"].items()}
        if any(self._read_to[tp] < end for tp, end in ends.items()):
            return None
        out: list[Item] = []
        if plan.get("tick") is not None:
            out.append(Tick(int(plan["tick"])))
        heads = []
        for tp, end in ends.items():
            queue = self._waiting[tp]
            if queue and queue[0][1].offset < end:
                ts, rec = queue[0]
                heads.append((ts, self._rank[tp[0]], tp[1], rec.offset, tp))
        heapq.heapify(heads)
        while heads:
            tp = heads[0][-1]
            out.append(self._waiting[tp].popleft()[1])
            queue = self._waiting[tp]
            if queue and queue[0][1].offset < ends[tp]:
                ts, rec = queue[0]
                heapq.heapreplace(heads, (ts, self._rank[tp[0]], tp[1], rec.offset, tp))
            else:
                heapq.heappop(heads)
        self._ended -= set(ends)
        for name in plan["ended"]:
            self._ended.add(self._by_name[name])
            out.append(PartitionMark(name, at_end=True))
        self._seq += 1
        # the last batch of a catch-up run: empty, committed like any other, so
        # a later run goes on after it
        self._done = bool(plan.get("done"))
        out.append(BatchEnd(self._seq, self._index, self._count, int(plan.get("wall") or 0)))
        return out

    def next_batch(self) -> list[Item]:
        if self._done or SHUTDOWN.is_set():
            raise StopIteration
        if not self._opened:
            self._opened = True
            opened = [PartitionMark(self._name(tp), at_end=False) for tp in self._parts]
            return [*opened, *(PartitionMark(self._name(tp), at_end=True) for tp in self._ended)]
        got = self._pull()
        now_ms = int(time.time() * 1000)
        self._awake = None if got else datetime.now(UTC) + IDLE_POLL
        seq = self._seq + 1
        plan = self._agree(seq, None)  # another worker may have cut it already
        if plan is None:
            plan = self._plan(now_ms)
            if plan is None:
                at_end = len(self._ended) == len(self._parts)
                if at_end and self._until_caught_up:
                    # the end is agreed like any batch: no worker stops while
                    # another, seeing records produced meanwhile, cuts one more
                    plan = {"ends": {}, "ended": [], "tick": None, "wall": now_ms, "done": True}
                elif not at_end or now_ms - self._last_data_ms < self._tick_ms:
                    return []
                else:
                    plan = {"ends": {}, "ended": [], "tick": now_ms, "wall": now_ms}
            plan = self._agree(seq, plan)
            assert plan is not None
        out = self._take(plan)
        if out is None:
            return []  # the winning plan holds records this reader has not read yet
        self._last_data_ms = now_ms
        return out

    def next_awake(self) -> datetime | None:
        return self._awake

    def close(self) -> None:
        self._consumer.close()


class OrderedKafkaInput(DynamicSource[Item]):
    """All partitions of `topics` (full name -> logical name) as one merged sequence,
    read whole by every worker."""

    def __init__(
        self,
        config: dict[str, Any],
        topics: dict[str, str],
        *,
        start: Callable[[int, int], Start],
        agree: Callable[[int, Plan | None], Plan | None],
        batch_size: int = 1000,
        until_caught_up: bool = False,
        tick_ms: int = 1000,
    ) -> None:
        self._config = config
        self._topics = topics
        self._start = start
        self._agree = agree
        self._batch_size = batch_size
        self._until_caught_up = until_caught_up
        self._tick_ms = tick_ms

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _MergedReader:
        begin = self._start(worker_index, worker_count)
        starts = {
            (full, p): begin.offsets.get(f"{self._topics[full]}#{p}", OFFSET_BEGINNING)
            for full, parts in topic_partitions(self._config, self._topics).items()
            for p in parts
        }
        return _MergedReader(
            self._config,
            starts,
            self._topics,
            seq=begin.seq,
            ended=begin.ended,
            index=worker_index,
            count=worker_count,
            agree=self._agree,
            batch_size=self._batch_size,
            until_caught_up=self._until_caught_up,
            tick_ms=self._tick_ms,
        )
