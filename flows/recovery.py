"""Start-up recovery: emit, once, what a killed engine claimed but never confirmed.

Runs before the dataflow starts (no writer of this prefix is running then).
Settlements still in the outbox (`state.outbox`) were claimed in Redis and
maybe delivered: the sink was killed before it confirmed them, or before it
produced them at all. Their writers' records lie after each writer's last
confirmed offset on every trigger partition (a producer's later records land
after its earlier ones), so the trigger topics are read from there to the end;
ids found were delivered, the rest are produced now. Then the entries are
dropped and their counters added in one MULTI.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass

import redis

from common import metrics
from common.settings import TRIGGER_TOPIC_NAMES, Settings
from connectors.delivered import end_offsets, trigger_ids_since
from connectors.kafka_io import consumer_config, produce_all, producer_config
from flows.steps import trigger_message
from state.keys import Keys
from state.outbox import Outbox, emission_counters

log = logging.getLogger(__name__)

# How long the read-back waits for more records after EOF on every partition:
# the embedded broker's EOF can come before the end of a producer's last batch.
QUIET_S = 0.5


@dataclass(frozen=True, slots=True)
class Recovered:
    pending: int  # unconfirmed settlements found
    found: int  # of their records, already on the trigger topics
    emitted: int  # produced now


def recover(settings: Settings, bootstrap: str, redis_url: str) -> Recovered:
    """Settle the outbox left by earlier runs; returns what was done."""
    k = settings.kafka
    keys = Keys(settings.redis.key_prefix, settings.engine.timer_shards)
    config = consumer_config(bootstrap, f"{k.consumer_group}.recovery", dict(k.extra))
    topics = [k.topic(t) for t in TRIGGER_TOPIC_NAMES]
    with redis.Redis.from_url(redis_url) as client:
        outbox = Outbox(client, keys)
        pending = outbox.pending()
        found: set[str] = set()
        missing = []
        counters: Counter[str] = Counter()
        if pending:
            acked, start = outbox.acked_offsets()
            ends = end_offsets(config, topics)
            scan: dict[str, int] = {}
            for part in ends:
                froms = [acked.get(p.writer, {}).get(part, start.get(part, 0)) for p in pending]
                scan[part] = min(froms)
            found = trigger_ids_since(config, scan, quiet=QUIET_S)
            for p in pending:
                counters.update(p.counters)
                counters.update(emission_counters(p.records))
                missing.extend(r for r in p.records if r["trigger_id"] not in found)
            if missing:
                produce_all(
                    producer_config(bootstrap, dict(k.extra)),
                    [trigger_message(settings, dict(r)) for r in missing],
                )
        outbox.finish(pending, dict(counters), end_offsets(config, topics))
    metrics.count_batch(counters)
    done = Recovered(
        len(pending), sum(len(p.records) for p in pending) - len(missing), len(missing)
    )
    if pending:
        log.info(
            "recovery: %d unconfirmed settlements; %d triggers already delivered, %d emitted now",
            done.pending,
            done.found,
            done.emitted,
        )
    return done
