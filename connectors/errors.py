"""Errors raised by the connectors package (Kafka, Redis, embedded services)."""

from common.errors import OmnipulseError


class ConnectorError(OmnipulseError):
    """Talking to an external system (broker, Redis) failed."""


class EmbeddedServiceError(ConnectorError):
    """An embedded broker or redis-server could not be found, started or reached.

    The message carries the tail of the service's log, since that is usually
    where the real cause (port in use, bad flag, crash) is written.
    """


class ReplayError(ConnectorError):
    """A replay file cannot be read as events: unknown format, unreadable file, or a line
    whose topic cannot be told. The message names the file and the line."""
