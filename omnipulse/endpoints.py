"""Where the engine's Kafka and Redis are: configured, or the embedded pair.

Kept apart from `omnipulse.runner` so that the read-only commands
(`omnipulse profile` above all, which a customer view calls per lookup) find
their services without importing Bytewax, the Kafka client and the dataflow.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import orjson

from common.settings import Settings, mask_url
from connectors.errors import ConnectorError

log = logging.getLogger(__name__)

EMBEDDED_FILE = Path(".omnipulse") / "embedded.json"


@dataclass(frozen=True, slots=True)
class Endpoints:
    bootstrap: str
    redis_url: str


@contextmanager
def endpoints(settings: Settings, *, start_embedded: bool) -> Iterator[Endpoints]:
    """The configured Kafka and Redis; else the running embedded pair; else start one.

    The embedded pair's addresses are written to .omnipulse/embedded.json so
    that `omnipulse profile` in another terminal finds the demo's services.
    """
    bootstrap, url = settings.kafka.bootstrap_servers, settings.redis.connection_url()
    if bootstrap and url:
        yield Endpoints(bootstrap, url)
        return
    if not start_embedded and EMBEDDED_FILE.exists():
        known = orjson.loads(EMBEDDED_FILE.read_bytes())
        found_bootstrap, found_url = bootstrap or known["bootstrap"], url or known["redis_url"]
        if found_bootstrap and found_url:
            yield Endpoints(found_bootstrap, found_url)
            return
    if not start_embedded:
        raise ConnectorError(
            "no Kafka/Redis given (KAFKA_BOOTSTRAP_SERVERS, REDIS_URL) and no embedded "
            "services running: start them with `omnipulse run` or `make demo`"
        )
    # Only a command that starts services needs their launcher (and its
    # subprocess, socket and tempfile machinery).
    from connectors.embedded import EmbeddedBroker, EmbeddedRedis

    broker = EmbeddedBroker() if not bootstrap else None
    rds = EmbeddedRedis() if not url else None
    try:
        if broker:
            broker.start()
        if rds:
            rds.start()
        ep = Endpoints(bootstrap or broker.bootstrap_servers, url or rds.url)  # type: ignore[union-attr]
        EMBEDDED_FILE.parent.mkdir(exist_ok=True)
        # Only the embedded addresses: a configured URL may carry a password.
        EMBEDDED_FILE.write_bytes(
            orjson.dumps(
                {
                    "bootstrap": broker.bootstrap_servers if broker else None,
                    "redis_url": rds.url if rds else None,
                }
            )
        )
        log.info("embedded services: kafka %s, redis %s", ep.bootstrap, mask_url(ep.redis_url))
        yield ep
    finally:
        EMBEDDED_FILE.unlink(missing_ok=True)
        if broker:
            broker.stop()
        if rds:
            rds.stop()
