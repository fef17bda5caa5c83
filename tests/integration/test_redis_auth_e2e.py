"""Redis with a password and with an ACL user (issue 5, acceptance 6): the engine
and the CLI work when given the right credentials, and stop at once with one
clear line, not a traceback, when they are wrong; `config show` shows no secret."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator

import orjson
import pytest
from engine_harness import Engine, click, make_settings, order, ts

from connectors.embedded import EmbeddedRedis
from omnipulse.endpoints import Endpoints

pytestmark = pytest.mark.integration

ADMIN_PASSWORD = "adm1n-Requirepass-7731"
ENGINE_PASSWORD = "eng1ne-Acl-Pw-4410"
WRONG = "n0t-the-Passw0rd-9182"
FAST_S = 20.0  # a wrong password must not cost more than a process start


@pytest.fixture(scope="module")
def secured_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRedis]:
    with EmbeddedRedis(tmp_path_factory.mktemp("redis-auth"), password=ADMIN_PASSWORD) as rds:
        yield rds


@pytest.fixture
def engine(broker, secured_redis, topic_prefix, key_prefix) -> Iterator[Engine]:
    eng = Engine(make_settings(broker, secured_redis, topic_prefix, key_prefix))
    # The harness's own reads (stats, profile) need the password too.
    eng.ep = Endpoints(eng.ep.bootstrap, f"redis://:{ADMIN_PASSWORD}@{secured_redis.url[8:]}")
    yield eng
    with secured_redis.admin_client() as admin:
        keys = list(admin.scan_iter(match=f"{key_prefix}*"))
        if keys:
            admin.delete(*keys)


def omnipulse(
    engine: Engine, *words: str, **env: str
) -> tuple[subprocess.CompletedProcess[str], float]:
    """`omnipulse WORDS` against the secured Redis, the URL without credentials."""
    full = engine.cli_env()
    full["REDIS_URL"] = engine.settings.redis.url or ""
    for name in ("REDIS_PASSWORD", "REDIS_USERNAME", "REDIS_PASSWORD_FILE"):
        full.pop(name, None)
    full.update(env)
    started = time.monotonic()
    out = subprocess.run(
        [sys.executable, "-m", "omnipulse.cli", *words],
        env=full,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return out, time.monotonic() - started


def assert_fails_with_one_line(
    out: subprocess.CompletedProcess[str], took: float, *expected: str
) -> None:
    assert out.returncode == 2, out.stderr
    assert took < FAST_S
    assert "Traceback" not in out.stderr
    lines = [line for line in out.stderr.splitlines() if line.startswith("omnipulse: ")]
    assert len(lines) == 1, out.stderr
    for text in expected:
        assert text in lines[0]
    for secret in (WRONG, ADMIN_PASSWORD, ENGINE_PASSWORD):
        assert secret not in out.stderr + out.stdout


def send_some(engine: Engine) -> None:
    engine.send("orders", order("cust-auth-1", "o1", ts(0), "42.00"))
    engine.send("clicks", click("cust-auth-2", ts(0, 1)))


def kinds(engine: Engine) -> list[str]:
    return sorted(t["kind"] for t in engine.triggers() if t["customer_id"] == "cust-auth-1")


def test_requirepass_right_password_runs_wrong_one_fails_fast(engine: Engine) -> None:
    send_some(engine)

    out, took = omnipulse(engine, "run", "--until-caught-up", REDIS_PASSWORD=WRONG)
    assert_fails_with_one_line(out, took, "redis: authentication", "'default'", "REDIS_PASSWORD")
    out, took = omnipulse(engine, "run", "--until-caught-up")
    assert_fails_with_one_line(out, took, "requires a password and none was given")
    assert engine.triggers() == []  # nothing was processed by the failed runs

    out, _ = omnipulse(engine, "run", "--until-caught-up", REDIS_PASSWORD=ADMIN_PASSWORD)
    assert out.returncode == 0, out.stderr
    assert kinds(engine) == ["segment_change", "tier_change"]

    out, _ = omnipulse(engine, "profile", "cust-auth-1", REDIS_PASSWORD=ADMIN_PASSWORD)
    assert out.returncode == 0, out.stderr
    assert orjson.loads(out.stdout)["monetary"] == "42.00"
    for words in (("profile", "cust-auth-1"), ("model",), ("report",)):
        out, took = omnipulse(engine, *words, REDIS_PASSWORD=WRONG)
        assert_fails_with_one_line(out, took, "redis: authentication")


def test_password_from_a_file(engine: Engine, tmp_path) -> None:
    send_some(engine)
    secret = tmp_path / "redis_password"
    secret.write_text(ADMIN_PASSWORD + "\n")
    secret.chmod(0o600)
    out, _ = omnipulse(engine, "run", "--until-caught-up", REDIS_PASSWORD_FILE=str(secret))
    assert out.returncode == 0, out.stderr
    assert kinds(engine) == ["segment_change", "tier_change"]


def test_acl_user_with_its_own_keys_runs_and_a_wrong_password_fails(
    engine: Engine, secured_redis: EmbeddedRedis
) -> None:
    prefix = engine.settings.redis.key_prefix
    user = f"engine-{prefix}"
    with secured_redis.admin_client() as admin:
        # Least privilege: only this deployment's keys, no admin or dangerous commands.
        admin.acl_setuser(
            user,
            enabled=True,
            passwords=[f"+{ENGINE_PASSWORD}"],
            keys=[f"{prefix}*"],
            commands=["+@all", "-@admin", "-@dangerous"],
        )
    try:
        send_some(engine)
        creds = {"REDIS_USERNAME": user}
        out, took = omnipulse(engine, "run", "--until-caught-up", **creds, REDIS_PASSWORD=WRONG)
        assert_fails_with_one_line(out, took, f"'{user}'", "authentication")
        # the default user's password is not this user's
        out, took = omnipulse(
            engine, "run", "--until-caught-up", **creds, REDIS_PASSWORD=ADMIN_PASSWORD
        )
        assert_fails_with_one_line(out, took, f"'{user}'")

        out, _ = omnipulse(
            engine, "run", "--until-caught-up", **creds, REDIS_PASSWORD=ENGINE_PASSWORD
        )
        assert out.returncode == 0, out.stderr
        assert kinds(engine) == ["segment_change", "tier_change"]
        out, _ = omnipulse(
            engine, "profile", "cust-auth-1", **creds, REDIS_PASSWORD=ENGINE_PASSWORD
        )
        assert out.returncode == 0, out.stderr
        assert orjson.loads(out.stdout)["frequency"] == 1
    finally:
        with secured_redis.admin_client() as admin:
            admin.acl_deluser(user)


def test_config_show_prints_no_secret(engine: Engine, tmp_path) -> None:
    key_file = tmp_path / "pseudonym_key"
    key_file.write_text("k3y-From-A-File-0123456789\n")
    out, _ = omnipulse(
        engine,
        "config",
        "show",
        REDIS_URL=f"redis://engine:{ADMIN_PASSWORD}@127.0.0.1:6379/0",
        REDIS_PASSWORD=ENGINE_PASSWORD,
        OMNIPULSE_KAFKA_SECURITY_PROTOCOL="SASL_SSL",
        OMNIPULSE_KAFKA_SASL_USERNAME="svc-omnipulse",
        OMNIPULSE_KAFKA_SASL_PASSWORD=WRONG,
        OMNIPULSE_PSEUDONYM_KEY_FILE=str(key_file),
    )
    assert out.returncode == 0, out.stderr
    shown = orjson.loads(out.stdout)
    for secret in (ADMIN_PASSWORD, ENGINE_PASSWORD, WRONG, "svc-omnipulse", "k3y-From-A-File"):
        assert secret not in out.stdout + out.stderr
    assert shown["redis"]["password"] == "***"
    assert shown["redis"]["url"] == "redis://engine:***@127.0.0.1:6379/0"
    assert shown["kafka"]["extra"]["sasl.password"] == "***"
    assert shown["kafka"]["extra"]["security.protocol"] == "SASL_SSL"
    assert shown["privacy"]["pseudonym_key"] == "***"
