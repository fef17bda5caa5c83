"""Running the engine: connections, topics, the dataflow, the catch-up finish."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import timedelta

import redis
from bytewax._bytewax import cli_main
from confluent_kafka.admin import AdminClient, NewTopic

from common import metrics
from common.settings import DLQ_TOPIC, INPUT_TOPICS, TRIGGER_TOPIC_NAMES, Settings
from connectors.embedded import free_port
from connectors.errors import ConnectorError
from connectors.http import PROBE_TIMEOUT_S, OpsServer, Readiness
from connectors.kafka_check import check_kafka
from connectors.kafka_io import (
    RDKAFKA_LOG,
    SHUTDOWN,
    Confirm,
    OffsetCommitter,
    OutMessage,
    consumer_config,
    produce_all,
    producer_config,
)
from connectors.locations_file import read_locations
from flows.delivery import OutboxConfirmer
from flows.engine import build_flow
from flows.recovery import recover
from flows.steps import EngineStep, sweep_once
from flows.worker import wall_ms
from omnipulse.endpoints import Endpoints
from state.connection import check_redis
from state.errors import OutagePolicy, report_call_times, riding_out_outages
from state.keys import Keys
from state.locations import LocationStore
from state.ops import customers_known, ping, probe_client

log = logging.getLogger(__name__)


def create_topics(settings: Settings, bootstrap: str) -> list[str]:
    """Create every omnipulse topic that does not exist yet; return the created ones."""
    k = settings.kafka
    conf = {"bootstrap.servers": bootstrap, **dict(k.extra)}
    existing = set(check_kafka(conf).topics)
    admin = AdminClient({**conf, "logger": RDKAFKA_LOG})
    names = [k.topic(t) for t in (*INPUT_TOPICS, *TRIGGER_TOPIC_NAMES, DLQ_TOPIC)]
    todo = []
    for name in names:
        if name in existing:
            continue
        config = {"cleanup.policy": "compact"} if name == k.topic("locations") else {}
        todo.append(NewTopic(name, k.partitions, k.replication_factor, config=config))
    if not todo:
        return []
    for name, fut in admin.create_topics(todo).items():
        try:
            fut.result()
        except Exception as ex:  # KafkaException carries the broker's reason
            if "already exists" not in str(ex).lower():
                raise ConnectorError(f"kafka: cannot create topic {name}: {ex}") from ex
    return [t.topic for t in todo]


# How long a cluster member gets to stop after another failed.
CHILD_STOP_S = 30.0
# Long enough never to end while a run lasts (see `run_engine`).
ORDERED_EPOCH = timedelta(days=3650)


def run_engine(
    settings: Settings,
    ep: Endpoints,
    *,
    until_caught_up: bool,
    workers: int = 1,
    processes: int = 1,
    process_id: int | None = None,
    addresses: Sequence[str] | None = None,
) -> None:
    """Run the dataflow; in catch-up mode also fire what the final watermark made due.

    While it runs, the process serves /metrics, /healthz and /readyz, and its
    Redis calls wait through a Redis outage instead of failing the dataflow.
    First, triggers that an earlier run claimed but was killed before confirming
    are emitted (those not already on the trigger topics), so none is lost or doubled.

    `processes` > 1 starts that many local processes (this one is process 0)
    that form one Bytewax cluster over free local ports. `process_id` and
    `addresses` join a cluster whose members were started elsewhere (the
    multi-host form: every host runs the same command with its own id).
    """
    # From the first call on, recovery's included: this process serves /metrics.
    report_call_times(metrics.observe_redis)
    if processes > 1 and addresses is None:
        _run_local_cluster(settings, ep, until_caught_up, workers, processes)
        return
    several = workers > 1 or processes > 1 or (addresses is not None and len(addresses) > 1)
    if several and not settings.engine.ordered_input and not process_id:
        log.warning(
            "several workers read the input partitions side by side: time-driven "
            "decisions can differ from a one-worker run; engine.ordered_input = true "
            "makes the cluster's results equal one worker's (README, Scaling out)"
        )
    check_redis(ep.redis_url)
    if not process_id:
        # one recovery per engine: every writer's unconfirmed triggers, once
        recover(settings, ep.bootstrap, ep.redis_url)
    load_locations(settings, ep)
    flow = build_flow(
        settings, bootstrap=ep.bootstrap, redis_url=ep.redis_url, until_caught_up=until_caught_up
    )
    policy = OutagePolicy(stop=SHUTDOWN)
    # Bytewax holds every input at an epoch's end until the epoch has closed on
    # all workers. Ordered input's workers wait for each other inside a batch
    # (flows.cluster), so a worker held there would never let the other finish
    # the batch: no epoch ends in such a run. Nothing here uses Bytewax epochs
    # (no Bytewax recovery, no windows), and each reader emits one batch per
    # activation, so the queues between steps stay a batch deep.
    epochs = ORDERED_EPOCH if settings.engine.ordered_input else None
    with (
        ops_endpoints(
            settings, ep, policy, process_index=process_id or 0, any_port=until_caught_up
        ),
        riding_out_outages(policy),
    ):
        try:
            if addresses is None:
                cli_main(flow, workers_per_process=workers, epoch_interval=epochs)
            else:
                cli_main(
                    flow,
                    workers_per_process=workers,
                    process_id=process_id or 0,
                    addresses=list(addresses),
                    epoch_interval=epochs,
                )
        except Exception as ex:
            # Bytewax wraps a Ctrl-C/SIGTERM raised inside a step; stop quietly then.
            if _interrupted(ex):
                raise KeyboardInterrupt from ex
            raise
        # Stopped by a signal: the input is not caught up, so the final sweep
        # belongs to the run that finishes the input. In a cluster, process 0
        # does it once: the cluster's input is done when cli_main returns.
        if until_caught_up and not SHUTDOWN.is_set() and not process_id:
            finish_timers(settings, ep)


@contextmanager
def ops_endpoints(
    settings: Settings,
    ep: Endpoints,
    policy: OutagePolicy,
    *,
    process_index: int = 0,
    any_port: bool = False,
) -> Iterator[OpsServer]:
    """Serve /metrics, /healthz and /readyz on `engine.http_port` + `process_index`.

    Each process of a multi-process engine has its own figures, so each needs
    its own port; port 0 picks a free one (logged). With `any_port` (a catch-up
    run, often started beside a live engine that holds the port) a port in use
    falls back to a free one instead of failing.
    """
    keys = Keys(settings.redis.key_prefix, settings.engine.timer_shards)
    client = probe_client(ep.redis_url, PROBE_TIMEOUT_S)
    k = settings.kafka
    readiness = Readiness(
        ping_redis=lambda: ping(client),
        kafka_config={"bootstrap.servers": ep.bootstrap, **dict(k.extra), "logger": RDKAFKA_LOG},
        probe_topic=k.topic(INPUT_TOPICS[0]),
        max_lag=settings.engine.ready_max_lag,
        redis_failing=lambda: policy.failing_since,
    )
    port = settings.engine.http_port
    port = port + process_index if port else 0
    try:
        server = OpsServer("", port, readiness)
    except ConnectorError as ex:
        if not any_port:
            raise
        log.warning("%s; serving on a free port instead", ex)
        server = OpsServer("", 0, readiness)
    metrics.STATE.customers = lambda: customers_known(client, keys)
    server.start()
    log.info("serving /metrics, /healthz and /readyz on port %d", server.port)
    try:
        yield server
    finally:
        server.stop()
        client.close()
        metrics.reset_sources()


def _run_local_cluster(
    settings: Settings, ep: Endpoints, until_caught_up: bool, workers: int, processes: int
) -> None:
    """Processes 1..P-1 as children of this one (process 0), on free local ports."""
    addresses = [f"127.0.0.1:{free_port()}" for _ in range(processes)]
    env = dict(os.environ, KAFKA_BOOTSTRAP_SERVERS=ep.bootstrap, REDIS_URL=ep.redis_url)
    base = [sys.executable, "-m", "omnipulse.cli"]
    if os.environ.get("OMNIPULSE_CONFIG") is None and settings.source:
        base += ["--config", str(settings.source)]
    base += ["run", "--workers", str(workers), "--addresses", ",".join(addresses)]
    if until_caught_up:
        base.append("--until-caught-up")
    children = [
        subprocess.Popen([*base, "--process-id", str(i)], env=env) for i in range(1, processes)
    ]
    ok = False
    try:
        run_engine(
            settings,
            ep,
            until_caught_up=until_caught_up,
            workers=workers,
            process_id=0,
            addresses=addresses,
        )
        ok = True
    finally:
        for child in children:
            if not ok and child.poll() is None:
                child.terminate()
        codes = [_reap(child, hurry=not ok) for child in children]
    if ok and any(codes):
        raise ConnectorError(f"engine processes exited with codes {codes}")


def _reap(child: subprocess.Popen[bytes], *, hurry: bool) -> int:
    """A cluster member's exit code. After a failure elsewhere it may hang waiting
    for its peers (Bytewax does not always notice one is gone): kill it then."""
    try:
        return child.wait(timeout=CHILD_STOP_S if hurry else None)
    except subprocess.TimeoutExpired:
        log.warning("engine process %d did not stop; killing it", child.pid)
        child.kill()
        return child.wait()


def load_locations(settings: Settings, ep: Endpoints) -> int:
    """Load `[allocation] locations_file` into Redis before the flow starts."""
    path = settings.allocation.locations_file
    if not path:
        return 0
    records = read_locations(path)
    with redis.Redis.from_url(ep.redis_url) as client:
        keys = Keys(settings.redis.key_prefix, settings.engine.timer_shards)
        LocationStore(client, keys).put(records)
    log.info("loaded %d locations from %s", len(records), path)
    return len(records)


def _interrupted(ex: BaseException | None) -> bool:
    while ex is not None:
        if isinstance(ex, KeyboardInterrupt):
            return True
        ex = ex.__cause__ or ex.__context__
    return False


def finish_timers(settings: Settings, ep: Endpoints) -> int:
    """Sweep due reviews until none is left, emitting their triggers."""
    # Each pass moves every due review to its next review time, which is
    # strictly later; the pass limit only guards against a bug looping forever.
    return sweep_timers(settings, ep, passes=10_000)


def sweep_timers(settings: Settings, ep: Endpoints, *, passes: int) -> int:
    """Up to `passes` sweeps of due reviews at the durable watermark; emits their
    triggers through the outbox. Returns the number of triggers emitted."""
    step = EngineStep(settings, redis_url=ep.redis_url, live=False)
    worker = step.worker()
    emitted = 0
    if settings.engine.ordered_input and worker.model is not None and worker.model_store:
        # as at the start of an ordered batch: the labels queued so far are
        # learned before these sweeps score anyone
        worker.model.sync(worker.model_store, remember_ms=worker.dedup_ttl_ms, force=True)
    if settings.engine.ordered_input:
        # the input is done on every worker: all of its offsets are committed
        k = settings.kafka
        group = OffsetCommitter(consumer_config(ep.bootstrap, k.consumer_group, dict(k.extra)))
        group.commit(committed_offsets(settings, worker.client))
        group.close()
    config = producer_config(ep.bootstrap, dict(settings.kafka.extra))
    keys = Keys(settings.redis.key_prefix, settings.engine.timer_shards)
    confirmer = OutboxConfirmer(ep.redis_url, keys)
    try:
        for _ in range(passes):
            records, due = sweep_once(worker)
            if not due:
                break
            msgs: list[OutMessage | Confirm] = [step.message(rec, worker) for rec in records]
            msgs.extend(Confirm(r) for r in worker.take_receipts())
            emitted += produce_all(config, msgs, confirmer)
            # no record caused these: event time alone made them due
            metrics.observe_triggers(records, wall_ms(), ingest_ms=None, timers=True)
    finally:
        confirmer.close()
    if worker.model is not None and worker.model_store is not None:
        # every queued label into the snapshot, whoever held the learner's lease
        worker.model.sync(worker.model_store, remember_ms=worker.dedup_ttl_ms, force=True)
    return emitted


def committed_offsets(settings: Settings, client: redis.Redis) -> dict[str, int]:
    """Ordered input: the resume offsets of worker 0, as full "topic#partition" names."""
    keys = Keys(settings.redis.key_prefix, settings.engine.timer_shards)
    raw = client.hgetall(keys.offsets)
    prefixed = settings.kafka.topic
    return {prefixed(k.decode()): int(v) for k, v in raw.items() if not k.startswith(b"@")}
