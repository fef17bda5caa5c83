"""Confirming delivered triggers: the sink's side of the outbox (`state.outbox`)."""

from __future__ import annotations

from typing import Any

import redis

from common import metrics
from state.keys import Keys
from state.outbox import Outbox


class OutboxConfirmer:
    """Made by the sink's `build` on its worker; connects on first use."""

    def __init__(self, redis_url: str, keys: Keys) -> None:
        self._url = redis_url
        self._keys = keys
        self._client: redis.Redis | None = None
        self._outbox: Outbox | None = None

    def confirm(self, receipts: list[Any], offsets: dict[str, int]) -> None:
        if self._outbox is None:
            self._client = redis.Redis.from_url(self._url)
            self._outbox = Outbox(self._client, self._keys)
        self._outbox.confirm(receipts, offsets)
        for r in receipts:
            metrics.count_batch(r.counters)  # emitted, suppressed, held, uplift: once delivered

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
            self._outbox = None
