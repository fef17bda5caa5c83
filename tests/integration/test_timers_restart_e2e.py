"""Timer triggers are the same live, by `omnipulse replay`, and across a SIGKILL
(issue acceptance: abandoned carts and journey steps on event time)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis
from engine_harness import Engine, cart, click, make_settings, order, ts

from common.settings import TRIGGER_TOPIC_NAMES

pytestmark = pytest.mark.integration

# (topic, event) in event-time order; events carry their own ids so every run
# sees the same input
SCENARIO: list[tuple[str, dict[str, Any]]] = [
    ("orders", order("r4", "o-r4", ts(0), "80.00")),  # first order: journey starts
    ("carts", cart("r1", "SKU-1", ts(0, 0, 5))),  # abandoned
    ("carts", cart("r2", "SKU-1", ts(0, 0, 5))),
    ("orders", {**order("r2", "o-r2", ts(0, 0, 35), "10.00")}),  # covers r2's cart
    ("carts", cart("r3", "SKU-2", ts(0, 0, 20), qty=3)),  # abandoned
    # --- the SIGKILL test stops the engine here: before any cart deadline ---
    ("clicks", click("clock", ts(0, 2))),
    ("carts", cart("r1", "SKU-3", ts(0, 4))),  # r1 back, within the cooldown
    ("clicks", click("clock", ts(1, 2))),
    ("clicks", click("clock", ts(8))),
]
KILL_AT = 5
# Days of event time pass between some of these events, in a fraction of a
# second of wall time. In the default mode each input partition is read on its
# own, so how the topics interleave (and with it some segment and tier
# decisions) depends on timing; ordered input reads them in event-time order,
# which is what makes a live run, a replay and a killed run the same by design.
CONFIG = "[engine]\nordered_input = true\n"


def with_ids(events: list[tuple[str, dict[str, Any]]]) -> list[tuple[str, dict[str, Any]]]:
    return [(topic, {**ev, "event_id": f"ev{i}"}) for i, (topic, ev) in enumerate(events)]


EVENTS = with_ids(SCENARIO)


def triggers(engine: Engine) -> list[dict[str, Any]]:
    return [t for topic in TRIGGER_TOPIC_NAMES for t in engine.triggers(topic)]


def ids(engine: Engine) -> list[tuple[str, str]]:
    return sorted((t["kind"], t["trigger_id"]) for t in triggers(engine))


def start_live(engine: Engine, config: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "omnipulse.cli", "run"],
        env=engine.cli_env(OMNIPULSE_CONFIG=str(config)),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def wait_for(what: str, check: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    proc.send_signal(sig)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise


@pytest.fixture
def make_engine(broker, redis_server, topic_prefix, key_prefix, redis_client):
    def build(mode: str) -> Engine:
        return Engine(
            make_settings(
                broker,
                redis_server,
                f"{topic_prefix}{mode}.",
                f"{key_prefix}{mode}",
                engine={"ordered_input": True},
            )
        )

    return build


def test_live_replay_and_killed_runs_emit_the_same_triggers(make_engine, tmp_path: Path) -> None:
    config = tmp_path / "omnipulse.toml"
    config.write_text(CONFIG)
    # 1. replay: the scenario as a file spanning days, loaded with `omnipulse replay`
    replayed = make_engine("replay")
    file = tmp_path / "history.jsonl"
    file.write_bytes(b"\n".join(orjson.dumps({"topic": t, **ev}) for t, ev in EVENTS) + b"\n")
    replayed.cli("replay", str(file))
    replayed.run()
    expected = ids(replayed)
    kinds = {k for k, _ in expected}
    assert {"abandoned_cart", "journey_step"} <= kinds
    carts = [t for t in triggers(replayed) if t["kind"] == "abandoned_cart"]
    assert sorted(t["customer_id"] for t in carts) == ["r1", "r3"]
    assert len(expected) == len(set(expected))

    # 2. live: the engine runs while the events arrive one by one
    live = make_engine("live")
    proc = start_live(live, config)
    try:
        for topic, ev in EVENTS:
            live.send(topic, ev)
            time.sleep(0.05)
        wait_for("live triggers", lambda: len(ids(live)) >= len(expected))
        time.sleep(1.0)  # nothing more may come
    finally:
        stop(proc)
    assert ids(live) == expected

    # 3. killed: SIGKILL between the carts and their deadlines, then a restart
    killed = make_engine("killed")
    proc = start_live(killed, config)
    client = redis.Redis.from_url(killed.ep.redis_url)
    r3 = f"{killed.settings.redis.key_prefix}:{{c:r3}}"
    try:
        for topic, ev in EVENTS[:KILL_AT]:
            killed.send(topic, ev)
        # the first events' own triggers are out and r3's cart is in Redis
        wait_for("state before the kill", lambda: bool(client.hget(r3, "cart")))
        wait_for("first triggers", lambda: len(ids(killed)) >= 2)
        time.sleep(0.5)
    finally:
        stop(proc, signal.SIGKILL)
    for topic, ev in EVENTS[KILL_AT:]:
        killed.send(topic, ev)
    proc = start_live(killed, config)
    try:
        wait_for("triggers after the restart", lambda: len(ids(killed)) >= len(expected))
        time.sleep(1.0)
    finally:
        stop(proc)
        client.close()
    assert ids(killed) == expected
