"""Malformed input goes to the dead-letter topic with a reason; the engine goes on."""

from __future__ import annotations

import base64

import orjson
import pytest
from engine_harness import Engine, make_settings, order, ts

from omnipulse.profile import read_profile

pytestmark = pytest.mark.integration


# ~1 MB: just under the producer client's default message.max.bytes (1,000,000).
def bad(**fields: object) -> bytes:
    return orjson.dumps(
        {
            **order("x", "o", ts(0), "1.00"),
            "event_id": f"bad-{len(fields)}-{sorted(fields)}",
            **fields,
        }
    )


BAD = {
    b"{not json": "invalid_json",
    b"\xff\xfe\x00garbage": "not_utf8",
    orjson.dumps(
        {"event_id": "m", "type": "order_placed", "ts": ts(0), "customer_id": "x"}
    ): "missing_field",
    bad(total="12,50"): "wrong_type",
    bad(type="order_teleported"): "unknown_type",
    bad(lines=[{"sku": "a", "qty": -2, "unit_price": "1"}]): "negative_qty",
    bad(ts="2999-01-01T00:00:00Z"): "future_ts",
    bad(pad="x" * 990_000): "too_large",
}


def test_every_malformed_record_is_dead_lettered_and_valid_ones_applied(
    broker, redis_server, topic_prefix, key_prefix
) -> None:
    engine = Engine(make_settings(broker, redis_server, topic_prefix, key_prefix))
    engine.send("orders", order("good", "g1", ts(0), "10.00"))
    for i, raw in enumerate(BAD):
        engine.send("orders", raw, key=f"k{i}")
    engine.send("orders", order("good", "g2", ts(1), "5.50"))
    engine.run()

    dlq = engine.dlq()
    assert sorted(d["code"] for d in dlq) == sorted(BAD.values()), [d["reason"] for d in dlq]
    by_prefix = {raw[:65_536]: (raw, code) for raw, code in BAD.items()}
    for d in dlq:
        raw, code = by_prefix[base64.b64decode(d["raw_value"])]
        assert code == d["code"]
        assert d["raw_size"] == len(raw)
        assert d["raw_truncated"] == (len(raw) > 65_536)
        assert d["reason"].startswith(d["code"] + ":")
        assert d["source_topic"] == engine.settings.kafka.topic("orders")
        assert {"partition", "offset", "seen_at"} <= set(d)
    prof = read_profile(engine.settings, engine.ep.redis_url, "good")
    assert prof["frequency"] == 2 and prof["monetary"] == "15.50"


def test_a_duplicate_event_id_is_skipped_not_dead_lettered(
    broker, redis_server, topic_prefix, key_prefix
) -> None:
    engine = Engine(make_settings(broker, redis_server, topic_prefix, key_prefix))
    ev = {**order("dup", "o1", ts(0), "30.00"), "event_id": "same-id"}
    engine.send("orders", ev, ev)
    engine.run()
    assert engine.dlq() == []
    assert read_profile(engine.settings, engine.ep.redis_url, "dup")["monetary"] == "30.00"
