"""Reading back what reached the trigger topics, for the start-up recovery.

Partition EOF marks the end of what the broker had when the fetch returned.
The embedded broker's reported high watermark is wrong when producers batch
(base offset of the last batch + 1), so end offsets taken from it are only
lower bounds of the true end: fine as a place to start reading later, never
as the place to stop. Reading stops at EOF on every partition, and then only
once no record arrived for a quiet period.
"""

from __future__ import annotations

import time
from typing import Any

import orjson
from confluent_kafka import Consumer, KafkaError, TopicPartition

from connectors.errors import ConnectorError


def _split(part: str) -> tuple[str, int]:
    topic, _, p = part.rpartition("#")
    return topic, int(p)


def end_offsets(config: dict[str, Any], topics: list[str], timeout: float = 10.0) -> dict[str, int]:
    """ "topic#p" -> the broker's high watermark, for every partition of `topics`."""
    consumer = Consumer(config)
    try:
        md = consumer.list_topics(timeout=timeout)
        out = {}
        for topic in topics:
            meta = md.topics.get(topic)
            if meta is None or meta.error is not None:
                continue  # not created yet: nothing was written to it
            for p in sorted(meta.partitions):
                _, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout)
                out[f"{topic}#{p}"] = high
        return out
    finally:
        consumer.close()


def trigger_ids_since(
    config: dict[str, Any], start: dict[str, int], *, quiet: float = 0.5, timeout: float = 120.0
) -> set[str]:
    """The `trigger_id`s of the records from `start` ("topic#p" -> offset) to the end."""
    if not start:
        return set()
    consumer = Consumer({**config, "enable.partition.eof": True, "enable.auto.commit": False})
    found: set[str] = set()
    try:
        consumer.assign([TopicPartition(*_split(part), off) for part, off in start.items()])
        open_parts = set(start)
        deadline = time.monotonic() + timeout
        last_record = time.monotonic()
        while open_parts or time.monotonic() - last_record < quiet:
            if time.monotonic() > deadline:
                raise ConnectorError(
                    f"recovery: trigger topics not read to their end in {timeout}s"
                )
            msg = consumer.poll(0.05)
            if msg is None:
                continue
            err = msg.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    open_parts.discard(f"{msg.topic()}#{msg.partition()}")
                    continue
                raise ConnectorError(f"recovery: reading {msg.topic()}: {err}")
            last_record = time.monotonic()
            try:
                tid = orjson.loads(msg.value() or b"null").get("trigger_id")
            except (orjson.JSONDecodeError, AttributeError):
                continue  # not a trigger record: not ours to judge
            if isinstance(tid, str):
                found.add(tid)
        return found
    finally:
        consumer.close()
