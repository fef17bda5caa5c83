"""Churn end to end (SPEC §5.8): delayed labels learned once, also across a restart;
the seed heuristic's churn_risk trigger with its figures; `omnipulse model`."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from engine_harness import Engine, click, make_settings, order, ts

pytestmark = pytest.mark.integration


@pytest.fixture
def engine(broker, redis_server, topic_prefix, key_prefix, redis_client) -> Engine:
    return Engine(make_settings(broker, redis_server, topic_prefix, key_prefix))


def model_report(engine: Engine) -> dict[str, Any]:
    return orjson.loads(engine.cli("model", "--json"))


@pytest.mark.parametrize("workers", [1, 2])
def test_labels_are_learned_once_across_a_restart_and_the_heuristic_fires(
    engine: Engine, workers: int
) -> None:
    # h1 buys every 10 days and browses daily, then goes quiet: the seed rule
    engine.send("orders", *(order("h1", f"h1-{d}", ts(d), "30.00") for d in (0, 10, 20)))
    engine.send("clicks", *(click("h1", ts(d, 1)) for d in range(21)))
    # r1 comes back within the horizon once, then never again
    engine.send("orders", order("r1", "r1-0", ts(0), "50.00"), order("r1", "r1-1", ts(30), "50.00"))
    engine.send("clicks", click("clock", ts(60)))
    engine.run(workers)
    first = model_report(engine)
    # labels so far: h1 0 (t=0 -> 10), 0 (t=10 -> 20); r1 0 (t=0 -> 30)
    assert (first["labels"], first["labels_retained"], first["labels_churned"]) == (3, 3, 0)

    [risk] = [
        t
        for t in engine.triggers("triggers.churn_risk")
        if t["reason"]["rule"] == "interval_and_activity_drop"
    ]
    assert risk["customer_id"] == "h1"
    assert risk["event_ts"] == ts(50).replace("Z", ".000Z")  # the 30-day review
    assert risk["reason"]["gap_ratio"] == 3.0
    assert risk["reason"]["interactions_last_30"] == 0
    assert isinstance(risk["payload"]["score"], float)
    assert len(risk["payload"]["top_features"]) == 3
    assert isinstance(risk["holdout"], bool)

    # a new engine run: the model is restored and goes on counting; with two
    # worker threads every label still lands in the one model
    engine.send("clicks", click("clock", ts(200)))
    engine.run(workers)
    second = model_report(engine)
    # h1: t=20 churned at day 110; r1: t=30 churned at day 120; after that each
    # has a fresh pending score from a 30-day review, not yet due by day 200
    assert second["labels_retained"] == 3
    assert second["labels_churned"] == 2
    assert second["labels"] == 5

    # replaying the same input learns nothing twice
    engine.send("orders", *(order("h1", f"h1-{d}", ts(d), "30.00") for d in (0, 10, 20)))
    engine.send("clicks", click("clock", ts(200)))
    engine.run(workers)
    assert model_report(engine)["labels"] == 5
