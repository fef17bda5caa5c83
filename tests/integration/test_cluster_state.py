"""The ordered cluster's coordination in Redis (state/cluster.py), on a real server:
barriers that also trust committed progress, and where a cluster of a new
shape starts."""

from __future__ import annotations

import time

import pytest
import redis

from state.cluster import Cluster, progress_key, resume_point
from state.errors import StateError
from state.keys import Keys

pytestmark = pytest.mark.integration


def commit(client: redis.Redis, keys: Keys, worker: int, seq: int, **offsets: int) -> None:
    """What a worker's batch commit writes into its row (offsets named a_0 -> "a#0")."""
    fields = {k.replace("_", "#"): v for k, v in offsets.items()}
    client.hset(progress_key(keys, worker), mapping={**fields, "@seq": seq})


def test_a_worker_that_committed_the_batch_counts_as_past_its_phases(
    redis_client: redis.Redis, key_prefix: str
) -> None:
    keys = Keys(key_prefix)
    first = Cluster(redis_client, keys, 0, 2, timeout_s=3)
    commit(redis_client, keys, 1, 5)
    # worker 1 never arrived at these (or the sets expired while the cluster was down)
    began = time.monotonic()
    first.arrive_and_wait(5, "applied")
    first.arrive_and_wait(6, "start")  # the start of 6 needs 5 committed
    assert time.monotonic() - began < 2.5
    with pytest.raises(StateError, match=r"worker\(s\) \[1\] did not reach batch 6 \(applied\)"):
        first.arrive_and_wait(6, "applied")


def test_a_new_cluster_shape_starts_where_the_slowest_worker_of_the_last_one_was(
    redis_client: redis.Redis, key_prefix: str
) -> None:
    keys = Keys(key_prefix)
    # a fresh store: two workers start at the beginning
    assert resume_point(redis_client, keys, 1, 2).seq == 0
    assert resume_point(redis_client, keys, 0, 2).seq == 0
    commit(redis_client, keys, 0, 10, a_0=100, b_0=7)
    commit(redis_client, keys, 1, 9, a_0=90, b_0=7)
    # the same shape again: each worker from its own row
    assert resume_point(redis_client, keys, 0, 2).seq == 10
    assert resume_point(redis_client, keys, 1, 2).offsets == {"a#0": 90, "b#0": 7}

    # three workers: all after batch 9, with every partition's offset in their rows
    starts = [resume_point(redis_client, keys, i, 3) for i in (2, 0, 1)]
    assert {(s.seq, tuple(sorted(s.offsets.items()))) for s in starts} == {
        (9, (("a#0", 90), ("b#0", 7)))
    }
    for i in range(3):
        row = redis_client.hgetall(progress_key(keys, i))
        assert row[b"@seq"] == b"9" and row[b"b#0"] == b"7", row

    # one worker, then three again: the rows of the first three-worker era are
    # not taken for the second one's
    commit(redis_client, keys, 0, 12, a_0=120)
    commit(redis_client, keys, 1, 11, a_0=110)
    commit(redis_client, keys, 2, 12, a_0=120)
    assert resume_point(redis_client, keys, 0, 1).seq == 11
    commit(redis_client, keys, 0, 20, a_0=200)
    assert [resume_point(redis_client, keys, i, 3).seq for i in (1, 2, 0)] == [20, 20, 20]
