"""Consumer lag of the engine's group, as `omnipulse lag` prints it.

Lag is the partition's end offset minus the group's committed offset (the
whole partition when nothing is committed yet). The embedded broker reports
the end as the base offset of the last record batch + 1 when producers batch
(see the spec's notes on the test broker); Apache Kafka reports the true end.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from confluent_kafka import Consumer, KafkaException, TopicPartition

from connectors.errors import ConnectorError


@dataclass(frozen=True, slots=True)
class PartitionLag:
    topic: str
    partition: int
    committed: int | None  # None: the group has committed nothing here yet
    end: int
    lag: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def consumer_lag(
    config: dict[str, Any], topics: list[str], timeout: float = 10.0
) -> list[PartitionLag]:
    """Lag per partition of `topics` for the group in `config` ("group.id")."""
    consumer = Consumer({**config, "enable.auto.commit": False})
    try:
        md = consumer.list_topics(timeout=timeout)
        parts = []
        for topic in topics:
            meta = md.topics.get(topic)
            if meta is None or meta.error is not None:
                raise ConnectorError(f"kafka: topic {topic!r} does not exist")
            parts.extend(TopicPartition(topic, p) for p in sorted(meta.partitions))
        committed = consumer.committed(parts, timeout=timeout)
        out = []
        for tp in committed:
            low, high = consumer.get_watermark_offsets(
                TopicPartition(tp.topic, tp.partition), timeout=timeout
            )
            done = tp.offset if tp.offset >= 0 else None
            out.append(
                PartitionLag(tp.topic, tp.partition, done, high, max(0, high - (done or low)))
            )
        return out
    except KafkaException as ex:
        raise ConnectorError(f"kafka: cannot read consumer lag: {ex}") from ex
    finally:
        consumer.close()
