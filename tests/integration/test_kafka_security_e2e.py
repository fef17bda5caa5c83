"""Wrong Kafka security settings end a command within a bounded time with one
clear line (librdkafka on its own would retry for ever)."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
from engine_harness import Engine, make_settings

pytestmark = pytest.mark.integration

SASL_PASSWORD = "kafka-Sasl-Pw-5521"


@pytest.mark.parametrize("words", [("run", "--until-caught-up"), ("lag",)])
def test_wrong_sasl_settings_fail_in_bounded_time_with_one_line(
    broker, redis_server, topic_prefix, key_prefix, words
) -> None:
    engine = Engine(make_settings(broker, redis_server, topic_prefix, key_prefix))
    env = engine.cli_env(
        OMNIPULSE_KAFKA_SECURITY_PROTOCOL="SASL_PLAINTEXT",
        OMNIPULSE_KAFKA_SASL_MECHANISM="PLAIN",
        OMNIPULSE_KAFKA_SASL_USERNAME="omnipulse",
        OMNIPULSE_KAFKA_SASL_PASSWORD=SASL_PASSWORD,
    )
    started = time.monotonic()
    out = subprocess.run(
        [sys.executable, "-m", "omnipulse.cli", *words],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    took = time.monotonic() - started
    assert out.returncode == 2, out.stderr
    assert took < 30
    assert "Traceback" not in out.stderr
    assert SASL_PASSWORD not in out.stderr + out.stdout
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith(f"omnipulse: kafka: no answer from {broker.bootstrap_servers}")
    assert "SASL" in lines[0]
    assert "kafka.extra" in lines[0]
