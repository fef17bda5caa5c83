"""The engine dataflow: input topics -> parse/apply/decide -> triggers and DLQ."""

from __future__ import annotations

import bytewax.operators as op
import redis
from bytewax.dataflow import Dataflow

from connectors.kafka_io import KafkaInput, KafkaOutput, consumer_config, producer_config
from flows.delivery import OutboxConfirmer
from flows.steps import EngineStep
from omnipulse.settings import INPUT_TOPICS, Settings
from state.keys import Keys


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
        return {k.decode(): int(v) for k, v in raw.items()}

    flow = Dataflow("omnipulse")
    records = op.input(
        "kafka_in",
        flow,
        KafkaInput(
            consumer_config(bootstrap, kafka.consumer_group, dict(kafka.extra)),
            {kafka.topic(t): t for t in INPUT_TOPICS},
            resume_offsets=resume_offsets,
            batch_size=settings.engine.batch_size,
            until_caught_up=until_caught_up,
        ),
    )
    step = EngineStep(settings, redis_url=redis_url, live=not until_caught_up, bootstrap=bootstrap)
    out = op.flat_map_batch("apply_and_decide", records, step)
    sink = KafkaOutput(
        producer_config(bootstrap, dict(kafka.extra)),
        confirmer=lambda: OutboxConfirmer(redis_url, keys),
    )
    op.output("kafka_out", out, sink)
    return flow
