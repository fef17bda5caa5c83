"""A bounded first contact with the brokers.

librdkafka retries a failing connection for ever: a wrong `security.protocol`,
SASL mechanism or password would leave the engine waiting silently. This check
asks for the cluster metadata with a deadline and, when it does not come,
raises one `ConnectorError` line carrying the first error librdkafka reported
(for example "SASL authentication error ... invalid credentials").
"""

from __future__ import annotations

import logging
from typing import Any

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, ClusterMetadata

from connectors.errors import ConnectorError

CHECK_TIMEOUT_S = 10.0

_HINT = (
    "check KAFKA_BOOTSTRAP_SERVERS and the security settings in kafka.extra "
    "(security.protocol, sasl.*, ssl.*)"
)


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def check_kafka(config: dict[str, Any], *, timeout: float = CHECK_TIMEOUT_S) -> ClusterMetadata:
    """The cluster's metadata within `timeout` seconds, else a one-line ConnectorError.

    `config` is a librdkafka client config with `bootstrap.servers` and the
    security properties; only client-wide properties are passed on.
    """
    errors: list[str] = []
    # The probe's own librdkafka log: kept for the error message instead of
    # being printed to stderr line by line while it retries.
    probe_log = logging.getLogger("omnipulse.kafka_check")
    collect = _Collect()
    probe_log.addHandler(collect)
    probe_log.propagate = False
    conf = {k: v for k, v in config.items() if k in _ADMIN_SAFE or k.startswith(_CLIENT_PREFIXES)}
    conf.update(
        {
            "error_cb": lambda err: errors.append(err.str()),
            "logger": probe_log,
        }
    )
    try:
        admin = AdminClient(conf)
        try:
            return admin.list_topics(timeout=timeout)
        except KafkaException as ex:
            admin.poll(0)  # serve error_cb: the reason behind the timeout
            reasons = [e for e in errors if "brokers are down" not in e] or collect.lines
            why = reasons[0] if reasons else str(ex.args[0].str() if ex.args else ex)
            servers = config.get("bootstrap.servers", "?")
            raise ConnectorError(
                f"kafka: no answer from {servers} within {timeout:g} s ({_one_line(why)}): {_HINT}"
            ) from ex
    except KafkaException as ex:  # a property librdkafka rejects
        raise ConnectorError(f"kafka: invalid client configuration: {_one_line(str(ex))}") from ex
    finally:
        probe_log.removeHandler(collect)


def _one_line(text: str) -> str:
    return " ".join(text.split())[:400]


# Client-wide properties (connection and security); consumer or producer
# properties would make the admin client warn or fail.
_ADMIN_SAFE = frozenset(
    {"bootstrap.servers", "security.protocol", "client.id", "client.dns.lookup"}
)
_CLIENT_PREFIXES = ("sasl.", "ssl.", "socket.", "broker.", "enable.ssl.", "reconnect.")
