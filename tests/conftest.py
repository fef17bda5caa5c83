"""Shared fixtures: one embedded broker and redis-server per session, isolated per test.

The services are started once (they are cheap, but not free) and never skipped:
a test that needs them fails loudly if they cannot start. Tests stay apart by
name instead: each gets its own topic prefix and Redis key prefix, and only its
own keys are deleted afterwards, so tests may share the servers.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import redis
from confluent_kafka.admin import AdminClient

from connectors.embedded import EmbeddedBroker, EmbeddedRedis


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedBroker]:
    with EmbeddedBroker(tmp_path_factory.mktemp("broker")) as service:
        yield service


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRedis]:
    with EmbeddedRedis(tmp_path_factory.mktemp("redis")) as service:
        yield service


@pytest.fixture(scope="session")
def kafka_admin(broker: EmbeddedBroker) -> AdminClient:
    return AdminClient({"bootstrap.servers": broker.bootstrap_servers})


@pytest.fixture
def unique_tag() -> str:
    """A short id unique to this test, shared by its topic and key prefixes."""
    return f"t{uuid.uuid4().hex[:8]}"


@pytest.fixture
def topic_prefix(unique_tag: str) -> str:
    """Prefix for this test's topics, e.g. ``t1a2b3c4d.`` + ``orders``."""
    return f"{unique_tag}."


@pytest.fixture
def key_prefix(unique_tag: str) -> str:
    """Prefix for this test's Redis keys; they are deleted after the test."""
    return unique_tag


@pytest.fixture
def redis_client(redis_server: EmbeddedRedis, key_prefix: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_server.url)
    try:
        yield client
    finally:
        # Only this test's keys: FLUSHALL would pull the rug from other tests.
        batch: list[bytes] = []
        for key in client.scan_iter(match=f"{key_prefix}*", count=1000):
            batch.append(key)
            if len(batch) >= 1000:
                client.delete(*batch)
                batch.clear()
        if batch:
            client.delete(*batch)
        client.close()
