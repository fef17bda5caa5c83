"""State calls through a Redis outage: with the engine's policy a pipeline waits
for Redis and runs once it is back (its Lua scripts loaded again into the
restarted server); without it, or when the engine stops, it fails at once."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from connectors.embedded import EmbeddedRedis
from state.errors import OutagePolicy, StateError, call, execute, riding_out_outages

pytestmark = pytest.mark.integration

INCR_BY = "return redis.call('INCRBY', KEYS[1], ARGV[1])"


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[EmbeddedRedis]:
    server = EmbeddedRedis(tmp_path / "redis", persistent=True)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def engine_client(server: EmbeddedRedis) -> redis.Redis:
    return redis.Redis.from_url(server.url, retry=Retry(NoBackoff(), 0))


def in_thread(fn: Any) -> tuple[threading.Thread, dict[str, Any]]:
    out: dict[str, Any] = {}

    def run() -> None:
        try:
            out["value"] = fn()
        except Exception as ex:
            out["error"] = ex

    t = threading.Thread(target=run)
    t.start()
    return t, out


def test_a_pipeline_waits_for_redis_and_runs_once_it_is_back(own_redis: EmbeddedRedis) -> None:
    client = engine_client(own_redis)
    script = client.register_script(INCR_BY)
    script(keys=["n"], args=[1])  # loaded into this server's script cache
    policy = OutagePolicy(first_backoff_s=0.01, max_backoff_s=0.2)
    own_redis.stop()

    pipe = client.pipeline(transaction=False)
    script(keys=["n"], args=[10], client=pipe)
    pipe.incrby("m", 5)
    with riding_out_outages(policy):
        t, out = in_thread(lambda: execute(pipe, "test round"))
        time.sleep(0.5)
        assert t.is_alive()  # waiting, not failed
        assert policy.failing_since is not None
        own_redis.start()  # an empty script cache: the script is loaded again
        t.join(timeout=20)
    assert out == {"value": [11, 5]}  # each command ran once
    assert policy.failing_since is None
    assert int(client.get("n") or 0) == 11
    assert int(client.get("m") or 0) == 5
    client.close()


def test_without_the_policy_or_when_stopping_a_call_fails_at_once(
    own_redis: EmbeddedRedis,
) -> None:
    client = engine_client(own_redis)
    own_redis.stop()
    started = time.monotonic()
    with pytest.raises(StateError, match="redis: read n failed"):
        call(lambda: client.get("n"), "read n")
    assert time.monotonic() - started < 5

    policy = OutagePolicy(first_backoff_s=0.01, max_backoff_s=0.2)
    with riding_out_outages(policy):
        t, out = in_thread(lambda: call(lambda: client.get("n"), "read n"))
        time.sleep(0.3)
        assert t.is_alive()
        policy.stop.set()  # SIGTERM while Redis is down
        t.join(timeout=5)
    assert isinstance(out.get("error"), StateError)
    assert "stopping while Redis is unreachable" in str(out["error"])
    assert isinstance(out["error"].__cause__, redis.ConnectionError)
    client.close()
