"""A crash after a batch's state is applied but before its decisions are written:
the batch is read again after the restart (its offsets were not stored), every
event is a duplicate, and the triggers must still come out, once."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from engine_harness import as_batch, basket, cart, click, make_settings, order, stock, ts

import flows.cluster
import flows.steps
from common.settings import DLQ_TOPIC
from connectors.kafka_io import OutMessage
from flows.steps import EngineStep, sweep_once

pytestmark = pytest.mark.integration

EVENTS: list[tuple[str, dict[str, Any]]] = [
    ("stock", stock("SKU-R", "W1", ts(0), on_hand=20, reorder_point=10, max_level=50)),
    ("orders", order("k1", "o1", ts(0, 1), "80.00")),
    ("orders", basket("k2", "o2", ts(0, 1), [("SKU-R", 15, "2.00")],
                      fulfilment={"mode": "in_store", "store_id": "W1"})),
    ("carts", cart("k3", "SKU-R", ts(0, 2))),
    ("clicks", click("clock", ts(8))),
]  # fmt: skip


def batch() -> list[Any]:
    return as_batch(EVENTS)


def run(step: EngineStep) -> list[tuple[str, str]]:
    """Process the batch, then sweep until nothing is due; the trigger ids out."""
    out = [
        m
        for m in step.process(batch())
        if isinstance(m, OutMessage) and not m.topic.endswith(DLQ_TOPIC)
    ]
    w = step.worker()
    while True:
        records, due = sweep_once(w)
        out.extend(step.message(r, w) for r in records)
        if not due:
            break
    return sorted((orjson.loads(m.value)["kind"], orjson.loads(m.value)["trigger_id"]) for m in out)


def test_a_batch_read_again_after_a_crash_emits_its_triggers_once(
    broker, redis_server, topic_prefix, key_prefix, redis_client, monkeypatch
) -> None:
    def settings(tag: str):
        return make_settings(broker, redis_server, topic_prefix, f"{key_prefix}{tag}")

    clean = run(EngineStep(settings("clean"), redis_url=redis_server.url, live=False))
    assert {k for k, _ in clean} >= {"reorder", "abandoned_cart", "journey_step", "tier_change"}

    real_settle = flows.steps.settle
    calls = {"n": 0}

    def crash_once(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("killed between the apply and the settle rounds")
        return real_settle(*args, **kwargs)

    # the batch's own settlement (flows.cluster) comes before the sweep's (flows.steps)
    monkeypatch.setattr(flows.cluster, "settle", crash_once)
    monkeypatch.setattr(flows.steps, "settle", crash_once)
    crashed = settings("crashed")
    with pytest.raises(RuntimeError):
        EngineStep(crashed, redis_url=redis_server.url, live=False).process(batch())
    # the restart: a new worker reads the same batch; all of it is a duplicate now
    again = run(EngineStep(crashed, redis_url=redis_server.url, live=False))
    assert again == clean
    # and a third read emits nothing: every id is claimed
    assert run(EngineStep(crashed, redis_url=redis_server.url, live=False)) == []
