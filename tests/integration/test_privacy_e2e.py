"""Customer data in logs, Redis and trigger topics (issue 5, Security):

- the engine's INFO log (text or JSON lines) never carries a customer id or a
  payload value, also when events are rejected;
- with `[privacy] pseudonymize`, no raw customer or anonymous id reaches Redis
  or a trigger topic, stitching still works, and `omnipulse profile` takes
  the raw id.
"""

from __future__ import annotations

import base64
import subprocess
import sys
from typing import Any

import orjson
import pytest
import redis
from engine_harness import T0, Engine, cart, click, make_settings, order, ts

from common.settings import TRIGGER_TOPIC_NAMES
from operators.pseudonym import Pseudonymizer

pytestmark = pytest.mark.integration

KEY = "pseudonym-Key-For-Tests-0042"
RAW_IDS = ("cust-RAW-1001", "cust-RAW-1002", "anon-RAW-77", "cust-RAW-BAD")
PAYLOAD_BITS = ("SKU-PRIVATE-7", "4321.09", "Lujiazui-Store-88")


def scenario(engine: Engine) -> None:
    c1, c2, anon, bad = RAW_IDS
    sku, total, store = PAYLOAD_BITS
    # an anonymous visitor on two days logs in as c1 on the third: one history
    engine.send("clicks", *[click(None, ts(d), premium=True, anonymous_id=anon) for d in (0, 1)])
    engine.send("clicks", click(c1, ts(2), premium=True, anonymous_id=anon))
    engine.send("orders", {**order(c1, "o-1", ts(2, 1), total), "store_id": store})
    # c2 leaves a cart: the abandoned-cart trigger goes out under its pseudonym
    engine.send("carts", cart(c2, sku, ts(2, 2)))
    # rejected input: a negative quantity and a broken JSON record
    engine.send("carts", cart(bad, sku, ts(2, 3), qty=-4))
    engine.send("carts", f'{{"customer_id": "{bad}", "sku": "{sku}"'.encode(), key=bad)
    engine.send("clicks", click("clock-visitor", ts(4)))


def run_cli(engine: Engine, *words: str, **env: str) -> subprocess.CompletedProcess[str]:
    out = subprocess.run(
        [sys.executable, "-m", "omnipulse.cli", *words],
        env=engine.cli_env(**env),
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert out.returncode == 0, out.stderr
    return out


def all_triggers(engine: Engine) -> list[tuple[bytes | None, bytes]]:
    from kafkautil import consume_all

    return [
        (r.key, r.value)
        for topic in TRIGGER_TOPIC_NAMES
        for r in consume_all(engine.ep.bootstrap, engine.settings.kafka.topic(topic))
    ]


def redis_dump(url: str, prefix: str) -> bytes:
    """Every key under `prefix` and everything stored in it, as one blob to search."""
    out: list[bytes] = []
    with redis.Redis.from_url(url) as client:
        for key in client.scan_iter(match=f"{prefix}*"):
            out.append(key)
            kind = client.type(key).decode()
            if kind == "string":
                out.append(client.get(key) or b"")
            elif kind == "hash":
                for k, v in client.hgetall(key).items():
                    out += [k, v]
            elif kind == "zset":
                out += client.zrange(key, 0, -1)
            elif kind == "set":
                out += list(client.smembers(key))
            elif kind == "list":
                out += client.lrange(key, 0, -1)
            elif kind == "stream":
                out.append(repr(client.xrange(key)).encode())
            else:
                out.append(client.dump(key) or b"")
    return b"\n".join(out)


def assert_log_is_clean(stderr: str, *also: str) -> None:
    for secret in (*RAW_IDS, *PAYLOAD_BITS, *also):
        assert secret not in stderr, f"{secret!r} in the log:\n{stderr}"


def test_info_log_as_json_lines_carries_no_customer_id_or_payload(
    broker, redis_server, topic_prefix, key_prefix, redis_client
) -> None:
    engine = Engine(make_settings(broker, redis_server, topic_prefix, key_prefix))
    scenario(engine)
    out = run_cli(engine, "--log-format", "json", "run", "--until-caught-up")
    assert_log_is_clean(out.stderr)
    records = [orjson.loads(line) for line in out.stderr.splitlines() if line.strip()]
    assert records, "the engine logged nothing at INFO"
    for rec in records:
        assert {"ts", "level", "logger", "message"} <= set(rec), rec
        assert rec["ts"].endswith("Z") and rec["level"] in {"INFO", "WARNING", "ERROR"}
    assert any(r["message"].startswith("engine starting") for r in records)
    # the engine did its work: triggers for the customers, the bad records in the DLQ
    assert {t["customer_id"] for t in engine.triggers("triggers.abandoned_cart")} == {RAW_IDS[1]}
    assert len(engine.dlq()) == 2

    # the same through the environment variable, in a command that fails
    env = engine.cli_env(OMNIPULSE_LOG_FORMAT="json")
    env["REDIS_URL"] = "redis://127.0.0.1:1/0"  # nothing listens there
    failed = subprocess.run(
        [sys.executable, "-m", "omnipulse.cli", "profile", "x"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert failed.returncode == 2
    (line,) = failed.stderr.splitlines()
    rec = orjson.loads(line)
    assert rec["level"] == "ERROR" and rec["message"].startswith("redis: cannot reach")


def test_pseudonymised_ids_never_reach_redis_or_trigger_topics(
    broker, redis_server, topic_prefix, key_prefix, redis_client, tmp_path
) -> None:
    engine = Engine(make_settings(broker, redis_server, topic_prefix, key_prefix))
    config = tmp_path / "omnipulse.toml"
    # ordered input: the visitor's clicks, keyed apart from the login, are applied
    # before it whatever partition each landed on (README, "Crash recovery")
    config.write_text("[privacy]\npseudonymize = true\n[engine]\nordered_input = true\n")
    key_file = tmp_path / "pseudonym_key"
    key_file.write_text(KEY + "\n")
    env = {"OMNIPULSE_CONFIG": str(config), "OMNIPULSE_PSEUDONYM_KEY_FILE": str(key_file)}
    scenario(engine)
    out = run_cli(engine, "run", "--until-caught-up", **env)
    pseudo = Pseudonymizer(KEY)
    c1, c2, _, _ = RAW_IDS
    assert_log_is_clean(out.stderr, KEY, pseudo(c1), pseudo(c2))

    stored = redis_dump(engine.ep.redis_url, key_prefix)
    published = all_triggers(engine)
    assert stored and published
    blob = stored + b"".join((k or b"") + v for k, v in published)
    for raw in RAW_IDS[:3]:
        assert raw.encode() not in blob, raw
    assert KEY.encode() not in blob
    assert pseudo(c1).encode() in stored

    triggers: list[dict[str, Any]] = [orjson.loads(v) for _, v in published]
    carts = [t for t in triggers if t["kind"] == "abandoned_cart"]
    assert [t["customer_id"] for t in carts] == [pseudo(c2)]
    assert {k for k, v in published if b"abandoned_cart" in v} == {pseudo(c2).encode()}
    # stitching still works: the visitor's premium days count for c1
    c1_kinds = {t["kind"] for t in triggers if t.get("customer_id") == pseudo(c1)}
    assert {"vip_invitation", "tier_change"} <= c1_kinds

    # the analyst types the raw id; the profile is found under its pseudonym
    prof = orjson.loads(run_cli(engine, "profile", c1, **env).stdout)
    assert prof["customer_id"] == pseudo(c1)
    assert prof["monetary"] == PAYLOAD_BITS[1]
    assert prof["first_activity_ts"] == int(T0.timestamp() * 1000)  # the anonymous visit
    by_pseudonym = run_cli(engine, "profile", "--pseudonym", pseudo(c1), **env)
    assert orjson.loads(by_pseudonym.stdout) == prof

    # decided and documented: a dead letter keeps the raw record, for the sender to fix
    dead = engine.dlq()
    assert len(dead) == 2
    assert all(RAW_IDS[3] in base64.b64decode(d["raw_value"]).decode() for d in dead)
