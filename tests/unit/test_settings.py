"""Settings: defaults, the reference file, overrides, validation, masking."""

from __future__ import annotations

import dataclasses
import json
import tomllib
from datetime import UTC, time, timedelta
from decimal import Decimal
from importlib import resources
from pathlib import Path

import pytest

from common.errors import ConfigError
from common.settings import (
    DLQ_TOPIC,
    INPUT_TOPICS,
    TRIGGER_TOPIC_NAMES,
    TRIGGER_TOPICS,
    EngineSettings,
    Settings,
    format_duration,
    load_settings,
    mask_url,
    parse_duration,
    settings_from_dict,
)
from operators.customer import TierRules

REFERENCE = Path(str(resources.files("omnipulse") / "omnipulse.toml"))
SECTIONS = [f.name for f in dataclasses.fields(Settings) if f.name != "source"]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "omnipulse.toml"
    path.write_text(text, encoding="utf-8")
    return path


# ---------------------------------------------------------------- defaults


def test_defaults_without_file_or_env():
    s = load_settings(env={})
    assert s == Settings()
    assert s.source is None
    assert s.kafka.bootstrap_servers is None
    assert s.kafka.topic_prefix == ""
    assert s.kafka.consumer_group == "omnipulse"
    assert s.kafka.partitions == 4
    assert s.kafka.replication_factor == 1
    assert dict(s.kafka.extra) == {}
    assert s.redis.url is None
    assert s.redis.key_prefix == "op"
    assert s.engine.allowed_lateness == timedelta(minutes=5)
    assert s.engine.idle_advance is True
    assert s.engine.batch_size == 1000
    assert s.engine.max_future == timedelta(days=1)
    assert s.engine.min_event_time == 946_684_800_000
    assert s.engine.dedup_ttl == timedelta(days=7)
    assert s.engine.max_value_bytes == 262_144
    assert s.engine.timezone == "UTC"
    assert s.engine.tz() is UTC
    assert s.engine.http_port == 9108
    assert s.engine.timer_shards == 16
    seg = s.segments
    assert (seg.core_recency_days, seg.core_min_frequency, seg.core_top_share) == (7, 5, 0.20)
    assert (seg.new_recency_days, seg.new_max_frequency) == (7, 1)
    assert (seg.potential_recency_days, seg.potential_min_frequency) == (15, 1)
    assert seg.potential_max_frequency == 2
    assert (seg.potential_low_pct, seg.potential_high_pct) == (0.25, 0.75)
    assert (seg.sleeping_recency_days, seg.sleeping_min_frequency) == (90, 1)
    assert seg.premium_streak_days == 3
    assert seg.offers["core"] == "exclusive benefits + 1:1 advisor"
    assert seg.offers["potential"] == "scenario recommendation + repurchase incentive"
    assert seg.offers["sleeping"] == "wake-up coupon"
    assert seg.offers["core_potential"] == "VIP pre-order access"
    assert s.tiers.gold_spend == Decimal("5000")
    assert s.tiers.platinum_spend == Decimal("20000")
    assert s.tiers.window_days == 365
    ac = s.abandoned_cart
    assert ac.abandoned_after == timedelta(hours=1)
    assert (ac.discount_pct, ac.core_discount_pct, ac.low_stock_hint) == (10, 15, 5)
    assert ac.cooldown == timedelta(hours=24)
    assert dict(s.journey.steps) == {
        "tips_24h": timedelta(hours=24),
        "recommend_3d": timedelta(days=3),
        "coupon_7d": timedelta(days=7),
    }
    r = s.reorder
    assert (r.service_level, r.default_lead_time_days, r.ewma_alpha, r.safety_stock) == (
        0.95,
        7,
        0.2,
        0,
    )
    c = s.churn
    assert (c.horizon, c.threshold) == (timedelta(days=90), 0.7)
    assert (c.interval_increase, c.activity_drop) == (0.30, 0.50)
    assert c.activity_window == timedelta(days=30)
    assert s.price.max_deviation_pct == Decimal("5")
    p = s.policy
    assert (p.max_per_day, p.quiet_hours, p.holdout_share) == (3, None, 0.05)
    assert p.quiet_window() is None
    assert p.uplift_window == timedelta(days=7)


def test_settings_are_frozen():
    s = Settings()
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.kafka.partitions = 8  # type: ignore[misc]
    with pytest.raises(TypeError):
        s.kafka.extra["x"] = "y"  # type: ignore[index]
    with pytest.raises(TypeError):
        s.segments.offers["core"] = "nothing"  # type: ignore[index]


def test_reference_file_equals_builtin_defaults():
    assert load_settings(REFERENCE, env={}) == Settings()


def test_reference_file_documents_every_field():
    doc = tomllib.loads(REFERENCE.read_text(encoding="utf-8"))
    assert sorted(doc) == sorted(SECTIONS)
    for name in SECTIONS:
        section_cls = type(getattr(Settings(), name))
        expected = {f.name for f in dataclasses.fields(section_cls)}
        assert set(doc[name]) == expected, name
    text = REFERENCE.read_text(encoding="utf-8").splitlines()
    # every key line is preceded by a comment line
    for i, line in enumerate(text):
        if "=" in line and not line.lstrip().startswith("#"):
            assert text[i - 1].lstrip().startswith("#"), f"undocumented: {line!r}"


def test_masked_default_roundtrips_through_settings_from_dict():
    s = Settings()
    shown = s.masked()
    json.dumps(shown)  # JSON-able
    # None values are spelt as absent / empty in the file
    for table in shown.values():
        for key, value in list(table.items()):
            if value is None:
                table[key] = ""
    assert settings_from_dict(shown) == s


# ---------------------------------------------------------------- overrides


def test_file_overrides_and_keeps_other_defaults(tmp_path):
    path = write(
        tmp_path,
        """
[kafka]
bootstrap_servers = "k1:9092, k2:9092"
topic_prefix = "prod."
partitions = 12

[kafka.extra]
security.protocol = "SASL_SSL"
"enable.idempotence" = true

[engine]
allowed_lateness = "1m30s"
min_event_time = 2020-01-01T00:00:00+08:00
timezone = "Asia/Shanghai"

[segments.offers]
core = "gift"

[tiers]
gold_spend = 4999.99
platinum_spend = "20000.50"

[journey.steps]
coupon_14d = "14d"
tips_1h = "1h"

[policy]
quiet_hours = "22:00-08:00"
""",
    )
    s = load_settings(path, env={})
    assert s.source == path
    assert s.kafka.bootstrap_servers == "k1:9092,k2:9092"
    assert s.kafka.topic("orders") == "prod.orders"
    assert s.kafka.partitions == 12
    assert s.kafka.consumer_group == "omnipulse"
    assert dict(s.kafka.extra) == {"security.protocol": "SASL_SSL", "enable.idempotence": "true"}
    assert s.kafka.client_config()["bootstrap.servers"] == "k1:9092,k2:9092"
    assert s.engine.allowed_lateness == timedelta(seconds=90)
    assert s.engine.min_event_time == 1_577_808_000_000
    assert str(s.engine.tz()) == "Asia/Shanghai"
    assert s.segments.offers["core"] == "gift"
    assert s.segments.offers["sleeping"] == "wake-up coupon"
    assert s.tiers.gold_spend == Decimal("4999.99")
    assert s.tiers.platinum_spend == Decimal("20000.50")
    assert s.tiers.rules() == TierRules(499_999, 2_000_050, 365)
    assert list(s.journey.steps) == ["tips_1h", "coupon_14d"]  # sorted by delay
    assert s.policy.quiet_window() == (time(22, 0), time(8, 0))
    assert s.redis == Settings().redis


def test_config_path_from_environment(tmp_path):
    path = write(tmp_path, "[redis]\nkey_prefix = 'shop1'\n")
    s = load_settings(env={"OMNIPULSE_CONFIG": str(path)})
    assert s.redis.key_prefix == "shop1"
    assert s.source == path


def test_explicit_path_beats_environment(tmp_path):
    path = write(tmp_path, "[redis]\nkey_prefix = 'explicit'\n")
    s = load_settings(path, env={"OMNIPULSE_CONFIG": str(tmp_path / "missing.toml")})
    assert s.redis.key_prefix == "explicit"


def test_env_overrides_connections_over_file(tmp_path):
    path = write(
        tmp_path,
        "[kafka]\nbootstrap_servers = 'file:9092'\ntopic_prefix = 'file.'\n"
        "[redis]\nurl = 'redis://file:6379/0'\n",
    )
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": "kafka:9092",
        "REDIS_URL": "redis://redis:6379/1",
        "OMNIPULSE_TOPIC_PREFIX": "stage.",
        "OMNIPULSE_KEY_PREFIX": "st",
    }
    s = load_settings(path, env=env)
    assert s.kafka.bootstrap_servers == "kafka:9092"
    assert s.redis.url == "redis://redis:6379/1"
    assert s.kafka.topic_prefix == "stage."
    assert s.redis.key_prefix == "st"
    assert s.kafka.trigger_topic("bopis_suggestion") == "stage.triggers.allocation"


def test_empty_env_var_counts_as_unset(tmp_path):
    path = write(tmp_path, "[kafka]\nbootstrap_servers = 'file:9092'\n")
    s = load_settings(path, env={"KAFKA_BOOTSTRAP_SERVERS": "", "REDIS_URL": ""})
    assert s.kafka.bootstrap_servers == "file:9092"
    assert s.redis.url is None


def test_bad_env_value_names_key_and_variable():
    with pytest.raises(ConfigError) as err:
        load_settings(env={"REDIS_URL": "http://u:hunter2@h/0"})
    msg = str(err.value)
    assert msg.startswith("redis.url:")
    assert "REDIS_URL" in msg
    assert "hunter2" not in msg


def test_replace_validates_and_accepts_file_spelling():
    e = dataclasses.replace(Settings().engine, allowed_lateness="2m")
    assert e.allowed_lateness == timedelta(minutes=2)
    with pytest.raises(ConfigError, match=r"^engine\.batch_size:"):
        EngineSettings(batch_size=0)


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        (
            "[segments]\ncore_recency_days = 'x'",
            "segments.core_recency_days: expected a positive integer, got 'x'",
        ),
        ("[segments]\ncore_recency_days = 0", "segments.core_recency_days:"),
        ("[segments]\ncore_recency_days = true", "segments.core_recency_days:"),
        ("[engine]\nallowed_lateness = '5 minutes'", "engine.allowed_lateness:"),
        ("[engine]\nallowed_lateness = 300", "engine.allowed_lateness:"),
        ("[engine]\nmax_future = '0s'", "engine.max_future:"),
        ("[engine]\nidle_advance = 'yes'", "engine.idle_advance:"),
        ("[engine]\ntimezone = 'Mars/Olympus'", "engine.timezone:"),
        ("[engine]\nhttp_port = 70000", "engine.http_port:"),
        ("[engine]\nmin_event_time = '2000-01-01T00:00:00'", "engine.min_event_time:"),
        ("[tiers]\ngold_spend = 'lots'", "tiers.gold_spend:"),
        ("[tiers]\ngold_spend = '-1'", "tiers.gold_spend:"),
        ("[tiers]\ngold_spend = 'NaN'", "tiers.gold_spend:"),
        ("[tiers]\ngold_spend = 30000", "tiers.gold_spend: must be below platinum_spend"),
        ("[segments]\npotential_low_pct = 0.9", "segments.potential_low_pct: must be below"),
        ("[segments]\ncore_top_share = 1.5", "segments.core_top_share:"),
        ("[reorder]\nservice_level = 1.0", "reorder.service_level:"),
        ("[abandoned_cart]\ndiscount_pct = 101", "abandoned_cart.discount_pct:"),
        ("[policy]\nquiet_hours = '22-8'", "policy.quiet_hours:"),
        ("[policy]\nquiet_hours = '08:00-08:00'", "policy.quiet_hours:"),
        ("[kafka]\ntopic_prefix = 'a b'", "kafka.topic_prefix:"),
        ("[kafka]\nbootstrap_servers = 9092", "kafka.bootstrap_servers:"),
        ("[kafka.extra]\n'sasl.password' = [1]", "kafka.extra.sasl.password:"),
        ("[redis]\nkey_prefix = ''", "redis.key_prefix:"),
        ("[redis]\nurl = 'mysql://db'", "redis.url:"),
        ("[journey.steps]\ntips = 'soon'", "journey.steps.tips:"),
        ("kafka = 3", "kafka: expected a table"),
    ],
)
def test_bad_value_names_the_key(tmp_path, toml, message):
    with pytest.raises(ConfigError) as err:
        load_settings(write(tmp_path, toml), env={})
    assert str(err.value).startswith(message)


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        (
            "[kafka]\nbootstrap_server = 'x:1'",
            "kafka.bootstrap_server: unknown key (did you mean 'bootstrap_servers'?)",
        ),
        ("[kafak]\npartitions = 1", "kafak: unknown section (did you mean 'kafka'?)"),
        ("[segments.offers]\nextra = 'x'", "segments.offers.extra: unknown key"),
        ("[engine]\nbatchsize = 10", "engine.batchsize: unknown key (did you mean 'batch_size'?)"),
    ],
)
def test_unknown_key_names_it(tmp_path, toml, message):
    with pytest.raises(ConfigError) as err:
        load_settings(write(tmp_path, toml), env={})
    assert str(err.value) == message


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_settings(tmp_path / "nope.toml", env={})
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_settings(write(tmp_path, "[kafka\n"), env={})


# ---------------------------------------------------------------- masking


def test_masking_hides_redis_password_and_sasl_secrets(tmp_path):
    path = write(
        tmp_path,
        """
[redis]
url = "redis://app:s3cr3t-pw@cache:6379/0"

[kafka.extra]
"security.protocol" = "SASL_SSL"
sasl.mechanism = "SCRAM-SHA-512"
sasl.username = "svc-omnipulse"
sasl.password = "kafka-pw-123"
"ssl.key.password" = "keypw"
""",
    )
    s = load_settings(path, env={})
    # the real values stay usable
    assert s.redis.url == "redis://app:s3cr3t-pw@cache:6379/0"
    assert s.kafka.extra["sasl.password"] == "kafka-pw-123"

    shown = s.masked()
    text = json.dumps(shown)
    for secret in ("s3cr3t-pw", "kafka-pw-123", "svc-omnipulse", "keypw"):
        assert secret not in text
        assert secret not in repr(s)
        assert secret not in str(s)
    assert shown["redis"]["url"] == "redis://app:***@cache:6379/0"
    assert shown["kafka"]["extra"]["sasl.password"] == "***"
    assert shown["kafka"]["extra"]["sasl.mechanism"] == "SCRAM-SHA-512"
    assert shown["kafka"]["extra"]["security.protocol"] == "SASL_SSL"
    assert s.as_dict()["kafka"]["extra"]["sasl.password"] == "kafka-pw-123"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:pw@h:6379/0", "redis://:***@h:6379/0"),
        ("redis://pw@h:6379", "redis://***@h:6379"),
        ("rediss://h:6380/2?password=pw&ssl_cert_reqs=none", None),
        ("redis://h:6379/0", "redis://h:6379/0"),
        ("unix:///run/redis.sock?db=1", "unix:///run/redis.sock?db=1"),
        (None, None),
    ],
)
def test_mask_url(url, shown):
    masked = mask_url(url)
    if url is not None and "pw" in url:
        assert "pw" not in (masked or "").replace("password", "")
    if shown is not None:
        assert masked == shown


# ---------------------------------------------------------------- durations


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("90d", timedelta(days=90)),
        ("1h", timedelta(hours=1)),
        ("30m", timedelta(minutes=30)),
        ("15s", timedelta(seconds=15)),
        ("500ms", timedelta(milliseconds=500)),
        ("2w", timedelta(weeks=2)),
        ("1h30m", timedelta(minutes=90)),
        ("1d12h", timedelta(hours=36)),
        (" 5M ", timedelta(minutes=5)),
        ("0", timedelta(0)),
        ("0s", timedelta(0)),
    ],
)
def test_parse_duration(text, expected):
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "x", "5", "1.5h", "-1h", "1 h", "h", "1y", "1h x", None, 5])
def test_parse_duration_rejects(text):
    with pytest.raises(ValueError):
        parse_duration(text)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "td",
    [
        timedelta(days=90),
        timedelta(hours=25),
        timedelta(milliseconds=1500),
        timedelta(0),
        timedelta(minutes=5),
    ],
)
def test_format_duration_roundtrips(td):
    assert parse_duration(format_duration(td)) == td


def test_format_duration_spelling():
    assert format_duration(timedelta(minutes=5)) == "5m"
    assert format_duration(timedelta(hours=25)) == "1d1h"
    assert format_duration(timedelta(milliseconds=500)) == "500ms"


# ---------------------------------------------------------------- topics


def test_topic_constants_and_names():
    assert INPUT_TOPICS == ("clicks", "carts", "orders", "stock", "locations")
    assert DLQ_TOPIC == "omnipulse.dlq"
    assert TRIGGER_TOPICS["allocation"] == TRIGGER_TOPICS["bopis_suggestion"]
    assert TRIGGER_TOPICS["price_alert"] == "triggers.price_alert"
    assert {"segment_change", "tier_change", "win_back", "vip_invitation"} == {
        k for k, v in TRIGGER_TOPICS.items() if v == "triggers.segment"
    }
    assert len(TRIGGER_TOPICS) == 11
    assert TRIGGER_TOPIC_NAMES == (
        "triggers.abandoned_cart",
        "triggers.reorder",
        "triggers.allocation",
        "triggers.churn_risk",
        "triggers.segment",
        "triggers.journey",
        "triggers.price_alert",
    )
    k = dataclasses.replace(Settings().kafka, topic_prefix="p.")
    assert k.dlq_topic == "p.omnipulse.dlq"
    assert k.input_topics()[0] == "p.clicks"
    assert len(k.all_topics()) == 5 + 7 + 1
    with pytest.raises(KeyError):
        k.trigger_topic("nonsense")


def test_settings_pickle_copy_and_hash():
    import copy
    import pickle

    s = load_settings(env={"REDIS_URL": "redis://:pw@h:6379/0"})
    assert pickle.loads(pickle.dumps(s)) == s
    assert copy.deepcopy(s) == s
    assert hash(s) == hash(Settings(redis=s.redis))
    assert isinstance(s.kafka.extra, dict)
    with pytest.raises(TypeError):
        s.kafka.extra.update({"a": "b"})  # type: ignore[attr-defined]
