"""`omnipulse profile ID` as a customer view or a support tool calls it: a
fresh process per lookup, against the engine's Redis.

The command is run in a subprocess, as a user runs it, and its answer is
checked; the same process reports which modules it loaded, so a lookup that
starts pulling in the engine (Bytewax, the Kafka client, the dataflow, the
churn model's libraries) fails here rather than as a slow customer view.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest
from engine_harness import T0, Engine, make_settings, order, ts

from omnipulse.profile import read_profile

pytestmark = pytest.mark.integration

DAY_MS = 86_400_000
T0_MS = int(T0.timestamp() * 1000)

# Top-level packages a profile lookup must not load: the engine's, not the lookup's.
ENGINE_ONLY = ("bytewax", "confluent_kafka", "river", "prometheus_client", "flows")

# The command's own entry point, then the modules loaded, on stderr's last line.
RUN_AND_LIST_MODULES = """
import sys
import orjson
from omnipulse.cli import main
code = main(sys.argv[1:])
sys.stdout.flush()
print(orjson.dumps(sorted(sys.modules)).decode(), file=sys.stderr)
sys.exit(code)
"""


@pytest.fixture
def engine(broker, redis_server, topic_prefix, key_prefix, redis_client) -> Engine:
    engine = Engine(make_settings(broker, redis_server, topic_prefix, key_prefix))
    engine.send("orders", order("vip-7", "o-1", ts(0), "120.00"))
    engine.send("orders", order("vip-7", "o-2", ts(3), "80.50", channel="store"))
    engine.send("orders", order("other-1", "o-3", ts(5, 12), "15.00"))
    engine.run()
    return engine


def profile_cmd(
    *words: str, env: dict[str, str], cwd: Path | None = None
) -> tuple[int, str, str, list[str]]:
    """Exit code, stdout, stderr without the module list, and the modules loaded."""
    out = subprocess.run(
        [sys.executable, "-c", RUN_AND_LIST_MODULES, "profile", *words],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )
    *log, modules = out.stderr.splitlines()
    return out.returncode, out.stdout, "\n".join(log), orjson.loads(modules)


def engine_only(modules: list[str]) -> list[str]:
    return [m for m in modules if m.split(".")[0] in ENGINE_ONLY or m == "omnipulse.runner"]


def test_profile_prints_the_customer_as_the_engine_left_it(engine: Engine) -> None:
    code, stdout, stderr, modules = profile_cmd("vip-7", env=engine.cli_env())
    assert code == 0, stderr
    prof: dict[str, Any] = orjson.loads(stdout)
    assert prof["customer_id"] == "vip-7"
    assert prof["frequency"] == 2
    assert prof["monetary"] == "200.50"
    assert prof["first_order_ts"] == T0_MS
    assert prof["last_order_ts"] == T0_MS + 3 * DAY_MS
    assert prof["first_activity_ts"] == T0_MS
    assert prof["last_activity_ts"] == T0_MS + 3 * DAY_MS
    # judged at the engine's clock: the newest event (another customer's, 2.5 days
    # after this one's last order) less the allowed lateness
    assert prof["recency_days"] == 2
    # everything else as the engine's own reader judges it at the same clock
    assert prof == read_profile(engine.settings, engine.ep.redis_url, "vip-7")
    assert engine_only(modules) == []


def test_an_unknown_customer_is_one_line_and_exit_code_1(engine: Engine) -> None:
    code, stdout, stderr, modules = profile_cmd("nobody-9", env=engine.cli_env())
    assert (code, stdout) == (1, "")
    assert stderr == "omnipulse: no profile for customer 'nobody-9'"
    assert engine_only(modules) == []


def test_profile_finds_running_embedded_services_from_their_file(
    engine: Engine, tmp_path: Path
) -> None:
    """Next to `make demo`: no addresses given, the embedded pair's file names them."""
    (tmp_path / ".omnipulse").mkdir()
    (tmp_path / ".omnipulse" / "embedded.json").write_bytes(
        orjson.dumps({"bootstrap": engine.ep.bootstrap, "redis_url": engine.ep.redis_url})
    )
    env = {
        k: v
        for k, v in engine.cli_env().items()
        if k not in ("KAFKA_BOOTSTRAP_SERVERS", "REDIS_URL", "OMNIPULSE_CONFIG")
    }
    code, stdout, stderr, modules = profile_cmd("vip-7", env=env, cwd=tmp_path)
    assert code == 0, stderr
    assert orjson.loads(stdout) == read_profile(engine.settings, engine.ep.redis_url, "vip-7")
    assert engine_only(modules) == []
    # the file is only read: it belongs to the process that started the services
    assert (tmp_path / ".omnipulse" / "embedded.json").exists()
    assert os.listdir(tmp_path / ".omnipulse") == ["embedded.json"]
