"""End to end: events on topics -> engine -> profile in Redis, segment triggers."""

from __future__ import annotations

import pytest
from engine_harness import Engine, click, make_settings, order, ts

from omnipulse.profile import read_profile

pytestmark = pytest.mark.integration


@pytest.fixture
def engine(broker, redis_server, topic_prefix, key_prefix) -> Engine:
    return Engine(make_settings(broker, redis_server, topic_prefix, key_prefix))


def test_first_order_makes_a_new_silver_customer(engine: Engine) -> None:
    engine.send("orders", order("c1", "o1", ts(0), "120.50"))
    engine.run()
    prof = read_profile(engine.settings, engine.ep.redis_url, "c1")
    assert prof["frequency"] == 1
    assert prof["monetary"] == "120.50"
    assert prof["segment"] == "new"
    assert prof["tier"] == "silver"
    kinds = sorted((t["kind"], t["payload"].get("new_segment") or t["payload"].get("new_tier")) for t in engine.triggers())
    assert kinds == [("segment_change", "new"), ("tier_change", "silver")]
