"""`omnipulse run --processes 2 --workers 2`: one Bytewax cluster of two local
processes.

With ordered input (issue 5, acceptance 4) the cluster ends in the state of a
single worker, key for key, and emits the same triggers, record for record,
from a simulated omnichannel stream that exercises every rule, also when the
cluster changes shape between two runs.

With the default input every event is applied once, the customers' order
facts equal a single worker's, and the churn model, learned by one learner for
the whole cluster, holds every label that any worker decided, once; what else
may differ there is in README "Scaling out".
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis
from engine_harness import Engine, click, make_settings, rhythmic_orders, ts
from kafkautil import produce
from statecompare import (
    comparable,
    dump,
    ordered_engine,
    ordered_env,
    stream,
    trigger_ids,
    triggers,
)

from connectors.ordered import event_ms
from state.model import ModelStore

pytestmark = pytest.mark.integration

# Facts that follow from the input alone, whichever worker applied it.
ORDER_FACTS = ("n", "m", "fo", "lo", "fa", "la", "t")


def outcome(engine: Engine) -> dict[str, Any]:
    prefix = engine.settings.redis.key_prefix
    with redis.Redis.from_url(engine.ep.redis_url, decode_responses=True) as client:
        facts = {}
        for key in client.scan_iter(f"{prefix}:{{c:*}}", count=1000):
            if key.endswith("}"):  # the profile hash, not the customer's other keys
                fields = client.hgetall(key)
                facts[key] = {f: fields.get(f) for f in ORDER_FACTS}
        learned = client.zrange(ModelStore(client, prefix).learned_key, 0, -1)
    allocations = {t["trigger_id"] for t in engine.triggers("triggers.allocation")}
    return {
        "facts": facts,
        "learned": learned,
        "model": orjson.loads(engine.cli("model", "--json")),
        "stats": engine.stats(),
        "allocations": allocations,
    }


def test_two_processes_apply_every_event_once_and_learn_every_label_once(
    broker, redis_server, topic_prefix, key_prefix, redis_client
) -> None:
    orders = rhythmic_orders(120)
    results = {}
    for tag, args in (("one", []), ("many", ["--processes", "2", "--workers", "2"])):
        engine = Engine(
            make_settings(broker, redis_server, f"{topic_prefix}{tag}", f"{key_prefix}{tag}")
        )
        engine.send("orders", *orders)
        engine.send("clicks", click("clock", ts(520)))
        engine.cli("run", "--until-caught-up", *args)
        results[tag] = outcome(engine)
    one, many = results["one"], results["many"]

    assert many["stats"]["events:orders"] == one["stats"]["events:orders"] == len(orders)
    assert many["allocations"] == one["allocations"]
    assert len(many["facts"]) == 121  # and the clock's visitor
    assert {k[len(key_prefix) + 4 :]: v for k, v in many["facts"].items()} == {
        k[len(key_prefix) + 3 :]: v for k, v in one["facts"].items()
    }

    # one model for the cluster: every label that a worker took is in it, once
    for run in (one, many):
        decided = run["stats"]["churn:labels_retained"] + run["stats"]["churn:labels_churned"]
        assert run["model"]["labels"] == len(run["learned"]) == decided > 100
        assert run["model"]["labels_queued"] == 0


CLUSTER_EVENTS = int(os.environ.get("OMNIPULSE_CLUSTER_EVENTS", "20000"))


def test_two_processes_of_two_workers_end_as_one_worker_with_ordered_input(
    broker, redis_server, topic_prefix, key_prefix, redis_client, tmp_path: Path
) -> None:
    env = ordered_env(tmp_path)
    records = stream(CLUSTER_EVENTS, seed=5)
    # most of the stream first; the rest after the cluster changed shape
    # (4 workers in 2 processes, then 2 workers in one): it goes on from where
    # the slowest worker was, with the customers dealt out anew
    # (by event time; locations have none: -1, the first round)
    times = sorted(event_ms(v) for recs in records.values() for _, v in recs)
    cut = times[len(times) * 3 // 4]
    rounds = [
        {topic: [r for r in recs if event_ms(r[1]) < cut] for topic, recs in records.items()},
        {topic: [r for r in recs if event_ms(r[1]) >= cut] for topic, recs in records.items()},
    ]
    shapes = {
        "one": ([], []),
        "many": (["--processes", "2", "--workers", "2"], ["--workers", "2"]),
    }
    runs = {}
    for tag, args in shapes.items():
        engine = ordered_engine(broker, redis_server, f"{topic_prefix}{tag}.", f"{key_prefix}{tag}")
        for part, shape in zip(rounds, args, strict=True):
            for topic, recs in part.items():
                produce(broker.bootstrap_servers, engine.settings.kafka.topic(topic), recs)
            engine.cli("run", "--until-caught-up", *shape, **env)
        runs[tag] = engine
    one, many = runs["one"], runs["many"]

    ids, kinds = trigger_ids(many)
    assert not {t for t, n in ids.items() if n > 1}, "a trigger was emitted twice"
    assert {"abandoned_cart", "allocation", "bopis_suggestion", "segment_change"} <= set(kinds)
    assert {"tier_change", "journey_step", "reorder", "churn_risk"} <= set(kinds), kinds

    def content(engine: Engine) -> dict[str, dict[str, Any]]:
        return {
            t["trigger_id"]: {k: v for k, v in t.items() if k != "emitted_at"}
            for t in triggers(engine)
        }

    a, b = content(one), content(many)
    assert set(a) == set(b), f"{len(set(a) ^ set(b))} trigger ids differ"
    differing = [i for i in a if a[i] != b[i]]
    assert not differing, f"{len(differing)} triggers differ, e.g. {a[differing[0]]}"

    # both workers of the last shape ended at the same batch, as the one worker did
    prefix = many.settings.redis.key_prefix
    ends = [redis_client.hget(f"{prefix}:offsets{w}", "@seq") for w in ("", ":w1")]
    alone = redis_client.hget(f"{one.settings.redis.key_prefix}:offsets", "@seq")
    assert ends == [alone, alone] and alone is not None, (ends, alone)
    model = orjson.loads(many.cli("model", "--json"))
    assert model["labels"] > 100 and model["labels_queued"] == 0

    before = comparable(dump(redis_server.url, one.settings.redis.key_prefix))
    after = comparable(dump(redis_server.url, prefix))
    missing = sorted(set(before) - set(after))[:5]
    extra = sorted(set(after) - set(before))[:5]
    assert not missing and not extra, f"keys only in one worker's run {missing}, only many {extra}"
    differ = sorted(k for k in before if before[k] != after[k])
    example = [(k, before[k], after[k]) for k in differ[:1]]
    assert not differ, f"{len(differ)} keys differ, e.g. {example}"
