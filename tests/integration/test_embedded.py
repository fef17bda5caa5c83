"""The embedded broker and redis-server: they work, and they never outlive their owner."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import redis
from confluent_kafka import Consumer, TopicPartition
from kafkautil import consume_all, create_topics, produce

from connectors.embedded import EmbeddedBroker, EmbeddedRedis, embedded_services
from connectors.errors import ConnectorError, EmbeddedServiceError

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def _wait_gone(pid: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not _gone(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_broker_round_trip(broker: EmbeddedBroker, topic_prefix: str) -> None:
    topic = f"{topic_prefix}orders"
    create_topics(broker.bootstrap_servers, [topic], partitions=3)
    sent = [(f"c{i}", f"v{i}".encode()) for i in range(30)]
    produce(broker.bootstrap_servers, topic, sent)

    got = consume_all(broker.bootstrap_servers, topic)

    assert sorted(r.value for r in got) == sorted(v for _, v in sent)
    # Same key, same partition: per-customer ordering relies on it.
    by_key = {r.key: r.partition for r in got}
    assert len(by_key) == 30
    # One record per batch, so the reported high watermark is the true log end.
    consumer = Consumer({"bootstrap.servers": broker.bootstrap_servers, "group.id": "wm"})
    try:
        for partition in range(3):
            offsets = [r.offset for r in got if r.partition == partition]
            assert offsets == list(range(len(offsets)))
            _, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=5)
            assert high == len(offsets)
    finally:
        consumer.close()


def test_consume_all_of_an_empty_topic(broker: EmbeddedBroker, topic_prefix: str) -> None:
    topic = f"{topic_prefix}empty"
    create_topics(broker.bootstrap_servers, [topic], partitions=2)
    assert consume_all(broker.bootstrap_servers, topic) == []


def test_redis_ping_and_lua(redis_client: redis.Redis, key_prefix: str) -> None:
    assert redis_client.ping()
    script = "redis.call('INCRBY', KEYS[1], ARGV[1]); return redis.call('GET', KEYS[1])"
    assert redis_client.eval(script, 1, f"{key_prefix}:n", 5) == b"5"
    assert redis_client.eval(script, 1, f"{key_prefix}:n", 2) == b"7"


def test_stop_leaves_no_process(tmp_path: Path) -> None:
    with embedded_services(tmp_path) as (broker, redis_server):
        pids = [broker.pid, redis_server.pid]
        assert all(pid is not None and not _gone(pid) for pid in pids)
        assert redis.Redis.from_url(redis_server.url).ping()
    assert broker.pid is None and redis_server.pid is None
    assert all(_gone(pid) for pid in pids if pid is not None)
    assert (tmp_path / "broker.log").exists() and (tmp_path / "redis.log").exists()


def test_owned_temp_run_dir_is_removed() -> None:
    service = EmbeddedRedis()
    service.start()
    run_dir = service.run_dir
    assert run_dir.is_dir()
    service.stop()
    assert not run_dir.exists()


@pytest.mark.parametrize("persistent", [False, True])
def test_redis_kill_then_start_again(tmp_path: Path, persistent: bool) -> None:
    service = EmbeddedRedis(tmp_path, persistent=persistent)
    try:
        service.start()
        url, pid = service.url, service.pid
        assert pid is not None
        redis.Redis.from_url(url).set("k", "v")

        service.kill()
        assert _gone(pid)

        service.start()
        assert service.url == url  # same port, so clients can reconnect
        client = redis.Redis.from_url(url)
        assert client.ping()
        assert client.get("k") == (b"v" if persistent else None)
    finally:
        service.stop()


def test_port_in_use_is_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        service = EmbeddedBroker(tmp_path, port=port)
        with pytest.raises(EmbeddedServiceError, match="Address in use") as info:
            service.start()
    assert isinstance(info.value, ConnectorError)
    assert service.pid is None


def test_ctrl_c_in_the_parent_stops_the_children(tmp_path: Path) -> None:
    child = textwrap.dedent(
        """
        import time
        from connectors.embedded import EmbeddedBroker, EmbeddedRedis
        broker, redis_server = EmbeddedBroker(), EmbeddedRedis()
        broker.start()
        redis_server.start()
        print(broker.pid, redis_server.pid, flush=True)
        time.sleep(60)
        """
    )
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-c", child],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        pids = [int(p) for p in proc.stdout.readline().split()]
        assert len(pids) == 2 and not any(_gone(p) for p in pids)
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=20)
    finally:
        proc.kill()
    assert all(_wait_gone(p) for p in pids)
