"""`omnipulse demo` (what `make demo` runs): embedded services, the simulator,
the engine in a child process, and a live view of what comes out."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter, deque
from typing import Any

import orjson
import redis
from confluent_kafka import Consumer, KafkaError, TopicPartition

from omnipulse.cli import _sim_records, produce_records
from omnipulse.runner import Endpoints, create_topics, endpoints
from omnipulse.settings import TRIGGER_TOPIC_NAMES, Settings
from state.keys import Keys


class _TriggerWatch:
    """Reads every trigger topic and the DLQ from the start; counts by kind."""

    def __init__(self, settings: Settings, bootstrap: str) -> None:
        self.kinds: Counter[str] = Counter()
        self.dlq = 0
        self.last: deque[dict[str, Any]] = deque(maxlen=6)
        self._dlq_topic = settings.kafka.dlq_topic
        self._consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": "omnipulse-demo-view",
                "enable.auto.commit": False,
            }
        )
        topics = [settings.kafka.topic(t) for t in TRIGGER_TOPIC_NAMES] + [self._dlq_topic]
        md = self._consumer.list_topics(timeout=10)
        self._consumer.assign(
            [
                TopicPartition(t, p, 0)
                for t in topics
                if t in md.topics
                for p in md.topics[t].partitions
            ]
        )

    def poll(self) -> None:
        for msg in self._consumer.consume(5000, 0.2):
            if msg.error():
                if msg.error().code() != KafkaError._PARTITION_EOF:
                    print(f"  (trigger view: {msg.error()})", file=sys.stderr)
                continue
            if msg.topic() == self._dlq_topic:
                self.dlq += 1
                continue
            rec = orjson.loads(msg.value())
            self.kinds[rec["kind"]] += 1
            self.last.append(rec)

    def close(self) -> None:
        self._consumer.close()


def _engine_process(ep: Endpoints, args: argparse.Namespace) -> subprocess.Popen[bytes]:
    env = dict(os.environ, KAFKA_BOOTSTRAP_SERVERS=ep.bootstrap, REDIS_URL=ep.redis_url)
    cmd = [sys.executable, "-m", "omnipulse.cli"]
    if args.config:
        cmd += ["--config", args.config]
    return subprocess.Popen([*cmd, "run"], env=env, start_new_session=True)


def _describe(rec: dict[str, Any]) -> str:
    subject = (
        rec.get("customer_id") or rec.get("sku") or rec.get("order_id") or rec.get("location_id")
    )
    p = rec.get("payload", {})
    detail = ", ".join(f"{k}={v}" for k, v in p.items() if not isinstance(v, list | dict))[:80]
    hold = " [holdout]" if rec.get("holdout") else ""
    return f"{rec['event_ts'][:16]} {rec['kind']:<15} {subject:<10} {detail}{hold}"


def run_demo(settings: Settings, args: argparse.Namespace) -> int:
    with endpoints(settings, start_embedded=True) as ep:
        create_topics(settings, ep.bootstrap)
        engine = _engine_process(ep, args)
        stop = threading.Event()
        produced = [0]

        def simulate() -> None:
            produced[0] = produce_records(
                settings,
                ep.bootstrap,
                _sim_records(args),
                rate=args.rate,
                limit=args.events,
                until=time.monotonic() + args.duration if args.duration else None,
            )

        sim = threading.Thread(target=simulate, name="simulator", daemon=True)
        sim.start()
        watch = _TriggerWatch(settings, ep.bootstrap)
        keys = Keys(settings.redis.key_prefix)
        client = redis.Redis.from_url(ep.redis_url)
        started = time.monotonic()
        last_events, last_t = 0, started
        try:
            while not stop.is_set():
                watch.poll()
                now = time.monotonic()
                if now - last_t < 1.0:
                    continue
                stats = {k.decode(): int(v) for k, v in client.hgetall(keys.stats).items()}
                customers = int(client.hget(keys.agg, "customers") or 0)
                events = sum(v for k, v in stats.items() if k.startswith("events:"))
                rate = (events - last_events) / (now - last_t)
                last_events, last_t = events, now
                _render(now - started, rate, events, customers, watch, stats)
                if engine.poll() is not None:
                    print(f"engine exited with code {engine.returncode}", file=sys.stderr)
                    return 1
                if args.duration and now - started > args.duration + 5:
                    break
        except KeyboardInterrupt:
            print("\nstopping ...")
        finally:
            engine.send_signal(signal.SIGINT)
            try:
                engine.wait(10)
            except subprocess.TimeoutExpired:
                engine.kill()
            watch.close()
            client.close()
    return 0


def _render(
    elapsed: float,
    rate: float,
    events: int,
    customers: int,
    watch: _TriggerWatch,
    stats: dict[str, int],
) -> None:
    clear = "\x1b[H\x1b[2J" if sys.stdout.isatty() else "\n"
    rejected = sum(v for k, v in stats.items() if k.startswith("rejected:"))
    lines = [
        f"{clear}omnipulse demo — {elapsed:5.0f} s   (Ctrl-C to stop)",
        f"events in: {events:>9,}   ({rate:,.0f}/s)    customers known: {customers:,}",
        f"dead-lettered: {watch.dlq:,} (engine counted {rejected:,})   "
        f"duplicates skipped: {stats.get('duplicates', 0):,}",
        "triggers by kind:",
    ]
    for kind, n in sorted(watch.kinds.items()):
        lines.append(f"  {kind:<18} {n:>8,}")
    lines.append("last triggers:")
    lines.extend(f"  {_describe(r)}" for r in watch.last)
    print("\n".join(lines), flush=True)
