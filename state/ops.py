"""Reads for the health and metrics endpoints.

They use their own client with short timeouts and are never retried: a
probe or a scrape must answer quickly, also (above all) while Redis is down.
"""

from __future__ import annotations

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from state.keys import Keys


def probe_client(url: str, timeout_s: float) -> redis.Redis:
    """A client that fails within `timeout_s` instead of retrying."""
    return redis.Redis.from_url(
        url,
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        retry=Retry(NoBackoff(), 0),
    )


def ping(client: redis.Redis) -> None:
    """Raise redis.RedisError unless Redis answers."""
    client.ping()


def customers_known(client: redis.Redis, keys: Keys) -> int:
    """Customers the engine has seen (kept by the engine in `<prefix>:rfm:agg`)."""
    return int(client.hget(keys.agg, "customers") or 0)
