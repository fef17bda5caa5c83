"""Helpers for end-to-end tests: put events on topics, run the engine to
caught-up, read triggers and the DLQ back."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import orjson
import redis
from kafkautil import consume_all, produce

from common.settings import Settings, settings_from_dict
from connectors.kafka_io import PartitionMark, Record
from omnipulse.endpoints import Endpoints
from omnipulse.runner import create_topics, run_engine

T0 = datetime(2025, 1, 6, 9, 0, tzinfo=UTC)  # far enough back for 400 days of history


def ts(days: float = 0, hours: float = 0, minutes: float = 0) -> str:
    """An RFC 3339 event time relative to T0."""
    return (
        (T0 + timedelta(days=days, hours=hours, minutes=minutes)).isoformat().replace("+00:00", "Z")
    )


def make_settings(
    broker: Any, redis_server: Any, topic_prefix: str, key_prefix: str, **sections: Any
) -> Settings:
    data: dict[str, Any] = {
        "kafka": {
            "bootstrap_servers": broker.bootstrap_servers,
            "topic_prefix": topic_prefix,
            "partitions": 2,
        },
        "redis": {"url": redis_server.url, "key_prefix": key_prefix},
        # any free port: tests (and other checkouts' tests) run side by side
        "engine": {"http_port": 0},
    }
    for name, values in sections.items():
        data.setdefault(name, {}).update(values)
    return settings_from_dict(data)


class Engine:
    """One test's engine: its own topics and keys on the session's services."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.ep = Endpoints(settings.kafka.bootstrap_servers or "", settings.redis.url or "")
        create_topics(settings, self.ep.bootstrap)
        self._n = 0

    def send(self, topic: str, *events: dict[str, Any] | bytes, key: str | None = None) -> None:
        records = []
        for ev in events:
            if isinstance(ev, dict):
                ev = dict(ev)
                if "event_id" not in ev and topic != "locations":
                    self._n += 1
                    ev["event_id"] = f"e{self._n}"
                k = key or ev.get("customer_id") or ev.get("sku") or ev.get("location_id")
                records.append((k.encode() if k else None, orjson.dumps(ev)))
            else:
                records.append((key.encode() if key else None, ev))
        produce(self.ep.bootstrap, self.settings.kafka.topic(topic), records)

    def run(self, workers: int = 1) -> None:
        run_engine(self.settings, self.ep, until_caught_up=True, workers=workers)

    def triggers(self, topic: str = "triggers.segment") -> list[dict[str, Any]]:
        return [
            orjson.loads(r.value)
            for r in consume_all(self.ep.bootstrap, self.settings.kafka.topic(topic))
        ]

    def dlq(self) -> list[dict[str, Any]]:
        return self.triggers("omnipulse.dlq")

    def cli_env(self, **extra: str) -> dict[str, str]:
        """The environment that points `omnipulse` at this test's services and names."""
        env = dict(
            os.environ,
            KAFKA_BOOTSTRAP_SERVERS=self.ep.bootstrap,
            REDIS_URL=self.ep.redis_url,
            OMNIPULSE_TOPIC_PREFIX=self.settings.kafka.topic_prefix,
            OMNIPULSE_KEY_PREFIX=self.settings.redis.key_prefix,
            OMNIPULSE_HTTP_PORT=str(self.settings.engine.http_port),
        )
        env.update(extra)
        return env

    def cli(self, *words: str, **extra_env: str) -> bytes:
        """Run `omnipulse WORDS` as a user would; its standard output."""
        out = subprocess.run(
            [sys.executable, "-m", "omnipulse.cli", *words],
            env=self.cli_env(**extra_env),
            capture_output=True,
        )
        assert out.returncode == 0, out.stderr.decode()
        return out.stdout

    def stats(self) -> dict[str, int]:
        """The engine's counters (the `<prefix>:stats` hash)."""
        with redis.Redis.from_url(self.ep.redis_url) as client:
            raw = client.hgetall(f"{self.settings.redis.key_prefix}:stats")
        return {k.decode(): int(v) for k, v in raw.items()}


def order(
    cid: str, oid: str, when: str, total: str, *, kind: str = "order_placed", channel: str = "web"
) -> dict[str, Any]:
    return {
        "type": kind,
        "ts": when,
        "channel": channel,
        "customer_id": cid,
        "order_id": oid,
        "lines": [{"sku": "SKU-1", "qty": 1, "unit_price": total}],
        "total": total,
        "currency": "CNY",
        "fulfilment": {"mode": "delivery", "lat": 31.23, "lon": 121.47},
    }


def click(
    cid: str | None,
    when: str,
    *,
    premium: bool = False,
    anonymous_id: str | None = None,
    category: str = "shoes",
) -> dict[str, Any]:
    ev: dict[str, Any] = {
        "type": "product_view",
        "ts": when,
        "channel": "app",
        "session_id": "s1",
        "sku": "SKU-9",
        "category": category,
        "premium": premium,
    }
    if cid:
        ev["customer_id"] = cid
    if anonymous_id:
        ev["anonymous_id"] = anonymous_id
    return ev


def cart(
    cid: str,
    sku: str,
    when: str,
    *,
    qty: int = 1,
    price: str = "10.00",
    kind: str = "cart_add",
    **extra: Any,
) -> dict[str, Any]:
    return {
        "type": kind,
        "ts": when,
        "channel": "web",
        "customer_id": cid,
        "sku": sku,
        "qty": qty,
        "unit_price": price,
        **extra,
    }


def basket(
    cid: str,
    oid: str,
    when: str,
    lines: list[tuple[str, int, str]],
    *,
    fulfilment: dict[str, Any] | None = None,
    channel: str = "web",
    kind: str = "order_placed",
) -> dict[str, Any]:
    """An order with several (sku, qty, unit_price) lines; total is their sum."""
    total = sum(Decimal(p) * q for _, q, p in lines)
    ev: dict[str, Any] = {
        "type": kind,
        "ts": when,
        "channel": channel,
        "customer_id": cid,
        "order_id": oid,
        "lines": [{"sku": s, "qty": q, "unit_price": p} for s, q, p in lines],
        "total": str(total),
        "currency": "CNY",
    }
    if fulfilment is not None:
        ev["fulfilment"] = fulfilment
    return ev


def stock(sku: str, loc: str, when: str, on_hand: int | None = None, **extra: Any) -> dict:
    """stock_set when on_hand is given, else stock_adjust with extra['delta']."""
    ev: dict[str, Any] = {"ts": when, "sku": sku, "location_id": loc, **extra}
    if on_hand is not None:
        ev.update(type="stock_set", on_hand=on_hand)
    else:
        ev["type"] = "stock_adjust"
    return ev


def place(
    lid: str,
    kind: str,
    lat: float,
    lon: float,
    *,
    per_km: str = "0.50",
    handling: str = "5.00",
    **extra: Any,
) -> dict[str, Any]:
    return {
        "location_id": lid,
        "kind": kind,
        "lat": lat,
        "lon": lon,
        "ship_cost_per_km": per_km,
        "handling_cost": handling,
        "active": True,
        **extra,
    }


def rhythmic_orders(customers: int, seed: int = 4) -> list[dict[str, Any]]:
    """Customers buying 25.00 at their own rhythm for a year, some stopping early;
    in event-time order."""
    rng = random.Random(seed)
    out = []
    for c in range(customers):
        day, stop = rng.uniform(0, 30), rng.uniform(60, 400)
        k = 0
        while day < stop:
            out.append(order(f"k{c}", f"k{c}-{k}", ts(day), "25.00"))
            day += rng.uniform(5, 120)
            k += 1
    out.sort(key=lambda e: e["ts"])
    return out


def as_batch(events: list[tuple[str, dict[str, Any]]]) -> list[Any]:
    """(topic, event) pairs as one engine batch read from partition 0 of each
    topic (event ids ev0, ev1, ...), every partition then at its end."""
    items: list[Any] = []
    for i, (topic, ev) in enumerate(events):
        value = orjson.dumps({**ev, "event_id": f"ev{i}"})
        items.append(Record(topic, 0, i, None, value, 0))
    items.extend(PartitionMark(f"{t}#0", at_end=True) for t in {t for t, _ in events})
    return items
