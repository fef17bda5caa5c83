"""Issue 4, acceptance 4: SIGKILL the engine mid-stream, restart it; the restored
churn model goes on from its labels, and no label is learned twice or lost."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis
from engine_harness import Engine, click, make_settings, rhythmic_orders, ts

from state.model import ModelStore

pytestmark = pytest.mark.integration

CUSTOMERS = 120
# Small batches: the run takes many of them, so a kill lands between two.
CONFIG = "[engine]\nbatch_size = 10\n"


def learned(engine: Engine) -> tuple[dict[str, Any], list[str]]:
    """The model's header and the ids of the labels it learned."""
    with redis.Redis.from_url(engine.ep.redis_url) as client:
        store = ModelStore(client, engine.settings.redis.key_prefix)
        ids = sorted(m.decode() for m in client.zrange(store.learned_key, 0, -1))
        return store.header() or {}, ids


def start(engine: Engine, config: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "omnipulse.cli", "run", "--until-caught-up"],
        env=engine.cli_env(OMNIPULSE_CONFIG=str(config)),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def test_a_killed_engine_resumes_its_model_and_learns_each_label_once(
    broker, redis_server, topic_prefix, key_prefix, redis_client, tmp_path
) -> None:
    config = tmp_path / "omnipulse.toml"
    config.write_text(CONFIG)
    events = [*rhythmic_orders(CUSTOMERS), click("clock", ts(520))]

    def engine(tag: str) -> Engine:
        e = Engine(
            make_settings(broker, redis_server, f"{topic_prefix}{tag}", f"{key_prefix}{tag}")
        )
        e.send("orders", *(ev for ev in events if ev["type"] == "order_placed"))
        e.send("clicks", events[-1])
        return e

    clean = engine("clean")
    assert start(clean, config).wait(timeout=120) == 0
    clean_head, clean_ids = learned(clean)
    assert clean_head["labels"] == len(clean_ids) > 200

    crashed = engine("crash")
    proc = start(crashed, config)
    deadline = time.monotonic() + 90
    at_kill: dict[str, Any] = {}
    while time.monotonic() < deadline and proc.poll() is None:
        at_kill = learned(crashed)[0]
        if at_kill.get("labels", 0) >= 20:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.02)
    assert proc.wait(timeout=30) == -signal.SIGKILL, "the run ended before it could be killed"
    assert 0 < at_kill["labels"] < clean_head["labels"]

    # the restart resumes from the snapshot: had it started from zero, the
    # labels learned before the kill would be missing from its count
    assert start(crashed, config).wait(timeout=120) == 0
    head, ids = learned(crashed)
    assert head["labels"] == clean_head["labels"]
    assert head["labels_churned"] == clean_head["labels_churned"]
    # the same labels, each once: one id per (customer, score), none repeated
    assert ids == clean_ids
    report = orjson.loads(crashed.cli("model", "--json"))
    assert report["labels"] == len(ids) and report["labels_queued"] == 0
