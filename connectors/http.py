"""The engine's HTTP endpoints: /metrics, /healthz, /readyz.

- `/metrics`  Prometheus text format (the default registry: `common.metrics`
  and the Python process collectors).
- `/healthz`  200 while the process is up.
- `/readyz`   200 when Redis and the broker answer, no Redis call of the engine
  is failing, and this process's partitions are at most `ready_max_lag`
  records behind; else 503. The body is JSON with each check's result.

The server is started by the runner, never at import; one per process, on
`engine.http_port` + the process index.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson
from confluent_kafka.admin import AdminClient
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from common import metrics
from connectors.errors import ConnectorError

log = logging.getLogger(__name__)

PROBE_TIMEOUT_S = 2.0
READY_CACHE_S = 0.5  # probes closer together than this share one check


@dataclass
class Readiness:
    """The checks behind /readyz. Clients are made on the first check."""

    ping_redis: Callable[[], None]  # raises when Redis does not answer
    kafka_config: dict[str, Any]
    probe_topic: str
    max_lag: int
    redis_failing: Callable[[], float | None]  # since when the engine's calls fail, or None
    _admin: AdminClient | None = None
    _cached: tuple[float, bool, dict[str, Any]] | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def check(self) -> tuple[bool, dict[str, Any]]:
        with self._lock:
            now = time.monotonic()
            if self._cached is not None and now - self._cached[0] < READY_CACHE_S:
                return self._cached[1], self._cached[2]
            checks = {"redis": self._redis(), "kafka": self._kafka(), "lag": self._lag()}
            ready = all(c["ok"] for c in checks.values())
            self._cached = (now, ready, checks)
            return ready, checks

    def _redis(self) -> dict[str, Any]:
        since = self.redis_failing()
        if since is not None:
            return {
                "ok": False,
                "error": f"engine's Redis calls failing for {time.monotonic() - since:.1f}s",
            }
        try:
            self.ping_redis()
        except Exception as ex:  # any failure to answer means not ready
            return {"ok": False, "error": f"{type(ex).__name__}: {ex}"}
        return {"ok": True}

    def _kafka(self) -> dict[str, Any]:
        try:
            if self._admin is None:
                self._admin = AdminClient(self.kafka_config)
            md = self._admin.list_topics(topic=self.probe_topic, timeout=PROBE_TIMEOUT_S)
            meta = md.topics.get(self.probe_topic)
            if meta is None or meta.error is not None:
                return {"ok": False, "error": f"topic {self.probe_topic}: {meta and meta.error}"}
        except Exception as ex:  # KafkaException, or a timeout
            return {"ok": False, "error": f"{type(ex).__name__}: {ex}"}
        return {"ok": True}

    def _lag(self) -> dict[str, Any]:
        total = metrics.LAG.total()
        return {"ok": total <= self.max_lag, "records": total, "max": self.max_lag}


class _Handler(BaseHTTPRequestHandler):
    server: OpsServer

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            self._send(200, generate_latest(REGISTRY), CONTENT_TYPE_LATEST)
        elif path == "/healthz":
            self._send(200, b"ok\n", "text/plain; charset=utf-8")
        elif path == "/readyz":
            ready, checks = self.server.readiness.check()
            body = orjson.dumps({"ready": ready, "checks": checks}) + b"\n"
            self._send(200 if ready else 503, body, "application/json")
        else:
            self._send(404, b"not found: try /metrics, /healthz or /readyz\n", "text/plain")

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("http: " + format, *args)


class OpsServer(ThreadingHTTPServer):
    """Serves the endpoints from a daemon thread; `start()` returns the bound port."""

    daemon_threads = True

    def __init__(self, host: str, port: int, readiness: Readiness) -> None:
        try:
            super().__init__((host, port), _Handler)
        except OSError as ex:
            raise ConnectorError(
                f"http: cannot listen on port {port} for /metrics, /healthz and /readyz: {ex}"
                " (set engine.http_port, 0 for any free port)"
            ) from ex
        self.readiness = readiness
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def start(self) -> int:
        self._thread = threading.Thread(
            target=self.serve_forever, name="omnipulse-http", daemon=True
        )
        self._thread.start()
        return self.port

    def stop(self) -> None:
        if self._thread is not None:
            self.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self.server_close()
