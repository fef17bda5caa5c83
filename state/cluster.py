"""Ordered input on several workers: batch plans, phase barriers, worker progress.

With `engine.ordered_input` every worker reads every input partition and
cuts the merged sequence into the same numbered batches; each worker applies
its share of each batch (see `flows.cluster`). Three things make the workers
agree, all under one hash tag so the layout also works on Redis Cluster:

    <p>:{bsp}:plan:<seq>        string  the batch's plan (JSON): end offsets per
                                        partition, the partitions it ends, a tick;
                                        the first worker to cut it sets it (NX)
    <p>:{bsp}:at:<seq>:<phase>  set     indexes of the workers past that phase
    <p>:{bsp}:shape:<old>><n>   string  where a cluster of n workers that follows
                                        shape <old> starts (JSON; decided once)
    <p>:{bsp}:peek:<seq>        hash    sku -> stock per location, as worker 0's
                                        inventory call saw it (for the others' BOPIS)
    <p>:offsets[:w<i>]          hash    a worker's resume offsets, with "@seq"
                                        (its last committed batch), "@workers",
                                        "@ended" (partitions then at their end) and
                                        "@shape" (the cluster shape it belongs to)

Plans and barrier sets expire (`RETENTION_S`): they matter only while the
workers are within a batch of each other, or redo a batch after a crash. A
worker whose progress shows it committed a batch counts as past all of that
batch's phases, so a restart after the sets expired does not wait for it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import orjson
import redis

from state.errors import StateError, call, execute
from state.keys import Keys

RETENTION_S = 3600
# How long the decision of a new cluster shape's start is kept (its workers build
# within seconds of each other).
SHAPE_DECISION_S = 86_400
# How often a worker waiting at a barrier also reads the others' progress.
PROGRESS_CHECK_S = 0.5
SEQ_FIELD = "@seq"
WORKERS_FIELD = "@workers"
ENDED_FIELD = "@ended"  # partitions at their end after that batch, comma-separated
SHAPE_FIELD = "@shape"  # "<workers>:<batch the shape started after>"


@dataclass(frozen=True, slots=True)
class Resume:
    """Where a worker's reader starts: after batch `seq`, at `offsets`, with the
    partitions in `ended` at their end (they no longer hold the clock back)."""

    seq: int
    offsets: dict[str, int]
    ended: frozenset[str] = frozenset()


def progress_key(keys: Keys, index: int) -> str:
    """Worker 0 keeps the single-worker key, so a one-worker store reads as before."""
    return keys.offsets if index == 0 else f"{keys.offsets}:w{index}"


@dataclass(frozen=True, slots=True)
class _Row:
    """A worker's progress hash: its resume point and the cluster shape it belongs to
    ("<workers>:<batch it started from>", set when the worker took up that shape)."""

    at: Resume
    workers: int
    shape: str


def _decode(raw: dict[bytes, bytes]) -> _Row:
    offsets, seq, workers, ended, shape = {}, 0, 0, frozenset[str](), ""
    for k, v in raw.items():
        name = k.decode()
        if name == SEQ_FIELD:
            seq = int(v)
        elif name == WORKERS_FIELD:
            workers = int(v)
        elif name == ENDED_FIELD:
            ended = frozenset(filter(None, v.decode().split(",")))
        elif name == SHAPE_FIELD:
            shape = v.decode()
        else:
            offsets[name] = int(v)
    return _Row(Resume(seq, offsets, ended), workers, shape)


def resume_point(client: redis.Redis, keys: Keys, index: int, count: int) -> Resume:
    """Where worker `index` of `count` goes on; records it as this worker's start.

    A worker of the cluster shape that ran last goes on from its own last
    batch. A new shape (another worker count, a store a single worker wrote, or
    a fresh store) starts after the batch that the slowest worker of the last
    shape committed: the batches some had done beyond it are read again, their
    events skipped as duplicates. That start is decided once for all the new
    shape's workers, and each records it in its own row (worker 0's row then
    names the shape: no worker commits a batch before all have built).
    """
    first = _decode(call(lambda: client.hgetall(progress_key(keys, 0)), "read resume offsets"))
    if first.shape.split(":")[0] == str(count):
        if index == 0:
            return first.at
        own = _decode(
            call(lambda: client.hgetall(progress_key(keys, index)), "read resume offsets")
        )
        if own.shape == first.shape:
            return own.at
        start = first.at  # worker 0 took up this shape: its row is still the start
    else:
        start = _new_shape_start(client, keys, first, count)
    pipe = client.pipeline(transaction=True)
    key = progress_key(keys, index)
    pipe.delete(key)
    pipe.hset(
        key,
        mapping={
            **start.offsets,
            SEQ_FIELD: start.seq,
            WORKERS_FIELD: count,
            ENDED_FIELD: ",".join(sorted(start.ended)),
            SHAPE_FIELD: f"{count}:{start.seq}",
        },
    )
    execute(pipe, "record a worker's start")
    return start


def _new_shape_start(client: redis.Redis, keys: Keys, first: _Row, count: int) -> Resume:
    """The start of a new cluster shape: decided once (SET NX), by whichever worker
    comes first, from the rows of the last shape as they were then."""
    decision = f"{keys.prefix}:{{bsp}}:shape:{first.shape or '-'}>{count}"
    raw = call(lambda: client.get(decision), "read a cluster shape")
    if raw is None:
        pipe = client.pipeline(transaction=False)
        for i in range(1, max(first.workers, 1)):
            pipe.hgetall(progress_key(keys, i))
        rows = [first, *(_decode(r) for r in execute(pipe, "read resume offsets"))]
        lowest = min((r.at for r in rows if r.shape == first.shape), key=lambda at: at.seq)
        mine = {"seq": lowest.seq, "offsets": lowest.offsets, "ended": sorted(lowest.ended)}
        pipe = client.pipeline(transaction=False)
        pipe.set(decision, orjson.dumps(mine), nx=True, ex=SHAPE_DECISION_S)
        pipe.get(decision)
        raw = execute(pipe, "decide a cluster shape")[-1]
    got = orjson.loads(raw)
    return Resume(int(got["seq"]), dict(got["offsets"]), frozenset(got["ended"]))


class Plans:
    """Batch plans: the `agree` callable of the ordered readers.

    `plans(seq, None)` reads batch `seq`'s plan if one is set; `plans(seq, mine)`
    proposes `mine` and returns the plan that won (mine if it came first). The
    client is opened on first use, in a worker, and shared by the process's readers.
    """

    def __init__(self, redis_url: str, keys: Keys) -> None:
        self.redis_url = redis_url
        self.base = f"{keys.prefix}:{{bsp}}"
        self._client: redis.Redis | None = None
        self._opening = threading.Lock()

    def key(self, seq: int) -> str:
        return f"{self.base}:plan:{seq}"

    def __call__(self, seq: int, mine: dict[str, Any] | None) -> dict[str, Any] | None:
        with self._opening:
            if self._client is None:
                self._client = redis.Redis.from_url(self.redis_url)
        client, key = self._client, self.key(seq)
        if mine is None:
            raw = call(lambda: client.get(key), "read a batch plan")
            return orjson.loads(raw) if raw else None
        pipe = client.pipeline(transaction=False)
        pipe.set(key, orjson.dumps(mine), nx=True, ex=RETENTION_S)
        pipe.get(key)
        return orjson.loads(execute(pipe, "agree on a batch plan")[1])


class Cluster:
    """One worker's view of the others: plans, barriers, progress."""

    def __init__(
        self,
        client: redis.Redis,
        keys: Keys,
        index: int,
        count: int,
        *,
        timeout_s: float,
        stop: Callable[[], bool] = lambda: False,
    ) -> None:
        self.client = client
        self.keys = keys
        self.index = index
        self.count = count
        self.timeout_s = timeout_s
        self.stop = stop
        self._base = f"{keys.prefix}:{{bsp}}"

    def barrier_key(self, seq: int, phase: str) -> str:
        return f"{self._base}:at:{seq}:{phase}"

    def peeks_key(self, seq: int) -> str:
        return f"{self._base}:peek:{seq}"

    # -- barriers -----------------------------------------------------------------

    def arrive_and_wait(self, seq: int, phase: str) -> float:
        """Mark this worker past `phase` of batch `seq`; wait for every other worker.

        Returns the seconds waited. A worker that does not arrive within the
        timeout (stopped, crashed, cut off) fails the step with a clear error
        rather than leaving the cluster hanging without a word.
        """
        if self.count <= 1:
            return 0.0
        key = self.barrier_key(seq, phase)
        pipe = self.client.pipeline(transaction=False)
        pipe.sadd(key, self.index)
        pipe.expire(key, RETENTION_S)
        pipe.scard(key)
        arrived = execute(pipe, "arrive at a barrier")[-1]
        started = time.monotonic()
        pause = 0.0005
        checked = started
        while arrived < self.count:
            if self.stop():
                raise KeyboardInterrupt(f"stopped waiting at batch {seq} {phase}")
            now = time.monotonic()
            waited = now - started
            if now - checked > PROGRESS_CHECK_S:
                # a worker that committed the batch (or, at its start, the one
                # before) is past the phase, also when the set has expired
                # since (a restart after a long stop) or it never arrived there
                checked = now
                self._count_committed(key, seq - 1 if phase == "start" else seq)
            if waited > self.timeout_s:
                here = call(lambda: self.client.smembers(key), "read a barrier")
                missing = sorted(set(range(self.count)) - {int(i) for i in here})
                raise StateError(
                    f"cluster: worker(s) {missing} did not reach batch {seq} ({phase}) "
                    f"within {self.timeout_s:.0f} s; is every process of the cluster running?"
                )
            time.sleep(pause)
            pause = min(pause * 2, 0.01)
            arrived = call(lambda: self.client.scard(key), "read a barrier")
        return time.monotonic() - started

    def _count_committed(self, key: str, done: int) -> None:
        """Add to barrier `key` every worker whose committed batch is `done` or later."""
        pipe = self.client.pipeline(transaction=False)
        for i in range(self.count):
            pipe.hget(progress_key(self.keys, i), SEQ_FIELD)
        seqs = execute(pipe, "read the workers' progress")
        past = [i for i, at in enumerate(seqs) if at is not None and int(at) >= done]
        if past:
            pipe = self.client.pipeline(transaction=False)
            pipe.sadd(key, *past)
            pipe.expire(key, RETENTION_S)
            execute(pipe, "arrive at a barrier")

    def arrived(self, seq: int, phase: str) -> bool:
        """Whether this worker was past `phase` of batch `seq` (before a restart)."""
        if self.count <= 1:
            return False  # a lone worker keeps no barriers
        key = self.barrier_key(seq, phase)
        return bool(call(lambda: self.client.sismember(key, self.index), "read a barrier"))

    # -- stock seen by worker 0 ---------------------------------------------------

    def publish_peeks(self, seq: int, stock: dict[str, dict[str, int]]) -> None:
        """Stock per SKU as batch `seq`'s inventory call saw it, for the other workers."""
        key = self.peeks_key(seq)
        pipe = self.client.pipeline(transaction=False)
        pipe.hset(key, mapping={sku: orjson.dumps(units) for sku, units in stock.items()})
        pipe.expire(key, RETENTION_S)
        execute(pipe, "publish stock peeks")

    def peeks(self, seq: int) -> dict[str, dict[str, int]]:
        raw = call(lambda: self.client.hgetall(self.peeks_key(seq)), "read stock peeks")
        return {k.decode(): orjson.loads(v) for k, v in raw.items()}

    # -- progress -----------------------------------------------------------------

    def queue_progress(
        self, pipe: Any, seq: int, offsets: dict[str, int], ended: Iterable[str]
    ) -> None:
        """Queue this worker's resume point: batch `seq` is committed."""
        fields: dict[str, int | str] = {
            **offsets,
            SEQ_FIELD: seq,
            WORKERS_FIELD: self.count,
            ENDED_FIELD: ",".join(sorted(ended)),
        }
        pipe.hset(progress_key(self.keys, self.index), mapping=fields)

    def owns_shard(self, shard: int) -> bool:
        return shard % self.count == self.index

    def owns(self, subject: str) -> bool:
        """A customer (or visitor) belongs to the worker of its timer shard."""
        return self.keys.timer_shard(subject) % self.count == self.index
