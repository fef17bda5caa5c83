"""Small Kafka helpers for tests: create topics, produce, read a topic to its end.

``produce`` sends one record per batch because the embedded broker reports a
wrong high watermark for multi-record batches; ``consume_all`` finds
the end through partition EOF, which is reliable, and never commits offsets.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable, Sequence
from typing import NamedTuple

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, NewTopic

Key = bytes | str | None


class Record(NamedTuple):
    key: bytes | None
    value: bytes | None
    partition: int
    offset: int


def create_topics(
    bootstrap: str, names: Iterable[str], partitions: int = 1, timeout: float = 10.0
) -> None:
    """Create topics; ones that already exist are left alone."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    new = [NewTopic(n, num_partitions=partitions, replication_factor=1) for n in names]
    for name, future in admin.create_topics(new, operation_timeout=timeout).items():
        try:
            future.result(timeout=timeout)
        except KafkaException as ex:
            if ex.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise RuntimeError(f"cannot create topic {name}: {ex}") from ex


def produce(
    bootstrap: str,
    topic: str,
    records: Sequence[tuple[Key, bytes | None]],
    partition: int | None = None,
) -> None:
    """Produce ``(key, value)`` records, one per batch, and wait for every ack."""
    producer = Producer(
        {"bootstrap.servers": bootstrap, "linger.ms": 0, "batch.num.messages": 1, "acks": "all"}
    )
    errors: list[KafkaError] = []

    def on_delivery(err: KafkaError | None, _msg: object) -> None:
        if err is not None:
            errors.append(err)

    extra = {} if partition is None else {"partition": partition}
    for key, value in records:
        producer.produce(topic, value=value, key=key, on_delivery=on_delivery, **extra)
        producer.poll(0)
    left = producer.flush(30.0)
    if left or errors:
        raise RuntimeError(f"produce to {topic}: {left} undelivered, errors: {errors[:3]}")


def consume_all(bootstrap: str, topic: str, timeout: float = 10.0) -> list[Record]:
    """Every record in ``topic``, from the beginning until each partition's EOF."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            # librdkafka wants a group id even for assign(); nothing is committed.
            "group.id": f"test-reader-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "auto.offset.reset": "earliest",
            # EOF is only noticed when a fetch returns; the 500 ms default makes
            # every read of a quiet partition take half a second or more.
            "fetch.wait.max.ms": 10,
        }
    )
    deadline = time.monotonic() + timeout
    try:
        partitions = _partitions(consumer, topic, deadline)
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        pending = set(partitions)
        records: list[Record] = []
        while pending:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{topic}: no EOF on partitions {sorted(pending)}")
            msg = consumer.poll(0.2)
            if msg is None:
                continue
            err = msg.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    pending.discard(msg.partition())
                    continue
                raise KafkaException(err)
            records.append(Record(msg.key(), msg.value(), msg.partition(), msg.offset()))
        return sorted(records, key=lambda r: (r.partition, r.offset))
    finally:
        consumer.close()


def _partitions(consumer: Consumer, topic: str, deadline: float) -> list[int]:
    # Metadata for a just-created topic can lag a moment behind create_topics().
    while True:
        meta = consumer.list_topics(topic, timeout=max(deadline - time.monotonic(), 0.5))
        info = meta.topics.get(topic)
        if info is not None and info.error is None and info.partitions:
            return sorted(info.partitions)
        if time.monotonic() > deadline:
            raise TimeoutError(f"topic {topic} not found: {info.error if info else None}")
        time.sleep(0.1)
