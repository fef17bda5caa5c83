"""Operating the engine (issue 5, acceptance 2): `omnipulse run` serves /metrics
in the Prometheus text format with every metric after a run, and /readyz; the
engine rides out a Redis outage, unready meanwhile, and loses no event."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from engine_harness import Engine, cart, click, make_settings, order, stock
from prometheus_client.parser import text_string_to_metric_families

from common.settings import TRIGGER_TOPIC_NAMES
from connectors.embedded import EmbeddedRedis, free_port
from connectors.errors import ConnectorError
from omnipulse.runner import run_engine

pytestmark = pytest.mark.integration

# 10:00 UTC yesterday: every day's events sit mid-day, whatever time the test runs
NOW = datetime.now(UTC).replace(hour=10, minute=0, second=0, microsecond=0) - timedelta(days=1)


def ago(days: float, hours: float = 0) -> str:
    return (NOW - timedelta(days=days, hours=hours)).isoformat().replace("+00:00", "Z")


# -- the engine as a user runs it ----------------------------------------------


class LiveEngine:
    """`omnipulse run` in a subprocess, with its HTTP port."""

    def __init__(self, engine: Engine, **env: str) -> None:
        self.port = free_port()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "omnipulse.cli", "run"],
            env=engine.cli_env(OMNIPULSE_HTTP_PORT=str(self.port), **env),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )

    def get(self, path: str) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=5) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as ex:
            return ex.code, ex.read()

    def scrape(self) -> tuple[dict[tuple[str, tuple[tuple[str, str], ...]], float], dict[str, str]]:
        """Every sample of /metrics, parsed by prometheus_client's own parser; family types."""
        status, body = self.get("/metrics")
        assert status == 200
        families = list(text_string_to_metric_families(body.decode()))
        samples = {
            (s.name, tuple(sorted(s.labels.items()))): s.value for f in families for s in f.samples
        }
        return samples, {f.name: f.type for f in families}

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        return self.scrape()[0]

    def ready(self) -> int:
        return self.get("/readyz")[0]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def alive(self) -> None:
        if self.proc.poll() is not None:
            raise AssertionError(f"engine exited: {self.proc.stderr.read().decode()[-3000:]}")  # type: ignore[union-attr]


def wait_for(what: str, check: Callable[[], bool], engine: LiveEngine, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        engine.alive()
        try:
            if check():
                return
        except (urllib.error.URLError, ConnectionError):
            pass  # the server is not listening yet
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}")


def total(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str) -> float:
    return sum(v for (n, _), v in samples.items() if n == name)


def by_label(
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, label: str
) -> dict[str, float]:
    out: dict[str, float] = {}
    for (n, labels), v in samples.items():
        if n == name:
            key = dict(labels)[label]
            out[key] = out.get(key, 0) + v
    return out


def quiesce(live: LiveEngine, records_in: int) -> None:
    """Wait until every record is read, the engine is ready and triggers stop coming."""
    wait_for(
        f"{records_in} records in",
        lambda: total(live.metrics(), "omnipulse_events_in_total") == records_in,
        live,
    )
    wait_for("/readyz", lambda: live.ready() == 200, live)
    last: list[float] = []

    def stable() -> bool:
        m = live.metrics()
        last.append(
            (
                total(m, "omnipulse_triggers_emitted_total"),
                total(m, "omnipulse_churn_labels_total"),
            )
        )
        return len(last) >= 8 and len(set(last[-8:])) == 1

    wait_for("triggers to settle", stable, live)


# -- traffic --------------------------------------------------------------------


def traffic(click_every: int = 1) -> list[tuple[str, dict[str, Any] | bytes]]:
    """Orders, visits and carts of a few customers, all well in the past, plus bad input.

    h1 buys every 10 days then stops (churn labels, the seed heuristic), r1
    comes back once, c1 leaves a cart of a SKU in stock; v1 gets several
    marketing triggers on one day (capped at 2 a day below).
    """
    out: list[tuple[str, dict[str, Any] | bytes]] = []
    out += [("orders", order("h1", f"h1-{d}", ago(200 - d), "30.00")) for d in (0, 10, 20)]
    out += [("clicks", click("h1", ago(200 - d, -1))) for d in range(0, 21, click_every)]
    out += [("orders", order("r1", "r1-0", ago(200), "50.00"))]
    out += [("orders", order("r1", "r1-1", ago(170), "50.00"))]
    out += [("orders", order("v1", f"v1-{i}", ago(150, -i), "3000.00")) for i in range(3)]
    out += [("stock", stock("SKU-7", "W1", ago(101), on_hand=50))]
    out += [("carts", cart("c1", "SKU-7", ago(100)))]
    out += [("orders", b"{not json")]
    # an anonymous visit moves event time to the present: the horizon passes
    out += [("clicks", click(None, ago(0), anonymous_id="a1"))]
    return out


def with_ids(events: list[tuple[str, dict[str, Any] | bytes]], tag: str) -> list[tuple[str, Any]]:
    return [
        (t, {**e, "event_id": f"{tag}{i}"} if isinstance(e, dict) else e)
        for i, (t, e) in enumerate(events)
    ]


def send(engine: Engine, events: list[tuple[str, Any]]) -> None:
    for topic, ev in events:
        engine.send(topic, ev)


def trigger_ids(engine: Engine) -> list[tuple[str, str]]:
    return sorted(
        (t["kind"], t["trigger_id"])
        for topic in TRIGGER_TOPIC_NAMES
        for t in engine.triggers(topic)
    )


# -- acceptance 2: /metrics -----------------------------------------------------


@pytest.fixture
def policy_config(tmp_path: Path) -> Path:
    path = tmp_path / "omnipulse.toml"
    path.write_text("[policy]\nmax_per_day = 2\nholdout_share = 0\n")
    return path


def test_metrics_after_a_run_carry_every_metric_with_plausible_values(
    broker, redis_server, topic_prefix, key_prefix, redis_client, policy_config
) -> None:
    engine = Engine(make_settings(broker, redis_server, topic_prefix, key_prefix))
    events = with_ids(traffic(), "m")
    # one event sent twice: a duplicate, not applied again
    events.append(events[0])
    sent_per_topic: dict[str, int] = {}
    for topic, _ in events:
        sent_per_topic[topic] = sent_per_topic.get(topic, 0) + 1
    send(engine, events)

    live = LiveEngine(engine, OMNIPULSE_CONFIG=str(policy_config))
    try:
        quiesce(live, len(events))
        assert live.get("/healthz")[0] == 200
        status, body = live.get("/readyz")
        assert status == 200 and orjson.loads(body)["ready"] is True
        m, types = live.scrape()
    finally:
        live.stop()

    counters = {
        "omnipulse_events_in", "omnipulse_events_rejected", "omnipulse_events_duplicate",
        "omnipulse_events_late", "omnipulse_triggers_emitted", "omnipulse_triggers_suppressed",
        "omnipulse_triggers_held", "omnipulse_churn_labels", "omnipulse_redis_retries",
        "omnipulse_channel_orders", "omnipulse_channel_revenue",
    }  # fmt: skip
    gauges = {
        "omnipulse_consumer_lag", "omnipulse_watermark_lag_seconds", "omnipulse_redis_up",
        "omnipulse_customers", "omnipulse_model_auc", "omnipulse_model_log_loss",
        "omnipulse_model_labels",
    }  # fmt: skip
    histograms = {
        "omnipulse_trigger_latency_seconds", "omnipulse_timer_lateness_seconds",
        "omnipulse_redis_call_seconds", "omnipulse_redis_pipeline_commands",
        "omnipulse_batch_size",
    }  # fmt: skip
    for name in counters:
        assert types.get(name) == "counter", name
    for name in gauges:
        assert types.get(name) == "gauge", name
    for name in histograms:
        assert types.get(name) == "histogram", name

    # input: every record read is counted under its topic, the bad one also as rejected
    assert by_label(m, "omnipulse_events_in_total", "topic") == sent_per_topic
    assert by_label(m, "omnipulse_events_rejected_total", "reason") == {"invalid_json": 1}
    assert total(m, "omnipulse_events_duplicate_total") == 1
    assert total(m, "omnipulse_batch_size_sum") == len(events)
    assert total(m, "omnipulse_batch_size_count") >= 1

    # triggers: the counter agrees with what is on the trigger topics
    emitted = by_label(m, "omnipulse_triggers_emitted_total", "kind")
    on_topics: dict[str, int] = {}
    for kind, _ in trigger_ids(engine):
        on_topics[kind] = on_topics.get(kind, 0) + 1
    assert emitted == on_topics
    assert {"abandoned_cart", "journey_step", "tier_change", "churn_risk"} <= set(emitted)
    assert total(m, "omnipulse_triggers_suppressed_total") >= 1  # v1's busy day, capped at 2

    # latency: one observation per trigger and basis; ingest latency is small,
    # event-time latency is the age of the (months old) causes
    lat = {
        basis: (
            sum(
                v
                for (n, lb), v in m.items()
                if n == "omnipulse_trigger_latency_seconds_count" and dict(lb)["basis"] == basis
            ),
            sum(
                v
                for (n, lb), v in m.items()
                if n == "omnipulse_trigger_latency_seconds_sum" and dict(lb)["basis"] == basis
            ),
        )
        for basis in ("event_time", "ingest")
    }
    assert lat["event_time"][0] == sum(emitted.values())
    assert lat["ingest"][0] == sum(emitted.values())
    assert lat["event_time"][1] / lat["event_time"][0] > 30 * 86400
    assert 0 <= lat["ingest"][1] / lat["ingest"][0] < 60
    timer_kinds = by_label(m, "omnipulse_timer_lateness_seconds_count", "kind")
    assert timer_kinds.get("abandoned_cart") == emitted["abandoned_cart"]
    assert timer_kinds.get("journey_step") == emitted["journey_step"]

    # lag: every partition of every input topic reported, all caught up
    lag = {
        (dict(lb)["topic"], dict(lb)["partition"]): v
        for (n, lb), v in m.items()
        if n == "omnipulse_consumer_lag"
    }
    assert {t for t, _ in lag} >= set(sent_per_topic)
    assert set(lag.values()) == {0}
    # the newest event is from 10:00 yesterday; idle time moves the watermark on from there
    since_newest = (datetime.now(UTC) - NOW).total_seconds()
    assert 0 <= total(m, "omnipulse_watermark_lag_seconds") <= since_newest + 600

    # Redis: the batch's rounds are timed and sized, Redis was up throughout
    calls = by_label(m, "omnipulse_redis_call_seconds_count", "call")
    assert calls.get("apply customer events", 0) >= 1
    assert calls.get("commit counters and offsets", 0) >= 1
    assert by_label(m, "omnipulse_redis_pipeline_commands_count", "call")
    assert total(m, "omnipulse_redis_up") == 1
    assert total(m, "omnipulse_redis_retries_total") == 0

    # sales per channel: the orders applied (the duplicate is not), gross value
    assert by_label(m, "omnipulse_channel_orders_total", "channel") == {"web": 8}
    assert by_label(m, "omnipulse_channel_revenue_total", "channel") == {"web": 9190.0}

    # state: customers known, and the churn model's live figures
    assert total(m, "omnipulse_customers") == 4  # h1, r1, v1, c1
    labels = by_label(m, "omnipulse_model_labels", "label")
    assert labels["churned"] >= 1 and labels["retained"] >= 1
    assert 0 <= total(m, "omnipulse_model_auc") <= 1
    assert total(m, "omnipulse_model_log_loss") > 0
    learned = by_label(m, "omnipulse_churn_labels_total", "label")
    assert learned == labels  # a fresh model: everything it knows was learned in this run


# -- acceptance 2: a Redis outage -------------------------------------------------


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[EmbeddedRedis]:
    """A redis-server of this test alone, with an append-only file, so it can be stopped."""
    server = EmbeddedRedis(tmp_path / "redis", persistent=True)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def state_of(engine: Engine, customers: list[str]) -> dict[str, Any]:
    """What a user sees: profiles, counters, trigger ids."""
    profiles = {}
    for cid in customers:
        prof = orjson.loads(engine.cli("profile", cid))
        prof.pop("recency_days", None)  # moves with the wall clock
        # The online model's score depends on which labels it had learned when
        # it scored, so on how records happened to be batched; what it learned
        # is compared below instead.
        prof.pop("churn_score", None)
        profiles[cid] = prof
    model = orjson.loads(engine.cli("model", "--json"))
    stats = {
        k: v
        for k, v in engine.stats().items()
        if k.startswith(("events:", "rejected:", "emitted:", "suppressed:", "duplicates"))
    }
    return {
        "profiles": profiles,
        "stats": stats,
        "triggers": trigger_ids(engine),
        "labels": (model["labels_churned"], model["labels_retained"]),
    }


def run_one_by_one(
    engine: Engine,
    events: list[tuple[str, Any]],
    config: Path,
    outage: EmbeddedRedis | None = None,
    outage_at: int = 0,
) -> dict[str, float]:
    """Send the events one at a time, each once the previous one is through, so
    every batch holds one record and two runs batch alike. With `outage`, that
    Redis is stopped just before event `outage_at` is sent and started again
    while the engine waits for it. Returns the last scrape."""
    live = LiveEngine(engine, OMNIPULSE_CONFIG=str(config))
    try:
        for n, (topic, ev) in enumerate(events, 1):
            if outage is not None and n - 1 == outage_at:
                outage.stop()
            engine.send(topic, ev)
            if outage is not None and n - 1 == outage_at:
                # the batch holding this event waits for Redis
                wait_for("/readyz to turn unready", lambda: live.ready() == 503, live)
                _, body = live.get("/readyz")
                assert orjson.loads(body)["checks"]["redis"]["ok"] is False
                wait_for(
                    "the outage to show in the metrics",
                    lambda: total(live.metrics(), "omnipulse_redis_retries_total") > 0,
                    live,
                )
                assert total(live.metrics(), "omnipulse_redis_up") == 0
                assert live.get("/healthz")[0] == 200  # the process is up all along
                time.sleep(2)
                assert live.ready() == 503
                outage.start()  # same port, same append-only file
                wait_for("/readyz to be ready again", lambda: live.ready() == 200, live)
            wait_for(
                f"event {n}",
                lambda n=n: total(live.metrics(), "omnipulse_events_in_total") == n,
                live,
            )
            # past the grace in which a partition that reached its end still
            # holds event time back (flows.worker.PARTITION_IDLE_GRACE_MS)
            time.sleep(0.6)
        quiesce(live, len(events))
        return live.metrics()
    finally:
        live.stop()
        assert live.proc.returncode == 0


def test_readyz_follows_a_redis_outage_and_no_event_is_lost(
    broker, redis_server, own_redis, topic_prefix, key_prefix, redis_client, tmp_path
) -> None:
    # Only events move event time, not the wall clock while input is idle:
    # two live runs with pauses of different lengths then decide the same.
    config = tmp_path / "omnipulse.toml"
    config.write_text("[engine]\nidle_advance = false\n")
    events = with_ids(traffic(click_every=5), "o")
    customers = ["h1", "r1", "v1", "c1"]
    outage_at = next(i for i, (_, ev) in enumerate(events) if ev.get("order_id") == "v1-1")

    # a clean run, on the shared Redis
    clean = Engine(make_settings(broker, redis_server, topic_prefix + "clean.", key_prefix + "c"))
    run_one_by_one(clean, events, config)
    expected = state_of(clean, customers)

    # the same events, with this test's Redis stopped under v1's second order
    engine = Engine(make_settings(broker, own_redis, topic_prefix, key_prefix))
    m = run_one_by_one(engine, events, config, own_redis, outage_at)
    assert total(m, "omnipulse_redis_up") == 1
    assert total(m, "omnipulse_redis_retries_total") >= 1

    got = state_of(engine, customers)
    assert got["stats"] == expected["stats"]
    for cid in customers:
        assert got["profiles"][cid] == expected["profiles"][cid], cid
    assert got["triggers"] == expected["triggers"]
    assert got["labels"] == expected["labels"]


def test_a_port_in_use_stops_a_live_engine_but_not_a_catch_up_run(
    broker, redis_server, topic_prefix, key_prefix, redis_client
) -> None:
    with socket.socket() as taken:
        taken.bind(("", 0))
        taken.listen()
        port = taken.getsockname()[1]
        engine = Engine(
            make_settings(
                broker, redis_server, topic_prefix, key_prefix, engine={"http_port": port}
            )
        )
        engine.send("orders", order("p1", "p1-0", ago(1), "10.00"))
        engine.run()  # a backfill beside a live engine: served on a free port instead
        assert engine.stats()["events:orders"] == 1
        with pytest.raises(ConnectorError, match=f"cannot listen on port {port}"):
            run_engine(engine.settings, engine.ep, until_caught_up=False)
