"""Secrets in the settings: from the environment or a file, folded into the
connections, never shown by `config show` or a repr."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from redis.connection import parse_url

from common.errors import ConfigError
from common.settings import load_settings, secret_values

KEY = "0123456789abcdef-pseudonym-key"


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def shown(settings) -> str:
    return json.dumps(settings.masked()) + repr(settings) + str(settings)


def test_redis_password_from_environment_is_folded_into_the_url_and_masked():
    s = load_settings(
        env={
            "REDIS_URL": "redis://cache:6379/2",
            "REDIS_USERNAME": "engine",
            "REDIS_PASSWORD": "p@ss:w/rd%",
        }
    )
    kwargs = parse_url(s.redis.connection_url())
    assert (kwargs["host"], kwargs["port"], kwargs["db"]) == ("cache", 6379, 2)
    assert (kwargs["username"], kwargs["password"]) == ("engine", "p@ss:w/rd%")
    assert "p@ss:w/rd%" not in shown(s)
    assert s.masked()["redis"]["password"] == "***"
    assert s.masked()["redis"]["username"] == "engine"


def test_redis_password_setting_beats_the_one_in_the_url():
    s = load_settings(env={"REDIS_URL": "redis://old:oldpw@cache:6379/0", "REDIS_PASSWORD": "new"})
    kwargs = parse_url(s.redis.connection_url())
    assert (kwargs["username"], kwargs["password"]) == ("old", "new")
    assert secret_values(s) == ["new", "oldpw"]


def test_password_file_is_read_without_its_newline_and_its_path_is_shown(tmp_path):
    secret = write(tmp_path, "redis_pw", "from-a-file\n")
    config = write(
        tmp_path,
        "omnipulse.toml",
        f'[redis]\nurl = "redis://cache:6379/0"\npassword_file = "{secret}"\n',
    )
    s = load_settings(config, env={})
    assert s.redis.password == "from-a-file"
    assert parse_url(s.redis.connection_url())["password"] == "from-a-file"
    assert s.masked()["redis"]["password_file"] == str(secret)
    assert "from-a-file" not in shown(s)


def test_environment_wins_over_the_file_pair(tmp_path):
    secret = write(tmp_path, "redis_pw", "file-pw")
    config = write(tmp_path, "omnipulse.toml", f'[redis]\npassword_file = "{secret}"\n')
    s = load_settings(config, env={"REDIS_PASSWORD": "env-pw"})
    assert (s.redis.password, s.redis.password_file) == ("env-pw", None)
    other = write(tmp_path, "other_pw", "other-file-pw\n")
    config = write(tmp_path, "omnipulse.toml", '[redis]\npassword = "in-toml"\n')
    s = load_settings(config, env={"REDIS_PASSWORD_FILE": str(other)})
    assert s.redis.password == "other-file-pw"


def test_password_and_password_file_together_is_an_error(tmp_path):
    secret = write(tmp_path, "redis_pw", "x")
    config = write(
        tmp_path, "omnipulse.toml", f'[redis]\npassword = "y"\npassword_file = "{secret}"\n'
    )
    with pytest.raises(ConfigError, match=r"redis\.password_file: give either"):
        load_settings(config, env={})


@pytest.mark.parametrize(
    ("content", "message"),
    [(None, "not found"), ("", "is empty"), ("\n", "is empty")],
)
def test_bad_secret_file_names_key_and_path_not_content(tmp_path, content, message):
    path = tmp_path / "secret"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ConfigError, match=message) as err:
        load_settings(env={"REDIS_PASSWORD_FILE": str(path)})
    assert str(err.value).startswith("redis.password_file: secret file ")
    assert str(path) in str(err.value)


def test_kafka_properties_from_environment_and_files(tmp_path):
    pw = write(tmp_path, "kafka_pw", "sasl-secret\n")
    config = write(
        tmp_path,
        "omnipulse.toml",
        '[kafka.extra]\n"security.protocol" = "SASL_SSL"\n'
        f'[kafka.extra_files]\n"sasl.password" = "{pw}"\n',
    )
    s = load_settings(
        config,
        env={
            "OMNIPULSE_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
            "OMNIPULSE_KAFKA_SASL_USERNAME": "svc",
            "OMNIPULSE_KAFKA_SSL_CA_LOCATION": "/etc/ca.pem",
        },
    )
    assert dict(s.kafka.extra) == {
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "svc",
        "ssl.ca.location": "/etc/ca.pem",
        "sasl.password": "sasl-secret",
    }
    assert "sasl-secret" not in shown(s)
    assert s.masked()["kafka"]["extra"]["sasl.password"] == "***"
    assert s.masked()["kafka"]["extra_files"]["sasl.password"] == str(pw)
    assert sorted(secret_values(s)) == ["sasl-secret", "svc"]
    # the environment's `_FILE` form replaces a value given in the file
    env_pw = write(tmp_path, "env_pw", "env-secret")
    s = load_settings(
        write(tmp_path, "o2.toml", '[kafka.extra]\nsasl.password = "toml"\n'),
        env={"OMNIPULSE_KAFKA_SASL_PASSWORD_FILE": str(env_pw)},
    )
    assert s.kafka.extra["sasl.password"] == "env-secret"


def test_redis_tls_files_go_into_the_url_and_need_rediss(tmp_path):
    s = load_settings(
        write(
            tmp_path,
            "o.toml",
            '[redis]\nurl = "rediss://cache:6380/0"\ntls_ca_file = "/ca.pem"\n'
            'tls_cert_file = "/c.pem"\ntls_key_file = "/k.pem"\n',
        ),
        env={"REDIS_PASSWORD": "pw"},
    )
    kwargs = parse_url(s.redis.connection_url())
    assert kwargs["connection_class"].__name__ == "SSLConnection"
    assert (kwargs["ssl_ca_certs"], kwargs["ssl_certfile"], kwargs["ssl_keyfile"]) == (
        "/ca.pem",
        "/c.pem",
        "/k.pem",
    )
    with pytest.raises(ConfigError, match="need a rediss:// URL"):
        load_settings(
            write(tmp_path, "o.toml", '[redis]\nurl = "redis://c:1/0"\ntls_ca_file = "/ca"\n'),
            env={},
        )


def test_pseudonym_key_from_environment_or_file_and_required_when_on(tmp_path):
    on = write(tmp_path, "o.toml", "[privacy]\npseudonymize = true\n")
    with pytest.raises(ConfigError, match=r"privacy\.pseudonym_key: pseudonymize = true needs"):
        load_settings(on, env={})
    with pytest.raises(ConfigError, match="at least 16 bytes"):
        load_settings(on, env={"OMNIPULSE_PSEUDONYM_KEY": "short"})
    s = load_settings(on, env={"OMNIPULSE_PSEUDONYM_KEY": KEY})
    assert s.privacy.pseudonym_key == KEY
    assert KEY not in shown(s)
    key_file = write(tmp_path, "key", KEY + "\n")
    s = load_settings(on, env={"OMNIPULSE_PSEUDONYM_KEY_FILE": str(key_file)})
    assert s.privacy.pseudonym_key == KEY
    assert s.masked()["privacy"] == {
        "pseudonymize": True,
        "pseudonym_key": "***",
        "pseudonym_key_file": str(key_file),
    }


def test_a_secret_of_the_wrong_type_is_not_echoed(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_settings(write(tmp_path, "o.toml", "[redis]\npassword = 123456789\n"), env={})
    assert "123456789" not in str(err.value)
