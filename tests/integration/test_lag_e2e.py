"""Consumer lag in standard terms: the engine commits its processed offsets to its
consumer group once the state they produced is in Redis, and `omnipulse lag` reads
them back (tests produce one record per batch: see the spec's broker notes)."""

from __future__ import annotations

import orjson
import pytest
from confluent_kafka import Consumer, TopicPartition
from engine_harness import Engine, click, make_settings, order, ts

pytestmark = pytest.mark.integration


@pytest.fixture
def engine(broker, redis_server, topic_prefix, key_prefix, redis_client) -> Engine:
    settings = make_settings(
        broker, redis_server, topic_prefix, key_prefix, kafka={"consumer_group": key_prefix}
    )
    return Engine(settings)


def test_committed_offsets_follow_processing_and_lag_counts_queued_records(
    engine: Engine, tmp_path
) -> None:
    engine.send("orders", *(order(f"c{i}", f"o{i}", ts(0, i), "10.00") for i in range(7)))
    engine.send("clicks", *(click(f"c{i}", ts(0, i)) for i in range(5)))
    engine.run()

    k = engine.settings.kafka
    consumer = Consumer({"bootstrap.servers": engine.ep.bootstrap, "group.id": k.consumer_group})
    try:
        parts = []
        for logical in ("orders", "clicks"):
            topic = k.topic(logical)
            md = consumer.list_topics(topic, timeout=10).topics[topic]
            parts.extend(TopicPartition(topic, p) for p in md.partitions)
        committed = {(tp.topic, tp.partition): tp.offset for tp in consumer.committed(parts)}
        ends = {
            (tp.topic, tp.partition): consumer.get_watermark_offsets(tp, timeout=10)[1]
            for tp in parts
        }
    finally:
        consumer.close()
    # every partition that held records is committed exactly at its end
    assert sum(ends.values()) == 12
    assert {p: o for p, o in committed.items() if ends[p]} == {p: e for p, e in ends.items() if e}

    # `omnipulse lag` with the test's group (given by a config file, as in production)
    cfg = tmp_path / "omnipulse.toml"
    cfg.write_text(f'[kafka]\nconsumer_group = "{k.consumer_group}"\n')

    def lag() -> list[dict]:
        return orjson.loads(engine.cli("lag", "--json", OMNIPULSE_CONFIG=str(cfg)))

    assert sum(r["lag"] for r in lag()) == 0
    # queued while the engine is not running: lag is exactly what waits
    engine.send("orders", *(order(f"q{i}", f"q{i}", ts(1, i), "10.00") for i in range(4)))
    engine.send("clicks", *(click(f"q{i}", ts(1, i)) for i in range(3)))
    rows = lag()
    by_topic = {}
    for r in rows:
        by_topic[r["topic"]] = by_topic.get(r["topic"], 0) + r["lag"]
    assert by_topic[k.topic("orders")] == 4
    assert by_topic[k.topic("clicks")] == 3
    assert sum(r["lag"] for r in rows) == 7
    engine.run()
    assert sum(r["lag"] for r in lag()) == 0
