"""Ordered input on several workers: batch plans, phase barriers, worker progress.

With `engine.ordered_input` every worker reads every input partition and
cuts the merged sequence into the same numbered batches; each worker applies
its share of each batch (see `flows.cluster`). Three things make the workers
agree, all under one hash tag so the layout also works on Redis Cluster:

    <p>:{bsp}:plan:<seq>        string  the batch's plan (JSON): end offsets per
                                        partition, the partitions it ends, a tick;
                                        the first worker to cut it sets it (NX)
    <p>:{bsp}:at:<seq>:<phase>  set     indexes of the workers past that phase
    <p>:{bsp}:peek:<seq>        hash    sku -> stock per location, as worker 0's
                                        inventory call saw it (for the others' BOPIS)
    <p>:offsets[:w<i>]          hash    a worker's resume offsets, with "@seq"
                                        (its last committed batch), "@workers" and
                                        "@ended" (partitions then at their end)

Plans and barrier sets expire (`RETENTION_S`): they matter only while the
workers are within a batch of each other, or redo a batch after a crash.
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
SEQ_FIELD = "@seq"
WORKERS_FIELD = "@workers"
ENDED_FIELD = "@ended"  # partitions at their end after that batch, comma-separated


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


def _decode(raw: dict[bytes, bytes]) -> tuple[Resume, int]:
    """A progress hash as (resume point, the cluster size that wrote it)."""
    offsets, seq, workers, ended = {}, 0, 0, frozenset[str]()
    for k, v in raw.items():
        name = k.decode()
        if name == SEQ_FIELD:
            seq = int(v)
        elif name == WORKERS_FIELD:
            workers = int(v)
        elif name == ENDED_FIELD:
            ended = frozenset(filter(None, v.decode().split(",")))
        else:
            offsets[name] = int(v)
    return Resume(seq, offsets, ended), workers


def resume_point(client: redis.Redis, keys: Keys, index: int, count: int) -> Resume:
    """Where worker `index` of `count` goes on.

    A worker of the same cluster shape goes on from its own last batch. After
    a change of shape (or from a store a single worker wrote) every worker
    starts after the batch that the slowest recorded worker committed: the
    batches some had done beyond it are read again, their events skipped as
    duplicates.
    """
    pipe = client.pipeline(transaction=False)
    for i in range(max(count, 1)):
        pipe.hgetall(progress_key(keys, i))
    rows = [_decode(r) for r in execute(pipe, "read resume offsets")]
    if all(workers == count for _, workers in rows):
        return rows[index][0]
    known = [at for at, workers in rows if workers or at.offsets]
    return min(known, key=lambda at: at.seq) if known else Resume(0, {})


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
        while arrived < self.count:
            if self.stop():
                raise KeyboardInterrupt(f"stopped waiting at batch {seq} {phase}")
            waited = time.monotonic() - started
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
