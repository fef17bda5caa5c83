"""A batch's triggers are claimed in Redis before the sink produces them. When the
engine dies in between (nothing produced, some produced, all produced but not
confirmed), the next start emits each of them exactly once."""

from __future__ import annotations

from collections import Counter
from typing import Any

import orjson
import pytest
from engine_harness import Engine, as_batch, basket, cart, make_settings, order, stock, ts

from common.settings import TRIGGER_TOPIC_NAMES
from connectors.kafka_io import (
    Confirm,
    OutMessage,
    produce_all,
    producer_config,
)
from flows.recovery import recover
from flows.steps import EngineStep, sweep_once

pytestmark = pytest.mark.integration

EVENTS: list[tuple[str, dict[str, Any]]] = [
    ("stock", stock("SKU-R", "W1", ts(0), on_hand=20, reorder_point=10, max_level=50)),
    ("orders", order("k1", "o1", ts(0, 1), "80.00")),
    ("orders", basket("k2", "o2", ts(0, 1), [("SKU-R", 15, "2.00")],
                      fulfilment={"mode": "in_store", "store_id": "W1"})),
    ("carts", cart("k3", "SKU-R", ts(0, 2))),
    ("orders", order("k4", "o4", ts(0, 3), "30.00")),
    ("carts", cart("k4", "SKU-R", ts(8), qty=2)),
]  # fmt: skip


def batch() -> list[Any]:
    return as_batch(EVENTS)


def process(engine: Engine) -> list[OutMessage | Confirm]:
    """The batch and every timer sweep it makes due, as the sink would get them."""
    step = EngineStep(engine.settings, redis_url=engine.ep.redis_url, live=False)
    out = list(step.process(batch()))
    w = step.worker()
    while True:
        records, due = sweep_once(w)
        out.extend(step.message(r, w) for r in records)
        out.extend(Confirm(r) for r in w.take_receipts())
        if not due:
            return out


def emitted(engine: Engine) -> Counter[str]:
    return Counter(t["trigger_id"] for topic in TRIGGER_TOPIC_NAMES for t in engine.triggers(topic))


def triggers_of(out: list[OutMessage | Confirm]) -> list[OutMessage]:
    return [m for m in out if isinstance(m, OutMessage) and ".triggers." in m.topic]


@pytest.mark.parametrize("delivered", ["none", "half", "all"])
def test_triggers_claimed_but_not_confirmed_are_emitted_once_at_the_next_start(
    broker, redis_server, topic_prefix, key_prefix, redis_client, delivered: str
) -> None:
    engine = Engine(make_settings(broker, redis_server, topic_prefix, key_prefix))
    out = process(engine)
    messages = triggers_of(out)
    kinds = Counter(orjson.loads(m.value)["kind"] for m in messages)
    assert {"reorder", "allocation", "abandoned_cart", "journey_step"} <= set(kinds)
    ids = {orjson.loads(m.value)["trigger_id"] for m in messages}
    assert len(ids) == len(messages)

    # the engine dies after the claims, with this much on the broker and nothing confirmed
    sent = {"none": [], "half": messages[::2], "all": messages}[delivered]
    bootstrap = engine.ep.bootstrap
    if sent:
        produce_all(producer_config(bootstrap, {}), sent)
    prefix = engine.settings.redis.key_prefix
    assert redis_client.hlen(f"{prefix}:outbox") > 0
    assert not any(k.startswith("emitted:") for k in engine.stats())

    done = recover(engine.settings, bootstrap, engine.ep.redis_url)
    assert (done.found, done.emitted) == (len(sent), len(messages) - len(sent))
    assert emitted(engine) == Counter(dict.fromkeys(ids, 1))
    stats = engine.stats()
    assert {k: stats[f"emitted:{k}"] for k in kinds} == dict(kinds)
    assert redis_client.hlen(f"{prefix}:outbox") == 0
    assert not list(redis_client.scan_iter(match=f"{prefix}:*:ob"))

    # a second start finds nothing to do, and running the batch again emits nothing
    assert recover(engine.settings, bootstrap, engine.ep.redis_url).pending == 0
    assert triggers_of(process(engine)) == []
    assert emitted(engine) == Counter(dict.fromkeys(ids, 1))
