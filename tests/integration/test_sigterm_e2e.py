"""SIGTERM (docker stop, Kubernetes) mid-stream: the engine finishes its batch,
flushes and commits, exits 0 within seconds, and a restart ends with the same
triggers as a run that was never stopped: none lost, none doubled."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import orjson
import pytest
import redis
from engine_harness import Engine, make_settings, order, ts

from common.settings import TRIGGER_TOPIC_NAMES

pytestmark = pytest.mark.integration

ORDERS = 12_000
CUSTOMERS = 1_500


def history(path: Path) -> Path:
    """Orders only, on one partition: what the engine decides then depends on the
    input alone, not on how the fetches of several partitions interleave, so a
    clean run is a fixed reference (the crash tests cover interleaved topics)."""
    rng = random.Random(5)
    lines = []
    for i in range(ORDERS):
        cid = f"sig-{rng.randrange(CUSTOMERS):05d}"
        when = ts(minutes=i / 12)  # 17 hours in all: see CONFIG
        total = f"{rng.randrange(500, 900_000) / 100:.2f}"
        lines.append(
            orjson.dumps(
                {"topic": "orders", "event_id": f"so{i}", **order(cid, f"so{i}", when, total)}
            )
        )
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def trigger_ids(engine: Engine) -> Counter[str]:
    return Counter(t["trigger_id"] for topic in TRIGGER_TOPIC_NAMES for t in engine.triggers(topic))


def processed(engine: Engine) -> int:
    """Input records the engine has durably applied (its resume offsets in Redis)."""
    with redis.Redis.from_url(engine.ep.redis_url) as client:
        raw = client.hgetall(f"{engine.settings.redis.key_prefix}:offsets")
    return sum(int(v) for v in raw.values())


def run_to_end(engine: Engine, config: Path) -> None:
    engine.cli("run", "--until-caught-up", OMNIPULSE_CONFIG=str(config))


# The reference is a clean run, so what the engine decides must not depend on
# where batches start and end, which a restart moves: time-driven reviews do
# (a review due inside a batch is judged after the whole batch, and against
# the M distribution at its end). So the history spans
# less than a day, before any timer is due, and no segment rule ranks
# customers against each other.
CONFIG = """
[kafka]
partitions = 1
[segments]
core_top_share = 1.0
potential_low_pct = 0.0
potential_high_pct = 1.0
"""


@pytest.fixture
def make_engine(broker, redis_server, topic_prefix, key_prefix, redis_client):
    def build(mode: str) -> Engine:
        return Engine(
            make_settings(
                broker,
                redis_server,
                f"{topic_prefix}{mode}.",
                f"{key_prefix}{mode}",
                kafka={"partitions": 1},
            )
        )

    return build


def test_sigterm_mid_stream_exits_zero_and_a_restart_loses_and_doubles_nothing(
    make_engine, tmp_path: Path
) -> None:
    file = history(tmp_path / "orders.jsonl")
    config = tmp_path / "omnipulse.toml"
    config.write_text(CONFIG)
    clean = make_engine("clean")
    clean.cli("replay", str(file))
    run_to_end(clean, config)
    expected = trigger_ids(clean)
    assert sum(expected.values()) > 100
    assert max(expected.values()) == 1

    stopped = make_engine("term")
    stopped.cli("replay", str(file))
    total = processed(clean)
    proc = subprocess.Popen(
        [sys.executable, "-m", "omnipulse.cli", "run", "--until-caught-up"],
        env=stopped.cli_env(OMNIPULSE_CONFIG=str(config)),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 120
        while processed(stopped) < total // 5 and time.monotonic() < deadline:
            assert proc.poll() is None, proc.stderr.read().decode()  # type: ignore[union-attr]
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        sent = time.monotonic()
        code = proc.wait(timeout=30)
        took = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
    stderr = proc.stderr.read().decode()  # type: ignore[union-attr]
    assert code == 0, stderr
    assert took < 10, f"took {took:.1f} s to stop"
    assert "finishing the current batches" in stderr
    assert "Traceback" not in stderr
    at_stop = processed(stopped)
    assert 0 < at_stop < total, "the signal must land mid-stream"
    partial = trigger_ids(stopped)
    assert max(partial.values()) == 1
    assert set(partial) <= set(expected)

    run_to_end(stopped, config)
    assert processed(stopped) == total
    assert trigger_ids(stopped) == expected
