"""Typed, frozen settings loaded from one TOML file (``omnipulse.toml``).

Resolution: an explicit path, else the ``OMNIPULSE_CONFIG`` environment
variable, else the built-in defaults (no file needed). The packaged
``omnipulse/omnipulse.toml`` is the documented reference: it lists every key
with its default and a one-line comment.

Environment variables override the connection settings after the file is
read: ``KAFKA_BOOTSTRAP_SERVERS``, ``REDIS_URL``, ``OMNIPULSE_TOPIC_PREFIX``,
``OMNIPULSE_KEY_PREFIX``, and the engine's ``OMNIPULSE_HTTP_PORT``. An empty
variable counts as unset.

Value formats in the file:

- durations are strings: ``"90d"``, ``"1h"``, ``"30m"``, ``"15s"``,
  ``"500ms"``, or a sum of those (``"1h30m"``); see :func:`parse_duration`;
- money is a string or a number, kept as :class:`decimal.Decimal`
  (write ``"19.99"`` rather than ``19.99`` to avoid any float on the way);
- optional strings (``kafka.bootstrap_servers``, ``redis.url``,
  ``policy.quiet_hours``) are off when empty or absent.

Every invalid value or unknown key raises :class:`ConfigError` whose message
starts with the dotted key, e.g.
``segments.core_recency_days: expected a positive integer, got 'x'``.

Each section is also validated when built directly (``EngineSettings(...)``
or :func:`dataclasses.replace`), and accepts the file's spellings there too:
``replace(settings.engine, allowed_lateness="1m")`` works.
"""

# ruff: noqa: RUF009  (_opt() returns a dataclasses.field carrying the converter)

from __future__ import annotations

import difflib
import math
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from datetime import UTC, datetime, time, timedelta, tzinfo
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit, urlunsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from common.errors import ConfigError
from operators.clock import datetime_to_ms, ms_to_rfc3339
from operators.customer import TierRules
from operators.pseudonym import Pseudonymizer

__all__ = [
    "CONFIG_ENV",
    "DEFAULT_JOURNEY_STEPS",
    "DEFAULT_OFFERS",
    "DLQ_TOPIC",
    "ENV_OVERRIDES",
    "INPUT_TOPICS",
    "KAFKA_ENV_PREFIX",
    "MASK",
    "SECRET_FILES",
    "TRIGGER_TOPICS",
    "TRIGGER_TOPIC_NAMES",
    "AbandonedCartSettings",
    "ChurnSettings",
    "EngineSettings",
    "FrozenDict",
    "JourneySettings",
    "KafkaSettings",
    "PolicySettings",
    "PriceSettings",
    "PrivacySettings",
    "RedisSettings",
    "ReorderSettings",
    "SegmentSettings",
    "Settings",
    "TierSettings",
    "format_duration",
    "is_secret_key",
    "load_settings",
    "mask_url",
    "parse_duration",
    "read_secret_file",
    "secret_values",
    "settings_from_dict",
]


class FrozenDict(dict):  # type: ignore[type-arg]
    """A read-only dict: hashable, picklable, JSON-serialisable, equal to a dict."""

    __slots__ = ()

    def _read_only(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError(f"{type(self).__name__} is read-only")

    __setitem__ = __delitem__ = __ior__ = _read_only
    clear = pop = popitem = setdefault = update = _read_only

    def __hash__(self) -> int:  # type: ignore[override]
        return hash(frozenset(self.items()))

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (dict(self),))

    def __copy__(self) -> FrozenDict:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> FrozenDict:
        return self


# --------------------------------------------------------------------------
# Topic names (logical; KafkaSettings.topic() adds the configured prefix)
# --------------------------------------------------------------------------

#: Input topics, in the order of SPEC §2.
INPUT_TOPICS: tuple[str, ...] = ("clicks", "carts", "orders", "stock", "locations")

#: Trigger kind -> logical output topic.
TRIGGER_TOPICS: Mapping[str, str] = FrozenDict(
    {
        "abandoned_cart": "triggers.abandoned_cart",
        "reorder": "triggers.reorder",
        "allocation": "triggers.allocation",
        "bopis_suggestion": "triggers.allocation",
        "churn_risk": "triggers.churn_risk",
        "segment_change": "triggers.segment",
        "tier_change": "triggers.segment",
        "win_back": "triggers.segment",
        "vip_invitation": "triggers.segment",
        "journey_step": "triggers.journey",
        "price_alert": "triggers.price_alert",
    }
)

#: The distinct trigger topics, in first-seen order of TRIGGER_TOPICS.
TRIGGER_TOPIC_NAMES: tuple[str, ...] = tuple(dict.fromkeys(TRIGGER_TOPICS.values()))

#: Dead-letter topic for rejected input.
DLQ_TOPIC = "omnipulse.dlq"

#: Environment variable naming the config file.
CONFIG_ENV = "OMNIPULSE_CONFIG"

#: Environment variable -> (section, key) it overrides.
ENV_OVERRIDES: Mapping[str, tuple[str, str]] = FrozenDict(
    {
        "KAFKA_BOOTSTRAP_SERVERS": ("kafka", "bootstrap_servers"),
        "REDIS_URL": ("redis", "url"),
        "OMNIPULSE_TOPIC_PREFIX": ("kafka", "topic_prefix"),
        "OMNIPULSE_KEY_PREFIX": ("redis", "key_prefix"),
        "REDIS_USERNAME": ("redis", "username"),
        "REDIS_PASSWORD": ("redis", "password"),
        "REDIS_PASSWORD_FILE": ("redis", "password_file"),
        "OMNIPULSE_PSEUDONYM_KEY": ("privacy", "pseudonym_key"),
        "OMNIPULSE_PSEUDONYM_KEY_FILE": ("privacy", "pseudonym_key_file"),
        "OMNIPULSE_HTTP_PORT": ("engine", "http_port"),
    }
)

#: Environment overrides whose value is an integer.
_ENV_INTS = frozenset({"OMNIPULSE_HTTP_PORT"})

#: Secret setting -> the sibling naming a file that holds it. Setting one of a
#: pair from the environment clears the other, so the environment always wins.
SECRET_FILES: Mapping[tuple[str, str], str] = FrozenDict(
    {
        ("redis", "password"): "password_file",
        ("privacy", "pseudonym_key"): "pseudonym_key_file",
    }
)

#: ``OMNIPULSE_KAFKA_SASL_PASSWORD=x`` sets the librdkafka property
#: ``sasl.password``; with a ``_FILE`` suffix the variable names a file
#: holding the value (librdkafka property names have dots, never underscores).
KAFKA_ENV_PREFIX = "OMNIPULSE_KAFKA_"

#: What a masked secret is shown as.
MASK = "***"

#: Shortest pseudonym key accepted: a short key could be found by brute force.
MIN_KEY_BYTES = 16

# --------------------------------------------------------------------------
# Durations
# --------------------------------------------------------------------------

_DURATION_UNITS: dict[str, timedelta] = {
    "ms": timedelta(milliseconds=1),
    "s": timedelta(seconds=1),
    "m": timedelta(minutes=1),
    "h": timedelta(hours=1),
    "d": timedelta(days=1),
    "w": timedelta(weeks=1),
}
_DURATION_PART = re.compile(r"(\d+)(ms|s|m|h|d|w)")


def parse_duration(text: str) -> timedelta:
    """Parse ``"90d"``, ``"1h"``, ``"30m"``, ``"15s"``, ``"500ms"``, ``"2w"``.

    Parts may be summed without spaces (``"1h30m"``); ``"0"`` is zero.
    Amounts are non-negative integers. Raises :class:`ValueError` otherwise.
    """
    if not isinstance(text, str):
        raise ValueError(f"expected a duration string, got {text!r}")
    s = text.strip().lower()
    if s == "0":
        return timedelta(0)
    if not s:
        raise ValueError("empty duration")
    total = timedelta(0)
    pos = 0
    while pos < len(s):
        m = _DURATION_PART.match(s, pos)
        if m is None:
            raise ValueError(f"invalid duration {text!r} (use e.g. '90d', '1h30m', '500ms')")
        total += int(m.group(1)) * _DURATION_UNITS[m.group(2)]
        pos = m.end()
    return total


def format_duration(value: timedelta) -> str:
    """The inverse of :func:`parse_duration`: ``timedelta(hours=25)`` -> ``"1d1h"``."""
    ms, rest = divmod(value, timedelta(milliseconds=1))
    if ms < 0 or rest:
        raise ValueError(f"cannot format {value!r} as a duration")
    if ms == 0:
        return "0s"
    out = []
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        n, ms = divmod(ms, size)
        if n:
            out.append(f"{n}{unit}")
    if ms:
        out.append(f"{ms}ms")
    return "".join(out)


# --------------------------------------------------------------------------
# Secrets
# --------------------------------------------------------------------------

_SECRET_MARKERS = (
    "password",
    "secret",
    "token",
    "credential",
    "sasl.username",
    "sasl.oauthbearer.config",
    "sasl.kerberos.keytab",
    "ssl.key.pem",
    "private",
)


def is_secret_key(key: str) -> bool:
    """True for a config key whose value must never be shown (``sasl.password``...)."""
    k = key.lower()
    return any(marker in k for marker in _SECRET_MARKERS)


def mask_url(url: str | None) -> str | None:
    """Hide the password in ``redis://user:pass@host/0`` (and ``?password=``)."""
    if url is None:
        return None
    try:
        parts = urlsplit(url)
        netloc = parts.netloc
        if "@" in netloc:
            userinfo, host = netloc.rsplit("@", 1)
            if ":" in userinfo:
                user = userinfo.split(":", 1)[0]
                userinfo = f"{user}:{MASK}"
            elif userinfo:
                # redis://secret@host: a lone userinfo is taken as the password.
                userinfo = MASK
            netloc = f"{userinfo}@{host}"
        query = parts.query
        if query:
            pairs = parse_qsl(query, keep_blank_values=True)
            query = urlencode([(k, MASK if is_secret_key(k) else v) for k, v in pairs], safe="*")
        if netloc == parts.netloc and query == parts.query:
            return url
        return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
    except ValueError:
        return MASK


# --------------------------------------------------------------------------
# Converters: (value, dotted key) -> normalised value, or ConfigError
# --------------------------------------------------------------------------

Conv = Callable[[Any, str], Any]


def _fail(key: str, expected: str, value: Any) -> ConfigError:
    return ConfigError(f"{key}: expected {expected}, got {value!r}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _int(lo: int, hi: int | None = None, expected: str = "an integer") -> Conv:
    def conv(value: Any, key: str) -> int:
        if not _is_int(value) or value < lo or (hi is not None and value > hi):
            raise _fail(key, expected, value)
        return int(value)

    return conv


_pos_int = _int(1, expected="a positive integer")
_nonneg_int = _int(0, expected="a non-negative integer")
_pct_int = _int(0, 100, expected="an integer percentage from 0 to 100")
_port = _int(0, 65535, expected="a TCP port from 0 to 65535")


def _float(lo: float, hi: float | None, *, lo_open: bool = False, hi_open: bool = False) -> Conv:
    lo_s = "(" if lo_open else "["
    hi_s = ")" if hi_open else "]"
    expected = f"a number in {lo_s}{lo}, {hi if hi is not None else 'inf'}{hi_s}"

    def conv(value: Any, key: str) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _fail(key, expected, value)
        v = float(value)
        if math.isnan(v) or math.isinf(v):
            raise _fail(key, expected, value)
        if v < lo or (lo_open and v == lo):
            raise _fail(key, expected, value)
        if hi is not None and (v > hi or (hi_open and v == hi)):
            raise _fail(key, expected, value)
        return v

    return conv


def _decimal(*, positive: bool) -> Conv:
    expected = "a positive decimal" if positive else "a non-negative decimal"

    def conv(value: Any, key: str) -> Decimal:
        if isinstance(value, bool):
            raise _fail(key, expected, value)
        try:
            if isinstance(value, Decimal):
                d = value
            elif isinstance(value, int):
                d = Decimal(value)
            elif isinstance(value, float):
                d = Decimal(repr(value))  # shortest round-trip text, no binary drift
            elif isinstance(value, str):
                d = Decimal(value.strip())
            else:
                raise _fail(key, expected, value)
        except InvalidOperation:
            raise _fail(key, expected, value) from None
        if not d.is_finite() or d < 0 or (positive and d == 0):
            raise _fail(key, expected, value)
        return d

    return conv


_money = _decimal(positive=False)
_pos_decimal = _decimal(positive=True)


def _duration(*, allow_zero: bool) -> Conv:
    expected = (
        "a duration like '5m' or '0s'" if allow_zero else "a positive duration like '1h' or '90d'"
    )

    def conv(value: Any, key: str) -> timedelta:
        if isinstance(value, timedelta):
            td = value
        elif isinstance(value, str):
            try:
                td = parse_duration(value)
            except ValueError:
                raise _fail(key, expected, value) from None
        else:
            raise _fail(key, expected, value)
        if td < timedelta(0) or (not allow_zero and td == timedelta(0)):
            raise _fail(key, expected, value)
        return td

    return conv


_pos_duration = _duration(allow_zero=False)
_duration0 = _duration(allow_zero=True)


def _bool(value: Any, key: str) -> bool:
    if not isinstance(value, bool):
        raise _fail(key, "true or false", value)
    return value


def _nonempty_str(value: Any, key: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _fail(key, "a non-empty string", value)
    return value.strip()


_TOPIC_PREFIX = re.compile(r"[A-Za-z0-9._-]{0,200}")


def _topic_prefix(value: Any, key: str) -> str:
    if not isinstance(value, str) or not _TOPIC_PREFIX.fullmatch(value):
        raise _fail(key, "a topic prefix of letters, digits, '.', '_' or '-'", value)
    return value


def _key_prefix(value: Any, key: str) -> str:
    if not isinstance(value, str) or not value or any(c.isspace() for c in value):
        raise _fail(key, "a non-empty key prefix without whitespace", value)
    return value


def _bootstrap(value: Any, key: str) -> str | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    expected = "a comma-separated list of host:port"
    if not isinstance(value, str):
        raise _fail(key, expected, value)
    servers = [s.strip() for s in value.split(",")]
    if any(not s or any(c.isspace() for c in s) for s in servers):
        raise _fail(key, expected, value)
    return ",".join(servers)


_REDIS_SCHEMES = ("redis", "rediss", "unix")


def _redis_url(value: Any, key: str) -> str | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    expected = "a redis://, rediss:// or unix:// URL"
    if not isinstance(value, str):
        raise _fail(key, expected, value)
    v = value.strip()
    try:
        parts = urlsplit(v)
    except ValueError:
        raise ConfigError(f"{key}: expected {expected}, got {mask_url(v)!r}") from None
    if parts.scheme not in _REDIS_SCHEMES or not (parts.netloc or parts.path):
        # Never echo the raw value: it may carry a password.
        raise ConfigError(f"{key}: expected {expected}, got {mask_url(v)!r}")
    return v


def _timezone(value: Any, key: str) -> str:
    if not isinstance(value, str) or not value:
        raise _fail(key, "an IANA time zone name such as 'UTC' or 'Asia/Shanghai'", value)
    if value != "UTC":
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise _fail(
                key, "an IANA time zone name such as 'UTC' or 'Asia/Shanghai'", value
            ) from None
    return value


def _epoch_ms(value: Any, key: str) -> int:
    """RFC 3339 string with offset, TOML offset datetime, or epoch milliseconds."""
    expected = "an RFC 3339 timestamp with offset or epoch milliseconds"
    if _is_int(value):
        return int(value)
    if isinstance(value, str):
        text = value.strip()
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        try:
            value_dt = datetime.fromisoformat(text)
        except ValueError:
            raise _fail(key, expected, value) from None
    elif isinstance(value, datetime):
        value_dt = value
    else:
        raise _fail(key, expected, value)
    if value_dt.tzinfo is None:
        raise _fail(key, expected, value)
    return datetime_to_ms(value_dt)


def _ms_to_rfc3339(ms: int) -> str:
    # whole seconds read better in `config show`: 2000-01-01T00:00:00Z
    return ms_to_rfc3339(ms).replace(".000Z", "Z")


_HHMM = re.compile(r"([01]\d|2[0-3]):([0-5]\d)")


def _parse_quiet_hours(text: str) -> tuple[time, time] | None:
    parts = [p.strip() for p in text.split("-")]
    if len(parts) != 2:
        return None
    ms = [_HHMM.fullmatch(p) for p in parts]
    if ms[0] is None or ms[1] is None:
        return None
    start = time(int(ms[0].group(1)), int(ms[0].group(2)))
    end = time(int(ms[1].group(1)), int(ms[1].group(2)))
    return None if start == end else (start, end)


def _quiet_hours(value: Any, key: str) -> str | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if not isinstance(value, str) or _parse_quiet_hours(value) is None:
        raise _fail(key, "'HH:MM-HH:MM' with different start and end, or empty", value)
    return value.strip()


def _flatten(table: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in table.items():
        name = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(_flatten(v, name + "."))
        else:
            out[name] = v
    return out


def _kafka_extra(value: Any, key: str) -> Mapping[str, str]:
    """librdkafka properties; nested TOML tables are joined with dots."""
    if not isinstance(value, Mapping):
        raise _fail(key, "a table of librdkafka properties", value)
    out: dict[str, str] = {}
    for k, v in _flatten(value).items():
        if isinstance(v, bool):
            out[k] = "true" if v else "false"
        elif isinstance(v, str | int | float):
            out[k] = str(v)
        else:
            shown = MASK if is_secret_key(k) else v
            raise _fail(f"{key}.{k}", "a string, number or boolean", shown)
    return FrozenDict(out)


DEFAULT_OFFERS: Mapping[str, str] = FrozenDict(
    {
        "core": "exclusive benefits + 1:1 advisor",
        "potential": "scenario recommendation + repurchase incentive",
        "sleeping": "wake-up coupon",
        "core_potential": "VIP pre-order access",
    }
)


def _offers(value: Any, key: str) -> Mapping[str, str]:
    """Offer text per segment; keys given override the defaults, the rest stay."""
    if not isinstance(value, Mapping):
        raise _fail(key, "a table of segment = offer text", value)
    out = dict(DEFAULT_OFFERS)
    for k, v in value.items():
        if k not in DEFAULT_OFFERS:
            raise _unknown(f"{key}.{k}", DEFAULT_OFFERS)
        out[k] = _nonempty_str(v, f"{key}.{k}")
    return FrozenDict(out)


DEFAULT_JOURNEY_STEPS: Mapping[str, timedelta] = FrozenDict(
    {
        "tips_24h": timedelta(hours=24),
        "recommend_3d": timedelta(days=3),
        "coupon_7d": timedelta(days=7),
    }
)
_STEP_NAME = re.compile(r"[a-z][a-z0-9_]{0,63}")


def _journey_steps(value: Any, key: str) -> Mapping[str, timedelta]:
    """Step name -> delay after the first order; the table replaces the default."""
    if not isinstance(value, Mapping):
        raise _fail(key, "a table of step name = delay", value)
    out: dict[str, timedelta] = {}
    for k, v in value.items():
        if not isinstance(k, str) or not _STEP_NAME.fullmatch(k):
            raise _fail(f"{key}.{k}", "a lowercase identifier as step name", k)
        out[k] = _pos_duration(v, f"{key}.{k}")
    return FrozenDict(dict(sorted(out.items(), key=lambda kv: kv[1])))


def _opt_path(value: Any, key: str) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise _fail(key, "a file path", value)
    return value


def _opt_str(value: Any, key: str) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str) or any(c.isspace() for c in value):
        raise _fail(key, "a string without whitespace", value)
    return value


def _opt_secret(value: Any, key: str) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        # Never echo it: it is a secret, even when it is of the wrong type.
        raise ConfigError(f"{key}: expected a string")
    return value


def _mask_secret(value: str | None) -> str | None:
    return None if value is None else MASK


def _kafka_extra_files(value: Any, key: str) -> Mapping[str, str]:
    """librdkafka property -> a file holding its value (read when settings are loaded)."""
    if not isinstance(value, Mapping):
        raise _fail(key, "a table of librdkafka property = file path", value)
    out: dict[str, str] = {}
    for k, v in _flatten(value).items():
        if not isinstance(v, str) or not v:
            raise _fail(f"{key}.{k}", "a file path", v)
        out[k] = v
    return FrozenDict(out)


def _unknown(key: str, known: Any, what: str = "key") -> ConfigError:
    name = key.rsplit(".", 1)[-1]
    close = difflib.get_close_matches(name, sorted(known), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return ConfigError(f"{key}: unknown {what}{hint}")


# --------------------------------------------------------------------------
# Sections
# --------------------------------------------------------------------------


def _opt(default: Any, conv: Conv, *, secret: Callable[[Any], Any] | None = None) -> Any:
    meta = {"conv": conv, "mask": secret}
    if isinstance(default, Mapping):
        frozen = FrozenDict(dict(default))
        return field(default_factory=lambda: frozen, metadata=meta)
    return field(default=default, metadata=meta)


def _dump(value: Any) -> Any:
    """A value as the TOML file would spell it (JSON-able)."""
    if isinstance(value, timedelta):
        return format_duration(value)
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, Mapping):
        return {k: _dump(v) for k, v in value.items()}
    return value


def _mask_extra(extra: Mapping[str, str]) -> dict[str, str]:
    return {k: (MASK if is_secret_key(k) else v) for k, v in extra.items()}


class _Section:
    """Shared behaviour: normalise + validate fields, masked repr and dump."""

    __slots__ = ()
    SECTION: ClassVar[str] = ""

    def __post_init__(self) -> None:
        for f in fields(self):  # type: ignore[arg-type]
            conv = f.metadata.get("conv")
            if conv is not None:
                value = conv(getattr(self, f.name), f"{self.SECTION}.{f.name}")
                object.__setattr__(self, f.name, value)
        self._check()

    def _check(self) -> None:
        """Cross-field rules; override in sections that have them."""

    def _dumped(self, *, masked: bool) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            mask = f.metadata.get("mask")
            if masked and mask is not None:
                value = mask(value)
            dump = f.metadata.get("dump")
            out[f.name] = dump(value) if dump is not None else _dump(value)
        return out

    def __repr__(self) -> str:
        shown = []
        for f in fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            mask = f.metadata.get("mask")
            if mask is not None:
                value = mask(value)
            elif isinstance(value, FrozenDict):
                value = dict(value)
            shown.append(f"{f.name}={value!r}")
        return f"{type(self).__name__}({', '.join(shown)})"


@dataclass(frozen=True, slots=True, repr=False)
class KafkaSettings(_Section):
    """Kafka connection and topic layout."""

    SECTION: ClassVar[str] = "kafka"

    bootstrap_servers: str | None = _opt(None, _bootstrap)
    topic_prefix: str = _opt("", _topic_prefix)
    consumer_group: str = _opt("omnipulse", _nonempty_str)
    partitions: int = _opt(4, _pos_int)
    replication_factor: int = _opt(1, _pos_int)
    extra: Mapping[str, str] = _opt({}, _kafka_extra, secret=_mask_extra)
    extra_files: Mapping[str, str] = _opt({}, _kafka_extra_files)

    def topic(self, name: str) -> str:
        """The physical topic name: prefix + logical name."""
        return f"{self.topic_prefix}{name}"

    def trigger_topic(self, kind: str) -> str:
        """The physical topic a trigger kind is emitted to (KeyError if unknown)."""
        return self.topic(TRIGGER_TOPICS[kind])

    @property
    def dlq_topic(self) -> str:
        return self.topic(DLQ_TOPIC)

    def input_topics(self) -> tuple[str, ...]:
        return tuple(self.topic(t) for t in INPUT_TOPICS)

    def all_topics(self) -> tuple[str, ...]:
        """Every topic the engine reads or writes: inputs, triggers, DLQ."""
        return tuple(self.topic(t) for t in (*INPUT_TOPICS, *TRIGGER_TOPIC_NAMES, DLQ_TOPIC))

    def client_config(self) -> dict[str, str]:
        """librdkafka base config: bootstrap servers (if set) + extra. Contains secrets."""
        conf = dict(self.extra)
        if self.bootstrap_servers is not None:
            conf["bootstrap.servers"] = self.bootstrap_servers
        return conf


@dataclass(frozen=True, slots=True, repr=False)
class RedisSettings(_Section):
    """Redis connection and key namespace."""

    SECTION: ClassVar[str] = "redis"

    url: str | None = _opt(None, _redis_url, secret=mask_url)
    key_prefix: str = _opt("op", _key_prefix)
    username: str | None = _opt(None, _opt_str)
    password: str | None = _opt(None, _opt_secret, secret=_mask_secret)
    password_file: str | None = _opt(None, _opt_path)
    tls_ca_file: str | None = _opt(None, _opt_path)
    tls_cert_file: str | None = _opt(None, _opt_path)
    tls_key_file: str | None = _opt(None, _opt_path)

    def _check(self) -> None:
        tls = (self.tls_ca_file, self.tls_cert_file, self.tls_key_file)
        if self.url and any(tls) and not self.url.startswith("rediss://"):
            raise ConfigError(
                f"redis.tls_ca_file: TLS files need a rediss:// URL, got {mask_url(self.url)!r}"
            )
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ConfigError("redis.tls_cert_file: give tls_cert_file and tls_key_file together")

    def connection_url(self) -> str | None:
        """``url`` with the username, password and TLS files folded in. Contains secrets.

        The password and username given as settings win over those in the URL.
        """
        if self.url is None:
            return None
        parts = urlsplit(self.url)
        netloc = parts.netloc
        if self.username is not None or self.password is not None:
            host = netloc.rsplit("@", 1)[-1]
            user = parts.username or "" if self.username is None else quote(self.username, safe="")
            if self.password is not None:
                netloc = f"{user}:{quote(self.password, safe='')}@{host}"
            else:
                netloc = f"{user}@{host}"
        pairs = parse_qsl(parts.query, keep_blank_values=True)
        for name, value in (
            ("ssl_ca_certs", self.tls_ca_file),
            ("ssl_certfile", self.tls_cert_file),
            ("ssl_keyfile", self.tls_key_file),
        ):
            if value is not None:
                pairs = [(k, v) for k, v in pairs if k != name] + [(name, value)]
        return urlunsplit((parts.scheme, netloc, parts.path, urlencode(pairs), parts.fragment))


@dataclass(frozen=True, slots=True, repr=False)
class EngineSettings(_Section):
    """Event time, input hygiene and the runtime."""

    SECTION: ClassVar[str] = "engine"

    allowed_lateness: timedelta = _opt(timedelta(minutes=5), _duration0)
    idle_advance: bool = _opt(True, _bool)
    batch_size: int = _opt(1000, _pos_int)
    ordered_input: bool = _opt(False, _bool)
    max_future: timedelta = _opt(timedelta(days=1), _pos_duration)
    min_event_time: int = field(  # epoch ms; the file spells it as RFC 3339
        default="2000-01-01T00:00:00Z",  # type: ignore[assignment]
        metadata={"conv": _epoch_ms, "mask": None, "dump": _ms_to_rfc3339},
    )
    dedup_ttl: timedelta = _opt(timedelta(days=7), _pos_duration)
    max_value_bytes: int = _opt(262144, _pos_int)
    timezone: str = _opt("UTC", _timezone)
    http_port: int = _opt(9108, _port)
    ready_max_lag: int = _opt(10000, _nonneg_int)
    timer_shards: int = _opt(16, _pos_int)

    def tz(self) -> tzinfo:
        """The configured calendar time zone."""
        return UTC if self.timezone == "UTC" else ZoneInfo(self.timezone)


@dataclass(frozen=True, slots=True, repr=False)
class SegmentSettings(_Section):
    """RFM segment thresholds (SPEC §5.2)."""

    SECTION: ClassVar[str] = "segments"

    core_recency_days: int = _opt(7, _pos_int)
    core_min_frequency: int = _opt(5, _pos_int)
    core_top_share: float = _opt(0.20, _float(0.0, 1.0, lo_open=True))
    new_recency_days: int = _opt(7, _pos_int)
    new_max_frequency: int = _opt(1, _nonneg_int)
    potential_recency_days: int = _opt(15, _pos_int)
    potential_min_frequency: int = _opt(1, _pos_int)
    potential_max_frequency: int = _opt(2, _pos_int)
    potential_low_pct: float = _opt(0.25, _float(0.0, 1.0))
    potential_high_pct: float = _opt(0.75, _float(0.0, 1.0))
    sleeping_recency_days: int = _opt(90, _pos_int)
    sleeping_min_frequency: int = _opt(1, _pos_int)
    premium_streak_days: int = _opt(3, _pos_int)
    offers: Mapping[str, str] = _opt(DEFAULT_OFFERS, _offers)

    def _check(self) -> None:
        if self.potential_low_pct >= self.potential_high_pct:
            raise ConfigError(
                "segments.potential_low_pct: must be below potential_high_pct "
                f"({self.potential_low_pct} >= {self.potential_high_pct})"
            )
        if self.potential_min_frequency > self.potential_max_frequency:
            raise ConfigError(
                "segments.potential_min_frequency: must not exceed potential_max_frequency "
                f"({self.potential_min_frequency} > {self.potential_max_frequency})"
            )


@dataclass(frozen=True, slots=True, repr=False)
class TierSettings(_Section):
    """Membership tiers by rolling spend (SPEC §5.3)."""

    SECTION: ClassVar[str] = "tiers"

    gold_spend: Decimal = _opt(Decimal("5000"), _pos_decimal)
    platinum_spend: Decimal = _opt(Decimal("20000"), _pos_decimal)
    window_days: int = _opt(365, _pos_int)

    def rules(self) -> TierRules:
        """The tiers as the operators apply them, in cents."""
        return TierRules(
            gold_spend_cents=int(self.gold_spend * 100),
            platinum_spend_cents=int(self.platinum_spend * 100),
            window_days=self.window_days,
        )

    def _check(self) -> None:
        if self.gold_spend >= self.platinum_spend:
            raise ConfigError(
                "tiers.gold_spend: must be below platinum_spend "
                f"({self.gold_spend} >= {self.platinum_spend})"
            )


@dataclass(frozen=True, slots=True, repr=False)
class AbandonedCartSettings(_Section):
    """Abandoned-cart trigger (SPEC §5.5)."""

    SECTION: ClassVar[str] = "abandoned_cart"

    abandoned_after: timedelta = _opt(timedelta(hours=1), _pos_duration)
    discount_pct: int = _opt(10, _pct_int)
    core_discount_pct: int = _opt(15, _pct_int)
    low_stock_hint: int = _opt(5, _nonneg_int)
    cooldown: timedelta = _opt(timedelta(hours=24), _duration0)


@dataclass(frozen=True, slots=True, repr=False)
class JourneySettings(_Section):
    """New-customer journey (SPEC §5.4): step name -> delay after the first order."""

    SECTION: ClassVar[str] = "journey"

    steps: Mapping[str, timedelta] = _opt(DEFAULT_JOURNEY_STEPS, _journey_steps)


@dataclass(frozen=True, slots=True, repr=False)
class ReorderSettings(_Section):
    """Low-stock reorder and allocatable stock (SPEC §5.6, §5.7)."""

    SECTION: ClassVar[str] = "reorder"

    service_level: float = _opt(0.95, _float(0.0, 1.0, lo_open=True, hi_open=True))
    default_lead_time_days: int = _opt(7, _pos_int)
    ewma_alpha: float = _opt(0.2, _float(0.0, 1.0, lo_open=True))
    safety_stock: int = _opt(0, _nonneg_int)
    min_history_days: int = _opt(7, _pos_int)
    cover_days: int = _opt(14, _nonneg_int)


@dataclass(frozen=True, slots=True, repr=False)
class AllocationSettings(_Section):
    """Order allocation and the location reference data (SPEC §5.7)."""

    SECTION: ClassVar[str] = "allocation"

    ship_from_stores: bool = _opt(True, _bool)
    locations_file: str | None = _opt(None, _opt_path)
    plan_retention: timedelta = _opt(timedelta(days=30), _pos_duration)


@dataclass(frozen=True, slots=True, repr=False)
class ChurnSettings(_Section):
    """Churn heuristic and online model (SPEC §5.8)."""

    SECTION: ClassVar[str] = "churn"

    horizon: timedelta = _opt(timedelta(days=90), _pos_duration)
    threshold: float = _opt(0.7, _float(0.0, 1.0))
    interval_increase: float = _opt(0.30, _float(0.0, None))
    activity_drop: float = _opt(0.50, _float(0.0, 1.0, lo_open=True))
    activity_window: timedelta = _opt(timedelta(days=30), _pos_duration)


@dataclass(frozen=True, slots=True, repr=False)
class PriceSettings(_Section):
    """Channel price control (SPEC §5.9)."""

    SECTION: ClassVar[str] = "price"

    max_deviation_pct: Decimal = _opt(Decimal("5"), _pos_decimal)


@dataclass(frozen=True, slots=True, repr=False)
class PolicySettings(_Section):
    """Trigger policy: caps, quiet hours, holdout (SPEC §5.10)."""

    SECTION: ClassVar[str] = "policy"

    max_per_day: int = _opt(3, _pos_int)
    quiet_hours: str | None = _opt(None, _quiet_hours)
    holdout_share: float = _opt(0.05, _float(0.0, 1.0, hi_open=True))
    uplift_window: timedelta = _opt(timedelta(days=7), _pos_duration)

    def quiet_window(self) -> tuple[time, time] | None:
        """(start, end) local times; start > end means the window spans midnight."""
        return None if self.quiet_hours is None else _parse_quiet_hours(self.quiet_hours)


@dataclass(frozen=True, slots=True, repr=False)
class SalesSettings(_Section):
    """Per-channel hourly sales figures (`omnipulse report`)."""

    SECTION: ClassVar[str] = "sales"

    retention: timedelta = _opt(timedelta(days=35), _pos_duration)
    session_memory: timedelta = _opt(timedelta(hours=6), _pos_duration)


@dataclass(frozen=True, slots=True, repr=False)
class PrivacySettings(_Section):
    """Pseudonymous customer ids: a keyed hash replaces them before Redis and triggers."""

    SECTION: ClassVar[str] = "privacy"

    pseudonymize: bool = _opt(False, _bool)
    pseudonym_key: str | None = _opt(None, _opt_secret, secret=_mask_secret)
    pseudonym_key_file: str | None = _opt(None, _opt_path)

    def pseudonymizer(self) -> Pseudonymizer | None:
        """The id mapper when pseudonymisation is on, else None."""
        if not self.pseudonymize:
            return None
        if self.pseudonym_key is None:
            raise ConfigError("privacy.pseudonym_key: pseudonymize = true needs a key")
        return Pseudonymizer(self.pseudonym_key)


_SECTIONS: dict[str, type[_Section]] = {
    cls.SECTION: cls
    for cls in (
        KafkaSettings,
        RedisSettings,
        EngineSettings,
        SegmentSettings,
        TierSettings,
        AbandonedCartSettings,
        JourneySettings,
        ReorderSettings,
        AllocationSettings,
        ChurnSettings,
        PriceSettings,
        PolicySettings,
        SalesSettings,
        PrivacySettings,
    )
}


@dataclass(frozen=True, slots=True)
class Settings:
    """All of omnipulse's configuration. Build with :func:`load_settings`."""

    kafka: KafkaSettings = field(default_factory=KafkaSettings)
    redis: RedisSettings = field(default_factory=RedisSettings)
    engine: EngineSettings = field(default_factory=EngineSettings)
    segments: SegmentSettings = field(default_factory=SegmentSettings)
    tiers: TierSettings = field(default_factory=TierSettings)
    abandoned_cart: AbandonedCartSettings = field(default_factory=AbandonedCartSettings)
    journey: JourneySettings = field(default_factory=JourneySettings)
    reorder: ReorderSettings = field(default_factory=ReorderSettings)
    allocation: AllocationSettings = field(default_factory=AllocationSettings)
    churn: ChurnSettings = field(default_factory=ChurnSettings)
    price: PriceSettings = field(default_factory=PriceSettings)
    policy: PolicySettings = field(default_factory=PolicySettings)
    sales: SalesSettings = field(default_factory=SalesSettings)
    privacy: PrivacySettings = field(default_factory=PrivacySettings)
    #: The file these settings were read from (None: built-in defaults only).
    source: Path | None = field(default=None, compare=False, repr=False)

    def masked(self) -> dict[str, Any]:
        """JSON-able dict in the file's spelling, secrets replaced by ``***``."""
        return {name: getattr(self, name)._dumped(masked=True) for name in _SECTIONS}

    def as_dict(self) -> dict[str, Any]:
        """Like :meth:`masked` but with secrets in clear. Do not log it."""
        return {name: getattr(self, name)._dumped(masked=False) for name in _SECTIONS}


# --------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------


def settings_from_dict(data: Mapping[str, Any], *, source: Path | None = None) -> Settings:
    """Build settings from a parsed TOML document (sections of key = value)."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"<root>: expected a table, got {data!r}")
    sections: dict[str, _Section] = {}
    for name, table in data.items():
        cls = _SECTIONS.get(name)
        if cls is None:
            raise _unknown(name, _SECTIONS, "section")
        if not isinstance(table, Mapping):
            raise ConfigError(f"{name}: expected a table, got {table!r}")
        known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
        for key in table:
            if key not in known:
                raise _unknown(f"{name}.{key}", known)
        sections[name] = cls(**table)
    return Settings(**sections, source=source)  # type: ignore[arg-type]


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a directory, expected a TOML file") from None
    except PermissionError:
        raise ConfigError(f"{path}: permission denied") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text") from None


def _apply_env(settings: Settings, env: Mapping[str, str]) -> Settings:
    siblings = {(sec, f): (sec, k) for (sec, k), f in SECRET_FILES.items()}
    siblings.update({(sec, k): (sec, f) for (sec, k), f in SECRET_FILES.items()})
    for var, (section, key) in ENV_OVERRIDES.items():
        value = env.get(var)
        if value is None or value == "":
            continue
        change: dict[str, Any] = {key: value}
        if var in _ENV_INTS and value.strip().isdigit():
            change[key] = int(value)
        other = siblings.get((section, key))
        if other is not None:
            change[other[1]] = None
        settings = _replace_from_env(settings, section, change, var)
    extra = dict(settings.kafka.extra)
    files = dict(settings.kafka.extra_files)
    for var, value in sorted(env.items()):
        if not var.startswith(KAFKA_ENV_PREFIX) or value == "":
            continue
        name = var[len(KAFKA_ENV_PREFIX) :]
        is_file = name.endswith("_FILE")
        prop = (name[: -len("_FILE")] if is_file else name).lower().replace("_", ".")
        if not prop:
            continue
        if is_file:
            files[prop] = value
            extra.pop(prop, None)
        else:
            extra[prop] = value
            files.pop(prop, None)
    if extra != settings.kafka.extra or files != settings.kafka.extra_files:
        settings = _replace_from_env(
            settings, "kafka", {"extra": extra, "extra_files": files}, f"{KAFKA_ENV_PREFIX}*"
        )
    return settings


def _replace_from_env(
    settings: Settings, section: str, change: dict[str, Any], var: str
) -> Settings:
    try:
        updated = replace(getattr(settings, section), **change)
    except ConfigError as exc:
        raise ConfigError(f"{exc} (from environment variable {var})") from None
    return replace(settings, **{section: updated})


def read_secret_file(path: str, key: str) -> str:
    """The secret held in a file (Docker/Kubernetes secret style): its text
    without the trailing newline. Errors name the key and the path, never content."""
    try:
        text = Path(path).expanduser().read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{key}: secret file {path} not found") from None
    except PermissionError:
        raise ConfigError(f"{key}: secret file {path}: permission denied") from None
    except IsADirectoryError:
        raise ConfigError(f"{key}: secret file {path} is a directory") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{key}: secret file {path} is not UTF-8 text") from None
    value = text.rstrip("\r\n")
    if not value:
        raise ConfigError(f"{key}: secret file {path} is empty")
    return value


def _resolve_secret_files(settings: Settings) -> Settings:
    """Read every ``*_file`` secret into its setting; the path stays for `config show`."""
    for (section, key), file_key in SECRET_FILES.items():
        current = getattr(settings, section)
        path = getattr(current, file_key)
        if path is None:
            continue
        if getattr(current, key) is not None:
            raise ConfigError(f"{section}.{file_key}: give either {key} or {file_key}, not both")
        value = read_secret_file(path, f"{section}.{file_key}")
        settings = replace(settings, **{section: replace(current, **{key: value})})
    k = settings.kafka
    if k.extra_files:
        extra = dict(k.extra)
        for prop, path in k.extra_files.items():
            if prop in k.extra:
                raise ConfigError(
                    f"kafka.extra_files.{prop}: also set in kafka.extra; give one of them"
                )
            extra[prop] = read_secret_file(path, f"kafka.extra_files.{prop}")
        settings = replace(settings, kafka=replace(k, extra=extra))
    p = settings.privacy
    if p.pseudonymize and p.pseudonym_key is None:
        raise ConfigError(
            "privacy.pseudonym_key: pseudonymize = true needs a key "
            "(OMNIPULSE_PSEUDONYM_KEY or OMNIPULSE_PSEUDONYM_KEY_FILE, or pseudonym_key_file)"
        )
    if p.pseudonym_key is not None and len(p.pseudonym_key.encode()) < MIN_KEY_BYTES:
        raise ConfigError(
            f"privacy.pseudonym_key: must be at least {MIN_KEY_BYTES} bytes "
            "(e.g. the output of `openssl rand -hex 32`)"
        )
    return settings


def secret_values(settings: Settings) -> list[str]:
    """Every secret the settings hold, for the log filter that redacts them."""
    out = [settings.redis.password, settings.privacy.pseudonym_key]
    out.extend(v for k, v in settings.kafka.extra.items() if is_secret_key(k))
    url = settings.redis.url
    if url:
        password = urlsplit(url).password
        out.append(unquote(password) if password else None)
    return [v for v in out if v]


def load_settings(path: str | Path | None = None, env: Mapping[str, str] | None = None) -> Settings:
    """Load settings: explicit ``path``, else ``$OMNIPULSE_CONFIG``, else defaults.

    ``env`` defaults to :data:`os.environ`; connection variables in it override
    the file (see :data:`ENV_OVERRIDES`).
    """
    if env is None:
        env = os.environ
    if path is None or path == "":
        path = env.get(CONFIG_ENV) or None
    if path is None:
        settings = Settings()
    else:
        p = Path(path).expanduser()
        settings = settings_from_dict(_read_toml(p), source=p)
    return _resolve_secret_files(_apply_env(settings, env))
