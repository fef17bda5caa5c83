"""The engine dataflow: input topics -> parse/apply/decide -> triggers and DLQ."""

from __future__ import annotations

from typing import Any

import bytewax.operators as op
import redis
from bytewax.dataflow import Dataflow

from common.settings import INPUT_TOPICS, Settings
from connectors.kafka_io import KafkaInput, KafkaOutput, consumer_config, producer_config
from connectors.ordered import BatchEnd, OrderedKafkaInput, Start
from flows.delivery import OutboxConfirmer
from flows.steps import EngineStep
from flows.worker import PerThread
from state.cluster import Plans, resume_point
from state.keys import Keys


class BatchesByMarker:
    """The mapper for ordered input: one engine batch per `BatchEnd`, whatever
    Bytewax groups into one call (a batch's end decides where offsets are stored)."""

    def __init__(self, step: EngineStep) -> None:
        self.step = step
        self._held: PerThread[list[Any]] = PerThread()

    def __call__(self, items: list[Any]) -> list[Any]:
        held = self._held.get() or []
        out: list[Any] = []
        for item in items:
            if isinstance(item, BatchEnd):
                out.extend(self.step.process(held, item))
                held = []
            else:
                held.append(item)
        self._held.set(held)
        return out


def build_flow(
    settings: Settings, *, bootstrap: str, redis_url: str, until_caught_up: bool
) -> Dataflow:
    """Wire the engine. Connections are opened by the steps when workers start."""
    kafka = settings.kafka
    keys = Keys(settings.redis.key_prefix, settings.engine.timer_shards)

    def resume_offsets() -> dict[str, int]:
        # Called as partitions are built on a worker, not at import.
        with redis.Redis.from_url(redis_url) as client:
            raw = client.hgetall(keys.offsets)
        return {k.decode(): int(v) for k, v in raw.items() if not k.startswith(b"@")}

    def start(index: int, count: int) -> Start:
        with redis.Redis.from_url(redis_url) as client:
            return resume_point(client, keys, index, count)

    flow = Dataflow("omnipulse")
    config = consumer_config(bootstrap, kafka.consumer_group, dict(kafka.extra))
    topics = {kafka.topic(t): t for t in INPUT_TOPICS}
    ordered = settings.engine.ordered_input
    size = settings.engine.batch_size
    source: OrderedKafkaInput | KafkaInput = (
        OrderedKafkaInput(
            config,
            topics,
            start=start,
            agree=Plans(redis_url, keys),
            batch_size=size,
            until_caught_up=until_caught_up,
        )
        if ordered
        else KafkaInput(
            config,
            topics,
            resume_offsets=resume_offsets,
            batch_size=size,
            until_caught_up=until_caught_up,
        )
    )
    records = op.input("kafka_in", flow, source)
    step = EngineStep(settings, redis_url=redis_url, live=not until_caught_up, bootstrap=bootstrap)
    out = op.flat_map_batch("apply_and_decide", records, BatchesByMarker(step) if ordered else step)
    sink = KafkaOutput(
        producer_config(bootstrap, dict(kafka.extra)),
        confirmer=lambda: OutboxConfirmer(redis_url, keys),
    )
    op.output("kafka_out", out, sink)
    return flow
