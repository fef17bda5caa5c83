"""The `omnipulse` command line (SPEC §7).

Each sub-command imports what it needs when it runs, not at the top of this
module: `omnipulse profile` is called per lookup by customer views and support
tools, and loading Bytewax, the Kafka client and the dataflow for it would
cost over a second a call.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import time
from collections.abc import Iterable, Iterator
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import orjson

from common.errors import OmnipulseError
from common.settings import Settings, load_settings, secret_values
from omnipulse import logs
from operators.clock import DAY_MS, datetime_to_ms

if TYPE_CHECKING:
    import redis

log = logging.getLogger("omnipulse")


def _settings(args: argparse.Namespace) -> Settings:
    settings = load_settings(args.config)
    logs.redact(secret_values(settings))
    return settings


def cmd_run(args: argparse.Namespace) -> int:
    from connectors.kafka_io import SHUTDOWN
    from omnipulse.endpoints import endpoints
    from omnipulse.runner import create_topics, run_engine

    # Bytewax stops abruptly on a KeyboardInterrupt, without flushing what is in
    # flight; ending every input partition instead lets the dataflow finish:
    # the current batch is applied, its triggers flushed, its offsets committed.
    def stop(signum: int, _frame: object) -> None:
        if SHUTDOWN.is_set():
            log.warning("signal %d again: stopping now, without waiting for the batch", signum)
            raise KeyboardInterrupt
        log.info("signal %d: finishing the current batches, then stopping", signum)
        SHUTDOWN.set()

    settings = _settings(args)
    with endpoints(settings, start_embedded=True) as ep:
        create_topics(settings, ep.bootstrap)
        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGTERM, stop)
        log.info("engine starting (%s)", "until caught up" if args.until_caught_up else "live")
        run_engine(
            settings,
            ep,
            until_caught_up=args.until_caught_up,
            workers=args.workers,
            processes=args.processes,
            process_id=args.process_id if args.addresses else None,
            addresses=args.addresses,
        )
        log.info("engine stopped%s", " on a signal" if SHUTDOWN.is_set() else "")
    return 0


def cmd_topics(args: argparse.Namespace) -> int:
    from omnipulse.endpoints import endpoints
    from omnipulse.runner import create_topics

    settings = _settings(args)
    with endpoints(settings, start_embedded=False) as ep:
        created = create_topics(settings, ep.bootstrap)
    print(orjson.dumps({"created": created}).decode())
    return 0


def cmd_lag(args: argparse.Namespace) -> int:
    from connectors.kafka_io import consumer_config
    from connectors.lag import consumer_lag
    from omnipulse.endpoints import endpoints

    settings = _settings(args)
    k = settings.kafka
    with endpoints(settings, start_embedded=False) as ep:
        _check_kafka(settings, ep.bootstrap)
        rows = consumer_lag(
            consumer_config(ep.bootstrap, k.consumer_group, dict(k.extra)),
            list(k.input_topics()),
        )
    if args.json:
        print(orjson.dumps([r.as_dict() for r in rows]).decode())
        return 0
    print(f"consumer group {k.consumer_group!r}")
    print(f"{'topic':<32} {'partition':>9} {'committed':>12} {'end':>12} {'lag':>10}")
    for r in rows:
        done = "-" if r.committed is None else str(r.committed)
        print(f"{r.topic:<32} {r.partition:>9} {done:>12} {r.end:>12} {r.lag:>10}")
    print(f"{'total':<32} {'':>9} {'':>12} {'':>12} {sum(r.lag for r in rows):>10}")
    return 0


def _redis(url: str) -> redis.Redis:
    """A client for a CLI command, checked first so a bad password is one clear line."""
    import redis

    from state.connection import check_redis

    check_redis(url)
    return redis.Redis.from_url(url)


def _check_kafka(settings: Settings, bootstrap: str) -> None:
    """Bounded first contact, so wrong security settings fail in seconds with one line."""
    from connectors.kafka_check import check_kafka

    check_kafka({"bootstrap.servers": bootstrap, **dict(settings.kafka.extra)})


def cmd_model(args: argparse.Namespace) -> int:
    from omnipulse.endpoints import endpoints
    from state.model import ModelStore

    settings = _settings(args)
    with endpoints(settings, start_embedded=False) as ep, _redis(ep.redis_url) as r:
        store = ModelStore(r, settings.redis.key_prefix)
        header = store.header()
        model = store.load()
        queued = store.queued()
    report = {
        **model.metrics(),
        "saved_at": (header or {}).get("saved_at"),
        "version": (header or {}).get("version"),
        "labels_queued": queued,
    }
    if args.json:
        print(orjson.dumps({**report, "description": model.describe()}).decode())
        return 0
    print(model.describe())
    for name, value in report.items():
        print(f"{name:>20}: {value}")
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    print(orjson.dumps(_settings(args).masked(), option=orjson.OPT_INDENT_2).decode())
    return 0


def cmd_profile(args: argparse.Namespace) -> int:
    from omnipulse.endpoints import endpoints
    from omnipulse.profile import read_profile
    from state.connection import check_redis

    settings = _settings(args)
    with endpoints(settings, start_embedded=False) as ep:
        check_redis(ep.redis_url)
        prof = read_profile(settings, ep.redis_url, args.customer_id, raw=not args.pseudonym)
    if prof is None:
        print(f"omnipulse: no profile for customer {args.customer_id!r}", file=sys.stderr)
        return 1
    print(orjson.dumps(prof, option=orjson.OPT_INDENT_2).decode())
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from omnipulse.endpoints import endpoints
    from omnipulse.report import as_json, as_table, read_report
    from state.connection import check_redis

    settings = _settings(args)
    with endpoints(settings, start_embedded=False) as ep:
        check_redis(ep.redis_url)
        rep = read_report(
            settings,
            ep.redis_url,
            hours=args.hours,
            since=args.since,
            until=args.until,
            channels=args.channel,
        )
    print(orjson.dumps(as_json(rep)).decode() if args.json else as_table(rep))
    return 0


def produce_records(
    settings: Settings,
    bootstrap: str,
    records: Iterable[tuple[str, str | None, bytes]],
    *,
    rate: float | None = None,
    limit: int | None = None,
    until: float | None = None,
) -> int:
    """Produce (logical topic, key, value) records, paced to `rate` per second."""
    from confluent_kafka import Producer

    from connectors.kafka_io import producer_config

    producer = Producer(producer_config(bootstrap, dict(settings.kafka.extra)))
    sent = 0
    started = time.monotonic()
    for topic, key, value in records:
        if limit is not None and sent >= limit:
            break
        if until is not None and time.monotonic() >= until:
            break
        while True:
            try:
                producer.produce(settings.kafka.topic(topic), value, key.encode() if key else None)
                break
            except BufferError:
                producer.poll(0.05)  # local queue full: let deliveries drain
        sent += 1
        if rate and sent % 100 == 0:
            ahead = sent / rate - (time.monotonic() - started)
            if ahead > 0:
                time.sleep(ahead)
        producer.poll(0)
    producer.flush(30)
    return sent


def _sim_records(args: argparse.Namespace) -> Iterator[tuple[str, str | None, bytes]]:
    from omnipulse.simulator import Simulator, to_json_bytes

    start = (
        args.start_ms
        if args.start_ms is not None
        else int(time.time() * 1000) - args.history_days * DAY_MS
    )
    sim = Simulator(
        seed=args.seed,
        customers=args.customers,
        start_ms=start,
        time_scale=args.time_scale,
        bad_share=args.bad_share,
    )
    for rec in sim.reference_data():
        yield rec.topic, rec.key, to_json_bytes(rec.value)
    wall_ms = int(time.time() * 1000)
    for rec in sim.events():
        if isinstance(rec.value, dict) and _event_ms(rec.value.get("ts")) > wall_ms:
            log.info("simulated time has reached the present: stopping the simulator")
            return
        yield rec.topic, rec.key, to_json_bytes(rec.value)


def _event_ms(ts: object) -> int:
    if isinstance(ts, int):
        return ts
    if isinstance(ts, str):
        return datetime_to_ms(datetime.fromisoformat(ts))
    return 0


def cmd_simulate(args: argparse.Namespace) -> int:
    from omnipulse.endpoints import endpoints

    settings = _settings(args)
    with endpoints(settings, start_embedded=False) as ep:
        _check_kafka(settings, ep.bootstrap)
        until = time.monotonic() + args.duration if args.duration else None
        n = produce_records(
            settings,
            ep.bootstrap,
            _sim_records(args),
            rate=args.rate,
            limit=args.events,
            until=until,
        )
    print(orjson.dumps({"produced": n}).decode())
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    from connectors.replay import read_events
    from omnipulse.endpoints import endpoints
    from omnipulse.simulator import to_json_bytes

    settings = _settings(args)
    mapping = dict(item.split("=", 1) for item in args.map or [])
    recs = read_events(
        Path(args.file), fmt=args.format, topic=args.topic, column_map=mapping or None
    )
    with endpoints(settings, start_embedded=False) as ep:
        _check_kafka(settings, ep.bootstrap)
        n = produce_records(
            settings,
            ep.bootstrap,
            ((r.topic, r.key, to_json_bytes(r.value)) for r in recs),
            rate=args.rate,
        )
    print(orjson.dumps({"produced": n}).decode())
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from omnipulse.demo import run_demo

    return run_demo(_settings(args), args)


def _sim_options(p: argparse.ArgumentParser, *, rate: float | None, time_scale: float) -> None:
    p.add_argument(
        "--rate", type=float, default=rate, help="events per second (default: as fast as possible)"
    )
    p.add_argument("--duration", type=float, default=None, help="stop after this many seconds")
    p.add_argument("--events", type=int, default=None, help="stop after this many events")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--customers", type=int, default=5000)
    p.add_argument(
        "--time-scale", type=float, default=time_scale, help="simulated seconds per event"
    )
    p.add_argument("--bad-share", type=float, default=0.001, help="share of malformed records")
    p.add_argument("--start-ms", type=int, default=None, help="event time of the first event")
    p.add_argument("--history-days", type=int, default=400, help="start this many days before now")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="omnipulse", description=__doc__)
    parser.add_argument(
        "--config", help="TOML file (default: $OMNIPULSE_CONFIG, else built-in defaults)"
    )
    parser.add_argument("-v", "--verbose", action="store_true")
    parser.add_argument(
        "--log-format",
        choices=logs.FORMATS,
        default=os.environ.get(logs.FORMAT_ENV) or "text",
        help=f"text, or json: one JSON object per line (default: ${logs.FORMAT_ENV}, else text)",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run", help="run the engine")
    p.add_argument(
        "--until-caught-up",
        action="store_true",
        help="process what the topics hold, fire due timers, exit",
    )
    p.add_argument("--workers", type=int, default=1, help="worker threads in each process")
    p.add_argument(
        "--processes",
        type=int,
        default=1,
        help="local processes forming one cluster (this one and P-1 children)",
    )
    p.add_argument(
        "--addresses",
        type=lambda v: [a for a in v.split(",") if a],
        default=None,
        metavar="HOST:PORT,...",
        help="join a cluster started elsewhere: every member's address, in process-id order",
    )
    p.add_argument("--process-id", type=int, default=0, help="this process's index in --addresses")
    p.set_defaults(fn=cmd_run)

    p = sub.add_parser("simulate", help="produce realistic omnichannel traffic")
    _sim_options(p, rate=2000.0, time_scale=1.0)
    p.set_defaults(fn=cmd_simulate)

    p = sub.add_parser("replay", help="load historical events from a JSONL or CSV file")
    p.add_argument("file")
    p.add_argument("--format", choices=["jsonl", "csv"], default=None)
    p.add_argument("--topic", default=None, help="topic for records that do not name one")
    p.add_argument("--map", action="append", metavar="FIELD=COLUMN", help="CSV column mapping")
    p.add_argument("--rate", type=float, default=None)
    p.set_defaults(fn=cmd_replay)

    p = sub.add_parser("profile", help="print a customer's profile as JSON")
    p.add_argument("customer_id")
    p.add_argument(
        "--pseudonym",
        action="store_true",
        help="with [privacy] pseudonymize: the id is a pseudonym already (as in a trigger)",
    )
    p.set_defaults(fn=cmd_profile)

    p = sub.add_parser("lag", help="consumer lag of the engine's group per input partition")
    p.add_argument("--json", action="store_true", help="one JSON list instead of a table")
    p.set_defaults(fn=cmd_lag)

    p = sub.add_parser("report", help="orders, revenue, AOV and conversion per channel per hour")
    p.add_argument("--hours", type=int, default=24, help="the last N hours (default 24)")
    p.add_argument("--since", help="first hour (RFC 3339, or local 2026-11-22T10)")
    p.add_argument("--until", help="last hour (default: the newest event's)")
    p.add_argument("--channel", action="append", help="only this channel (repeatable)")
    p.add_argument("--json", action="store_true", help="one JSON object instead of a table")
    p.set_defaults(fn=cmd_report)

    p = sub.add_parser("model", help="the churn model: description and progressive metrics")
    p.add_argument("--json", action="store_true", help="one JSON object instead of text")
    p.set_defaults(fn=cmd_model)

    p = sub.add_parser("topics", help="manage topics")
    p.add_argument("action", choices=["create"])
    p.set_defaults(fn=cmd_topics)

    p = sub.add_parser("config", help="show the effective configuration (secrets masked)")
    p.add_argument("action", choices=["show"])
    p.set_defaults(fn=cmd_config)

    p = sub.add_parser("demo", help="embedded services + simulator + engine, with a live view")
    _sim_options(p, rate=3000.0, time_scale=120.0)
    p.set_defaults(fn=cmd_demo)
    return parser


def _interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logs.configure(logging.DEBUG if args.verbose else logging.INFO, args.log_format)
    # SIGTERM (docker stop, kill) takes the same clean path as Ctrl-C;
    # `run` replaces both with a handler that drains the dataflow.
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        return args.fn(args)
    except OmnipulseError as ex:
        print(logs.fatal_line(str(ex), args.log_format), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
