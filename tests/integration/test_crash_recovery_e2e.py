"""Crash recovery (issue 5, acceptance 3): a live engine SIGKILLed at three
random moments of a simulated stream, restarted each time and finished with
`--until-caught-up`, emits every trigger exactly once and ends in the state of
a clean single run.

Both runs use `engine.ordered_input` (README, "Crash recovery"): without it
the topics are read side by side and two clean runs already differ in
order-dependent details. The event count is `OMNIPULSE_CRASH_EVENTS`, by
default the acceptance's 50,000 (about a minute on two cores).

What is compared: every Redis key of the two prefixes, value for value, and
every trigger record but its `emitted_at`. Left out is only what differs from
run to run by design: the writer ids, the token a SKU/order claim holds and
the churn model's save time.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import redis
from engine_harness import Engine
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

pytestmark = pytest.mark.integration

EVENTS = int(os.environ.get("OMNIPULSE_CRASH_EVENTS", "50000"))
KILLS = 3
SEED = 20261122


def _tail(log: Path) -> str:
    lines = [ln for ln in log.read_text(errors="replace").splitlines() if "rdkafka" not in ln]
    return "\n".join(lines[-60:])


def processed(client: redis.Redis, prefix: str) -> int:
    offsets = client.hgetall(f"{prefix}:offsets")
    return sum(int(v) for k, v in offsets.items() if not k.startswith(b"@"))


def test_a_thrice_killed_engine_emits_each_trigger_once_and_ends_in_the_clean_state(
    broker, redis_server, topic_prefix, key_prefix, redis_client, tmp_path: Path
) -> None:
    env = ordered_env(tmp_path)

    def engine(tag: str) -> Engine:
        return ordered_engine(broker, redis_server, f"{topic_prefix}{tag}.", f"{key_prefix}{tag}")

    clean, killed = engine("clean"), engine("killed")
    records = stream(EVENTS, SEED)
    total = sum(len(v) for v in records.values())
    for e in (clean, killed):
        for topic, recs in records.items():
            produce(broker.bootstrap_servers, e.settings.kafka.topic(topic), recs)

    began = time.monotonic()
    clean.cli("run", "--until-caught-up", **env)
    clean_s = time.monotonic() - began
    _, clean_kinds = trigger_ids(clean)
    assert {
        "abandoned_cart",
        "journey_step",
        "segment_change",
        "win_back",
        "tier_change",
        "vip_invitation",
        "allocation",
        "reorder",
        "bopis_suggestion",
    } <= set(clean_kinds), clean_kinds

    rng = random.Random(SEED)
    moments = sorted(rng.uniform(0.1, 0.85) for _ in range(KILLS))
    prefix = killed.settings.redis.key_prefix
    began = time.monotonic()
    for n, share in enumerate(moments):
        log = tmp_path / f"live{n}.log"
        with log.open("wb") as err:
            proc = subprocess.Popen(
                [sys.executable, "-m", "omnipulse.cli", "run"],
                env=killed.cli_env(**env),
                stdout=subprocess.DEVNULL,
                stderr=err,
            )
        try:
            deadline = time.monotonic() + 120
            while processed(redis_client, prefix) < share * total:
                assert proc.poll() is None, f"the live engine stopped: {_tail(log)}"
                assert time.monotonic() < deadline, "the live engine made no progress"
                time.sleep(0.02)
            time.sleep(rng.uniform(0.0, 0.3))  # anywhere inside a batch, or between two
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
    killed.cli("run", "--until-caught-up", **env)
    killed_s = time.monotonic() - began

    ids, kinds = trigger_ids(killed)
    doubled = {t: n for t, n in ids.items() if n > 1}
    assert not doubled, f"{len(doubled)} triggers emitted more than once"
    # every trigger settled as emitted is on the topics, and counted once
    stats = killed.stats()
    assert {k: stats.get(f"emitted:{k}", 0) for k in kinds} == dict(kinds)
    assert sum(v for k, v in stats.items() if k.startswith("emitted:")) == sum(kinds.values())

    # the same triggers as the clean run, record for record
    def content(ts: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
        return {t["trigger_id"]: {k: v for k, v in t.items() if k != "emitted_at"} for t in ts}

    a, b = content(triggers(clean)), content(triggers(killed))
    differing = [x for i, x in a.items() if b.get(i) != x] + [
        x for i, x in b.items() if a.get(i) != x
    ]
    assert not differing, f"{len(differing)} triggers differ, e.g. {differing[:2]}"

    before = comparable(dump(redis_server.url, clean.settings.redis.key_prefix))
    after = comparable(dump(redis_server.url, prefix))
    assert not any(k.endswith(":ob") for k in after), "a customer outbox is not empty"
    assert ":outbox" not in after, "the outbox index is not empty"
    missing = sorted(set(before) - set(after))[:5]
    extra = sorted(set(after) - set(before))[:5]
    assert not missing and not extra, f"keys only in the clean run {missing}, only killed {extra}"
    differ = sorted(k for k in before if before[k] != after[k])
    assert not differ, f"{len(differ)} keys differ, e.g. {differ[:5]}"
    print(
        f"\n{EVENTS} events ({total} records): clean run {clean_s:.1f}s, killed at "
        f"{[round(m, 2) for m in moments]} and finished in {killed_s:.1f}s; "
        f"{sum(ids.values())} triggers"
    )
