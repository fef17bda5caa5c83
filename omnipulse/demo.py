"""`omnipulse demo` (what `make demo` runs): embedded services, the simulator,
the engine in a child process, and a live view of what comes out.

The view counts triggers per kind as they arrive on the trigger topics, with the
wall-clock time from the demo's start to the first trigger of each kind (and how far
into the simulated history its cause lies), and the engine's own policy counters from
the Redis stats hash: triggers suppressed by the daily cap, held for quiet hours, and
the uplift figures (share of customers who ordered within the uplift window after a
marketing trigger, treated vs holdout). When the demo stops, the final figures are
printed once more as a summary.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter, deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson
import redis
from confluent_kafka import Consumer, KafkaError, TopicPartition

from common.settings import TRIGGER_TOPIC_NAMES, TRIGGER_TOPICS, Settings
from omnipulse.cli import _sim_records, produce_records
from omnipulse.endpoints import Endpoints, endpoints
from omnipulse.runner import create_topics
from operators.clock import DAY_MS, HOUR_MS, datetime_to_ms
from state.keys import Keys

#: Seconds between two renders of the live view: on a terminal the view is redrawn
#: in place; written to a file or a pipe, it is appended, so less often.
TTY_REFRESH_S = 1.0
LOG_REFRESH_S = 10.0
CLEAR = "\x1b[H\x1b[2J"
#: Seconds the engine gets to finish its batches after SIGINT before it is killed.
ENGINE_STOP_S = 20


@dataclass(slots=True)
class KindFigures:
    """What the engine counted for one trigger kind (Redis stats hash)."""

    emitted: int = 0
    suppressed: int = 0
    held: int = 0
    sent: dict[str, int] = field(default_factory=dict)  # group -> marketing triggers sent
    converted: dict[str, int] = field(default_factory=dict)  # group -> ordered within window


def policy_figures(stats: dict[str, int]) -> dict[str, KindFigures]:
    """Per-kind counters out of the stats hash: `emitted:<kind>`, `suppressed:<kind>`,
    `held:<kind>` and `uplift:<kind>:<group>:sent|converted`."""
    out: dict[str, KindFigures] = {}
    for key, n in stats.items():
        parts = key.split(":")
        if parts[0] in ("emitted", "suppressed", "held") and len(parts) == 2:
            fig = out.setdefault(parts[1], KindFigures())
            setattr(fig, parts[0], n)
        elif parts[0] == "uplift" and len(parts) == 4 and parts[3] in ("sent", "converted"):
            fig = out.setdefault(parts[1], KindFigures())
            getattr(fig, parts[3])[parts[2]] = n
    return out


class _TriggerWatch:
    """Reads every trigger topic and the DLQ from the start; counts by kind and notes
    when the first trigger of each kind arrived (seconds since `started`)."""

    def __init__(self, settings: Settings, bootstrap: str, started: float) -> None:
        self.kinds: Counter[str] = Counter()
        self.first: dict[str, tuple[float, int]] = {}  # kind -> (seconds, event time ms)
        self.dlq = 0
        self.last: deque[dict[str, Any]] = deque(maxlen=6)
        self._started = started
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

    def poll(self, timeout: float = 0.2) -> int:
        msgs = self._consumer.consume(5000, timeout)
        seen_at = time.monotonic() - self._started
        for msg in msgs:
            if msg.error():
                if msg.error().code() != KafkaError._PARTITION_EOF:
                    print(f"  (trigger view: {msg.error()})", file=sys.stderr)
                continue
            if msg.topic() == self._dlq_topic:
                self.dlq += 1
                continue
            rec = orjson.loads(msg.value())
            kind = rec["kind"]
            self.kinds[kind] += 1
            if kind not in self.first:
                self.first[kind] = (seen_at, _event_ms(rec.get("event_ts")))
            self.last.append(rec)
        return len(msgs)

    def drain(self, quiet_s: float = 1.0, limit_s: float = 10.0) -> None:
        """Read until nothing new came for `quiet_s` (at most `limit_s`)."""
        deadline = time.monotonic() + limit_s
        idle_since = time.monotonic()
        while time.monotonic() < deadline and time.monotonic() - idle_since < quiet_s:
            if self.poll():
                idle_since = time.monotonic()

    def close(self) -> None:
        self._consumer.close()


def _engine_process(ep: Endpoints, args: argparse.Namespace) -> subprocess.Popen[bytes]:
    env = dict(os.environ, KAFKA_BOOTSTRAP_SERVERS=ep.bootstrap, REDIS_URL=ep.redis_url)
    cmd = [sys.executable, "-m", "omnipulse.cli"]
    if args.config:
        cmd += ["--config", args.config]
    return subprocess.Popen([*cmd, "run"], env=env, start_new_session=True)


def _until(stop: threading.Event, records: Iterable[Any]) -> Iterator[Any]:
    """The records, until `stop` is set (so the simulator ends before the broker does)."""
    for rec in records:
        if stop.is_set():
            return
        yield rec


def _event_ms(ts: Any) -> int:
    try:
        return datetime_to_ms(datetime.fromisoformat(ts))
    except (TypeError, ValueError):
        return 0


def _span(ms: int) -> str:
    """A stretch of simulated time, compact: 55 min, 25.0 h, 92.3 d."""
    if ms < HOUR_MS:
        return f"{ms / 60_000:.0f} min"
    if ms < 2 * DAY_MS:
        return f"{ms / HOUR_MS:.1f} h"
    return f"{ms / DAY_MS:.1f} d"


def _describe(rec: dict[str, Any]) -> str:
    subject = (
        rec.get("customer_id") or rec.get("sku") or rec.get("order_id") or rec.get("location_id")
    )
    p = rec.get("payload", {})
    detail = ", ".join(f"{k}={v}" for k, v in p.items() if not isinstance(v, list | dict))[:80]
    hold = " [holdout]" if rec.get("holdout") else ""
    return f"{rec['event_ts'][:16]} {rec['kind']:<16} {subject:<10} {detail}{hold}"


def run_demo(settings: Settings, args: argparse.Namespace) -> int:
    tty = sys.stdout.isatty()
    refresh = TTY_REFRESH_S if tty else LOG_REFRESH_S
    with endpoints(settings, start_embedded=True) as ep:
        create_topics(settings, ep.bootstrap)
        started = time.monotonic()
        engine = _engine_process(ep, args)
        stop = threading.Event()
        produced = [0]

        def simulate() -> None:
            produced[0] = produce_records(
                settings,
                ep.bootstrap,
                _until(stop, _sim_records(args)),
                rate=args.rate,
                limit=args.events,
                until=started + args.duration if args.duration else None,
            )

        sim = threading.Thread(target=simulate, name="simulator", daemon=True)
        sim.start()
        watch = _TriggerWatch(settings, ep.bootstrap, started)
        keys = Keys(settings.redis.key_prefix)
        client = redis.Redis.from_url(ep.redis_url)
        sim_start = (
            args.start_ms
            if args.start_ms is not None
            else int(time.time() * 1000) - args.history_days * DAY_MS
        )  # as the simulator computes it, to within the few ms between the two
        view = _View(settings, watch, sim_start)
        last_t, code = started, 0
        try:
            while True:
                watch.poll()
                now = time.monotonic()
                if now - last_t < refresh:
                    continue
                view.update(client, keys, now - started)
                print(view.render(clear=tty), flush=True)
                last_t = now
                if engine.poll() is not None:
                    print(f"engine exited with code {engine.returncode}", file=sys.stderr)
                    code = 1
                    break
                if args.duration and now - started > args.duration + 5:
                    break
        except KeyboardInterrupt:
            print("\nstopping ...", flush=True)
        finally:
            stop.set()
            sim.join(35)  # the producer flushes what it has queued
            if engine.poll() is None:
                engine.send_signal(signal.SIGINT)
                try:
                    engine.wait(ENGINE_STOP_S)
                except subprocess.TimeoutExpired:
                    print(f"engine did not stop within {ENGINE_STOP_S} s: killed", file=sys.stderr)
                    engine.kill()
                    engine.wait()
            try:
                watch.drain()
                view.update(client, keys, time.monotonic() - started)
                print(view.render(clear=False, summary=True), flush=True)
            except (redis.RedisError, OSError) as ex:
                print(f"(no final summary: {ex})", file=sys.stderr)
            watch.close()
            client.close()
    return code


class _View:
    """The figures shown, refreshed from the watch and the Redis stats hash."""

    def __init__(self, settings: Settings, watch: _TriggerWatch, sim_start_ms: int) -> None:
        self.watch = watch
        self.sim_start_ms = sim_start_ms
        self.uplift_days = settings.policy.uplift_window.total_seconds() / 86_400
        self.stats: dict[str, int] = {}
        self.customers = 0
        self.elapsed = 0.0
        self.rate = 0.0
        self._last: tuple[float, int] | None = None

    def update(self, client: redis.Redis, keys: Keys, elapsed: float) -> None:
        self.stats = {k.decode(): int(v) for k, v in client.hgetall(keys.stats).items()}
        self.customers = int(client.hget(keys.agg, "customers") or 0)
        events = self.events
        if self._last is not None and elapsed > self._last[0]:
            self.rate = (events - self._last[1]) / (elapsed - self._last[0])
        self._last = (elapsed, events)
        self.elapsed = elapsed

    @property
    def events(self) -> int:
        return sum(v for k, v in self.stats.items() if k.startswith("events:"))

    def render(self, *, clear: bool, summary: bool = False) -> str:
        w, stats = self.watch, self.stats
        rejected = sum(v for k, v in stats.items() if k.startswith("rejected:"))
        if summary:
            head = f"\nomnipulse demo summary — ran {self.elapsed:.0f} s"
        else:
            head = (CLEAR if clear else "\n") + f"omnipulse demo — {self.elapsed:5.0f} s"
            head += "   (Ctrl-C to stop)"
        lines = [
            head,
            f"events in: {self.events:>9,}   ({self.rate:,.0f}/s)    "
            f"customers known: {self.customers:,}",
            f"dead-lettered: {w.dlq:,} (engine counted {rejected:,})   "
            f"duplicates skipped: {stats.get('duplicates', 0):,}   "
            f"late (applied): {stats.get('late', 0):,}",
            *self._kind_table(),
        ]
        if summary:
            lines.extend(self._unseen())
        else:
            lines.append("last triggers:")
            lines.extend(f"  {_describe(r)}" for r in w.last)
        return "\n".join(lines)

    def _unseen(self) -> list[str]:
        """Kinds whose emitted count (engine) differs from what reached the topics."""
        figs = policy_figures(self.stats)
        odd = [
            f"  {kind}: engine counted {f.emitted:,} emitted, {self.watch.kinds[kind]:,} received"
            for kind, f in sorted(figs.items())
            if f.emitted != self.watch.kinds[kind]
        ]
        note = (
            "emitted vs received differ (the embedded broker serves a partition only up to"
            " the start of its last producer batch until more data arrives; on Apache Kafka"
            " the figures match):"
        )
        return [note, *odd] if odd else []

    def _kind_table(self) -> list[str]:
        figs = policy_figures(self.stats)
        known = [k for k in TRIGGER_TOPICS if k in self.watch.kinds or k in figs]
        others = sorted(set(self.watch.kinds) - set(TRIGGER_TOPICS))
        days = f"{self.uplift_days:g} d"
        lines = [
            "triggers by kind     received  first after (cause at)  suppressed    held"
            f"   ordered within {days} (treated | holdout)"
        ]
        for kind in [*known, *others]:
            f = figs.get(kind, KindFigures())
            first = "—"
            if kind in self.watch.first:
                secs, cause = self.watch.first[kind]
                first = f"{secs:5.1f} s (+{_span(max(0, cause - self.sim_start_ms))})"
            lines.append(
                f"  {kind:<17} {self.watch.kinds[kind]:>9,}  {first:<22}  "
                f"{f.suppressed:>10,}  {f.held:>6,}   {_uplift(f)}".rstrip()
            )
        missing = [k for k in TRIGGER_TOPICS if k not in known]
        if missing:
            lines.append(f"  none yet: {', '.join(missing)}")
        return lines


def _uplift(f: KindFigures) -> str:
    if not f.sent:
        return ""
    parts = []
    for group in ("treated", "holdout"):
        sent, conv = f.sent.get(group, 0), f.converted.get(group, 0)
        parts.append(f"{conv / sent:6.1%} of {sent:,}" if sent else "     —")
    return " | ".join(parts)
