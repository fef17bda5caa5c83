"""The engine against SPEC §8, in one run: throughput, raw limit, latency, memory.

    python -m bench.engine_bench                     # the full run, ~10 min on 2 cores
    python -m bench.engine_bench --events 200000 --memory-customers 100000 --no-append

One run, on fresh embedded services (the Tansu broker and a redis-server):
1. **Preload** the input topics with simulated traffic (all four streams plus
   locations): `--events` events from `--customers` customers.
2. **Raw limit**: a plain confluent-kafka consumer reads and orjson-parses the
   same topics, no state.
3. **Catch-up**: `omnipulse run --until-caught-up` with 1 worker, then with 2
   (`--processes 2`), each with the default input and with `engine.ordered_input`
   (each run on its own key prefix and consumer group): events/s from the
   command's start to its exit, state, triggers and the final timer sweep included.
4. **Latency**: a live `omnipulse run` on fresh topics fed at half the 1-worker
   catch-up rate, every event stamped with the wall clock as it is sent; the
   opening stock burst and the first seconds of traffic are not measured. For
   immediate triggers (allocation, price alert, BOPIS, reorder): `emitted_at -
   event_ts`, which includes the producer and broker hop, so it bounds ingest ->
   trigger from above. For timer triggers (abandoned cart): `emitted_at` minus
   the deadline the trigger names, less the configured allowed lateness (the
   watermark only passes a deadline that much later by design).
5. **Memory**: `INFO memory` delta over `--memory-customers` customers with one
   in-store order each: `--memory-templates` of them made by the engine (so
   every key it keeps for such a customer is there: profile, orders, dedup
   record, claims, timer, rank, pending churn vector), the rest copies of those
   keys under other ids (see `memory`). `MEMORY USAGE` splits it by kind of
   key (Redis' allocator overhead makes the parts sum to a little less).

Prints one table and appends it (date, machine, commit) to BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import redis
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition

from common.settings import INPUT_TOPICS, TRIGGER_TOPIC_NAMES, Settings
from connectors.embedded import embedded_services
from omnipulse.simulator import Simulator, to_json_bytes
from state.keys import Keys

IMMEDIATE_KINDS = ("allocation", "price_alert", "bopis_suggestion", "reorder")
TIMER_KINDS = ("abandoned_cart",)
PARTITIONS = 2  # per topic: two workers get a partition of every topic each
LATENESS_S = 1  # the latency run's allowed lateness (the default is 5 min)
ABANDON_S = 5  # the latency run's abandoned_after (the default is 1 h)
MEMORY_PREFIX = "mem"
WARM_UP_S = 3  # the latency run's first seconds are sent but not measured

CONFIG = """\
[kafka]
topic_prefix = "{topics}"
consumer_group = "{group}"
partitions = {partitions}

[redis]
key_prefix = "{keys}"

[engine]
allowed_lateness = "{lateness}s"
http_port = 0
ordered_input = {ordered}

[abandoned_cart]
abandoned_after = "{abandon}s"
"""


# ---------------------------------------------------------------- helpers


def machine() -> str:
    cpu = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return f"{os.cpu_count()} cores, {cpu}, {platform.system()}, Python {platform.python_version()}"


def commit() -> str:
    out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], text=True,
                           capture_output=True).stdout.strip()  # fmt: skip
    return (out.stdout.strip() or "unknown") + ("+changes" if dirty else "")


def write_config(folder: Path, name: str, **values: Any) -> Path:
    path = folder / f"{name}.toml"
    values.setdefault("partitions", PARTITIONS)
    values.setdefault("lateness", 300)
    values.setdefault("abandon", 3600)
    values.setdefault("ordered", "false")
    path.write_text(CONFIG.format(**values))
    return path


class Cli:
    """`omnipulse ...` as a user runs it, against the bench's services."""

    def __init__(self, bootstrap: str, redis_url: str) -> None:
        self.env = dict(os.environ, KAFKA_BOOTSTRAP_SERVERS=bootstrap, REDIS_URL=redis_url)

    def command(self, config: Path, *words: str) -> list[str]:
        return [sys.executable, "-m", "omnipulse.cli", "--config", str(config), *words]

    def run(self, config: Path, *words: str) -> None:
        subprocess.run(self.command(config, *words), env=self.env, check=True,
                       stdout=subprocess.DEVNULL)  # fmt: skip

    def start(self, config: Path, *words: str) -> subprocess.Popen[bytes]:
        return subprocess.Popen(self.command(config, *words), env=self.env,
                                stdout=subprocess.DEVNULL)  # fmt: skip


def producer(bootstrap: str) -> Producer:
    return Producer({"bootstrap.servers": bootstrap, "linger.ms": 20,
                     "batch.num.messages": 10_000, "compression.type": "lz4",
                     "queue.buffering.max.messages": 500_000})  # fmt: skip


def produce(p: Producer, topic: str, key: str | None, value: bytes) -> None:
    while True:
        try:
            p.produce(topic, value, key)
            return
        except BufferError:  # the local queue is full: let deliveries drain it
            p.poll(0.05)


def read_to_end(bootstrap: str, topics: list[str], quiet_s: float = 2.0) -> Iterator[Any]:
    """Every record of `topics`. Ends when all partitions reported their end and
    nothing new came for `quiet_s` (the embedded broker's end offset can be early)."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "bench-reader",
                  "enable.partition.eof": True, "auto.offset.reset": "earliest",
                  "enable.auto.commit": False})  # fmt: skip
    meta = c.list_topics(timeout=10).topics
    parts = [TopicPartition(t, p, 0) for t in topics if t in meta for p in meta[t].partitions]
    c.assign(parts)
    ended: set[tuple[str, int]] = set()
    last = time.monotonic()
    try:
        while len(ended) < len(parts) or time.monotonic() - last < quiet_s:
            msgs = c.consume(5000, 0.2)
            for m in msgs:
                if m.error():
                    if m.error().code() == KafkaError._PARTITION_EOF:
                        ended.add((m.topic(), m.partition()))
                    continue
                last = time.monotonic()
                yield m
    finally:
        c.close()


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=1000, method="inclusive")[round(q * 1000) - 1]


# ---------------------------------------------------------------- phases


def preload(bootstrap: str, prefix: str, events: int, customers: int) -> tuple[int, float]:
    now = int(time.time() * 1000)
    # all in the past, so the live engine's "not ahead of the wall clock" check passes
    sim = Simulator(seed=11, customers=customers, start_ms=now - (events + 86_400) * 1000)
    p = producer(bootstrap)
    t0 = time.monotonic()
    n = 0
    for r in itertools.chain(sim.reference_data(), itertools.islice(sim.events(), events)):
        produce(p, prefix + r.topic, r.key, to_json_bytes(r.value))
        n += 1
    p.flush(120)
    return n, time.monotonic() - t0


def raw_limit(bootstrap: str, prefix: str) -> tuple[int, float]:
    t0 = time.monotonic()
    n = 0
    for m in read_to_end(bootstrap, [prefix + t for t in INPUT_TOPICS], quiet_s=0):
        orjson.loads(m.value())
        n += 1
    return n, time.monotonic() - t0


def processed(client: redis.Redis, keys: str) -> int:
    stats = client.hgetall(f"{keys}:stats")
    return sum(int(v) for k, v in stats.items() if k.startswith((b"events:", b"rejected:")))


def catch_up(cli: Cli, config: Path, workers: int) -> float:
    """Seconds to catch up with `workers` Bytewax workers, one process each: threads
    of one process share the interpreter lock, processes do not."""
    t0 = time.monotonic()
    cli.run(config, "run", "--until-caught-up", "--processes", str(workers))
    return time.monotonic() - t0


def latency(
    cli: Cli,
    folder: Path,
    bootstrap: str,
    redis_url: str,
    rate: float,
    seconds: float,
    customers: int,
) -> dict[str, Any]:
    prefix = "lat."
    config = write_config(folder, "latency", topics=prefix, group="lat", keys="lat",
                          lateness=LATENESS_S, abandon=ABANDON_S)  # fmt: skip
    cli.run(config, "topics", "create")
    engine = cli.start(config, "run")
    try:
        time.sleep(3)  # the engine's start-up is not what is measured
        sim = Simulator(seed=12, customers=customers, start_ms=int(time.time() * 1000))
        p = producer(bootstrap)
        p_fast = Producer({"bootstrap.servers": bootstrap, "linger.ms": 1})

        def stamped(value: dict[str, Any] | bytes) -> bytes:
            assert isinstance(value, dict)
            value["ts"] = int(time.time() * 1000)
            return orjson.dumps(value)

        reference = sim.reference_data()
        for r in reference:
            produce(p, prefix + r.topic, r.key, stamped(r.value))
        p.flush(60)
        # The opening stock of every SKU everywhere arrives as one burst; what is
        # measured is the steady state after it, not the burst.
        client = redis.Redis.from_url(redis_url)
        while processed(client, "lat") < len(reference):
            time.sleep(0.2)
        sent = 0
        t0 = time.monotonic()
        measure_from_ms = time.time() * 1000 + WARM_UP_S * 1000
        stream = sim.events()
        while (elapsed := time.monotonic() - t0) < seconds + WARM_UP_S:
            due = int(elapsed * rate) - sent
            for r in itertools.islice(stream, max(due, 0)):
                produce(p_fast, prefix + r.topic, r.key, stamped(r.value))
                sent += 1
            p_fast.poll(0)
            time.sleep(0.005)
        p_fast.flush(60)
        send_s = time.monotonic() - t0
        time.sleep(ABANDON_S + LATENESS_S + 5)  # the last carts' deadlines, then some
    finally:
        engine.send_signal(signal.SIGINT)
        engine.wait(60)
    immediate: list[float] = []
    late: list[float] = []
    topics = [prefix + t for t in TRIGGER_TOPIC_NAMES]
    for m in read_to_end(bootstrap, topics):
        t = orjson.loads(m.value())
        emitted = datetime.fromisoformat(t["emitted_at"]).timestamp() * 1000
        cause = datetime.fromisoformat(t["event_ts"]).timestamp() * 1000
        if cause < measure_from_ms:
            continue
        if t["kind"] in IMMEDIATE_KINDS:
            immediate.append(emitted - cause)
        elif t["kind"] in TIMER_KINDS:
            late.append(emitted - cause - LATENESS_S * 1000)
    return {
        "sent": sent,
        "rate": sent / send_s,
        "immediate": len(immediate),
        "p50": percentile(immediate, 0.50),
        "p95": percentile(immediate, 0.95),
        "p99": percentile(immediate, 0.99),
        "timers": len(late),
        "late_p50": percentile(late, 0.50),
        "late_p99": percentile(late, 0.99),
        "late_max": max(late, default=float("nan")),
    }


def memory(
    cli: Cli, folder: Path, bootstrap: str, redis_url: str, customers: int, templates: int
) -> dict[str, Any]:
    """Bytes per customer at `customers` one-order customers.

    `templates` of them are created by the engine itself (topics, batch step,
    trigger sink: every key it keeps for such a customer); the rest are copies
    of those keys under other customer ids of the same length (DUMP/RESTORE,
    same TTLs, and their members in the timer and rank sets), which takes a
    minute instead of the quarter hour the engine would need for a million.
    """
    client = redis.Redis.from_url(redis_url)
    client.flushall()
    before = int(client.info("memory")["used_memory"])
    config = write_config(folder, "memory", topics="mem.", group="mem", keys=MEMORY_PREFIX)
    cli.run(config, "topics", "create")
    p = producer(bootstrap)
    t0 = int(time.time() * 1000) - 30 * 86_400_000
    for i in range(templates):
        order = {
            "event_id": f"m-{i}", "type": "order_placed", "ts": t0 + i, "channel": "store",
            "customer_id": customer_id(i), "order_id": f"mo-{i}",
            "lines": [{"sku": f"SKU-{i % 400:04d}", "qty": 1, "unit_price": "19.90"}],
            "total": "19.90", "currency": "CNY",
            "fulfilment": {"mode": "in_store", "store_id": f"S{i % 24:02d}"},
        }  # fmt: skip
        produce(p, "mem.orders", order["customer_id"], orjson.dumps(order))
    p.flush(60)
    cli.run(config, "run", "--until-caught-up")
    keys = Keys(MEMORY_PREFIX, Settings().engine.timer_shards)
    copy_customers(client, keys, templates, customers)
    after = int(client.info("memory")["used_memory"])
    split = memory_split(client, keys, customers)
    return {"customers": customers, "bytes": (after - before) / customers, "split": split}


def customer_id(i: int) -> str:
    return f"cust-{i:07d}"


def copy_customers(client: redis.Redis, keys: Keys, templates: int, customers: int) -> None:
    """Copy the templates' keys until there are `customers` customers."""
    own: dict[str, list[bytes]] = {}
    for key in client.scan_iter(match=f"{MEMORY_PREFIX}:{{c:*", count=10_000):
        cid = key.split(b"{c:", 1)[1].split(b"}", 1)[0].decode()
        own.setdefault(cid, []).append(key)
    # the order's own keys outside the customer's slot: the sale's stock marker
    for i in range(templates):
        marker = f"{MEMORY_PREFIX}:{{inv}}:e:m-{i}".encode()
        if customer_id(i) in own and client.exists(marker):
            own[customer_id(i)].append(marker)
    pipe = client.pipeline(transaction=False)
    for cid in sorted(own):
        for key in own[cid]:
            pipe.dump(key)
            pipe.pttl(key)
        pipe.zscore(keys.timers(keys.timer_shard(cid)), cid)
        pipe.zscore(keys.monetary, cid)
    replies = iter(pipe.execute())
    shapes = []
    for cid in sorted(own):
        dumped = [(key, next(replies), next(replies)) for key in own[cid]]
        shapes.append((cid, dumped, next(replies), next(replies)))
    made = templates
    while made < customers:
        for cid, dumped, timer, rank in shapes:
            if made >= customers:
                break
            new = customer_id(made)
            made += 1
            for key, payload, ttl in dumped:
                if payload is not None:
                    name = key.replace(cid.encode(), new.encode(), 1)
                    if b"{inv}:e:m-" in key:
                        name = key.rsplit(b"-", 1)[0] + b"-" + str(made - 1).encode()
                    pipe.restore(name, max(int(ttl), 0), payload, replace=True)
            if timer is not None:
                pipe.zadd(keys.timers(keys.timer_shard(new)), {new: timer})
            if rank is not None:
                pipe.zadd(keys.monetary, {new: rank})
            if len(pipe) >= 20_000:
                pipe.execute()
    pipe.execute()


def realistic_memory(client: redis.Redis, prefix: str, before: int) -> dict[str, Any]:
    """Bytes per known customer after a catch-up: simulated histories, anonymous
    visitors, inventory and all."""
    known = int(client.hget(Keys(prefix).agg, "customers") or 0)
    used = int(client.info("memory")["used_memory"]) - before
    split = memory_split(client, Keys(prefix, Settings().engine.timer_shards), known or 1)
    return {"customers": known, "bytes": used / max(known, 1), "split": split}


KEY_KINDS = (  # (kind, a substring of its key names), first match wins
    ("inventory", "{inv}"),
    ("orders", "}:o"),
    ("dedup", "}:d"),
    ("claims", "}:t:"),
    ("daily cap", "}:cap:"),
    ("profile", "{c:"),
    ("anonymous visitors", "{a:"),
    ("order and SKU trigger claims", "{t:"),
    ("hourly sales", "{sales"),
)


def memory_split(client: redis.Redis, keys: Any, customers: int, sample: int = 50_000) -> dict:
    """Bytes per customer by kind of key: the few big shared sets exactly, the
    many small keys from a SCAN sample scaled to the key count."""
    shared = [keys.monetary, keys.agg, *(keys.timers(s) for s in range(keys.timer_shards))]
    split = {"timer and rank sets": sum(int(client.memory_usage(k) or 0) for k in shared)}
    seen: dict[str, int] = {}
    names = []
    for key in client.scan_iter(count=5000):
        name = key.decode()
        if name not in shared:
            names.append(name)
        if len(names) >= sample:
            break
    pipe = client.pipeline(transaction=False)
    for name in names:
        pipe.memory_usage(name)
    for name, size in zip(names, pipe.execute(), strict=True):
        kind = next((k for k, part in KEY_KINDS if part in name), "other")
        seen[kind] = seen.get(kind, 0) + int(size or 0)
    scale = (client.dbsize() - len(shared)) / max(len(names), 1)
    split.update({k: v * scale for k, v in seen.items()})
    return {k: v / customers for k, v in sorted(split.items(), key=lambda kv: -kv[1])}


# ---------------------------------------------------------------- report


def table(r: dict[str, Any]) -> str:
    def row(what: str, measured: str, bar: str, ok: bool | None) -> str:
        mark = "" if ok is None else ("met" if ok else "**not met**")
        return f"| {what} | {measured} | {bar} | {mark} |"

    c1, c2, raw, lat, mem = r["c1"], r["c2"], r["raw"], r["latency"], r["memory"]
    o1, o2 = r["o1"], r["o2"]
    split = ", ".join(f"{k} {v:.0f}" for k, v in mem["split"].items() if v >= 1)
    real = r["realistic"]
    real_split = ", ".join(f"{k} {v:.0f}" for k, v in real["split"].items() if v >= 1)
    lines = [
        f"### {r['date']} · commit {r['commit']}",
        "",
        f"Machine: {r['machine']}. Input: {r['events']:,} events from "
        f"{r['customers']:,} simulated customers, {PARTITIONS} partitions per topic, "
        f"preloaded in {r['preload_s']:.0f} s. Whole run: {r['total_s']:.0f} s.",
        "",
        "| what | measured | bar (SPEC §8) | |",
        "|---|---|---|---|",
        row("raw limit: consume + orjson parse, no state", f"{raw:,.0f} events/s", "", None),
        row("catch-up, 1 worker", f"{c1:,.0f} events/s", "≥ 50,000 (stretch 100,000)",
            c1 >= 50_000),
        row("catch-up, 2 workers (2 processes)", f"{c2:,.0f} events/s", "≥ 50,000",
            c2 >= 50_000),
        row("catch-up, ordered input, 1 worker", f"{o1:,.0f} events/s", "≥ 50,000",
            o1 >= 50_000),
        row("catch-up, ordered input, 2 workers (2 processes)", f"{o2:,.0f} events/s",
            "≥ 50,000", o2 >= 50_000),
        row("best catch-up / raw limit", f"{max(c1, c2, o1, o2) / raw:.3f}", "≥ 0.3",
            max(c1, c2, o1, o2) / raw >= 0.3),
        row(f"event → immediate trigger at {lat['rate']:,.0f} events/s "
            f"({lat['immediate']:,} triggers)",
            f"p50 {lat['p50']:.0f} ms, p95 {lat['p95']:.0f} ms, p99 {lat['p99']:.0f} ms",
            "p99 ≤ 500 ms", lat["p99"] <= 500),
        row(f"timer lateness, abandoned cart ({lat['timers']:,} triggers)",
            f"p50 {lat['late_p50']:.0f} ms, p99 {lat['late_p99']:.0f} ms, "
            f"max {lat['late_max']:.0f} ms", "≤ 1 s", lat["late_max"] <= 1000),
        row(f"Redis memory per customer at {mem['customers']:,} customers (one order each)",
            f"{mem['bytes']:.0f} bytes ({split})", "≤ 400 bytes", mem["bytes"] <= 400),
        row(f"the same after the 1-worker catch-up ({real['customers']:,} customers, "
            "their simulated histories)", f"{real['bytes']:.0f} bytes ({real_split})", "", None),
    ]  # fmt: skip
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--memory-customers", type=int, default=1_000_000)
    parser.add_argument("--memory-templates", type=int, default=20_000,
                        help="customers the engine creates; the rest are copies")  # fmt: skip
    parser.add_argument("--latency-seconds", type=float, default=30.0)
    parser.add_argument("--no-append", action="store_true", help="print only")
    parser.add_argument("--out", default="BENCHMARKS.md")
    args = parser.parse_args(argv)
    started = time.monotonic()
    result: dict[str, Any] = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine(),
        "commit": commit(),
        "events": args.events,
        "customers": args.customers,
    }
    with (
        tempfile.TemporaryDirectory(prefix="omnipulse-bench-") as tmp,
        embedded_services(Path(tmp)) as (broker, rds),
    ):
        folder, bootstrap = Path(tmp), broker.bootstrap_servers
        cli = Cli(bootstrap, rds.url)
        client = redis.Redis.from_url(rds.url)
        c1 = write_config(folder, "c1", topics="in.", group="c1", keys="c1")
        c2 = write_config(folder, "c2", topics="in.", group="c2", keys="c2")
        o1 = write_config(folder, "o1", topics="in.", group="o1", keys="o1", ordered="true")
        o2 = write_config(folder, "o2", topics="in.", group="o2", keys="o2", ordered="true")
        cli.run(c1, "topics", "create")
        loaded, result["preload_s"] = preload(bootstrap, "in.", args.events, args.customers)
        step("preloaded", loaded, result["preload_s"])
        n, secs = raw_limit(bootstrap, "in.")
        result["raw"] = n / secs
        step("raw limit", n, secs)
        loaded_memory = int(client.info("memory")["used_memory"])
        phases = (("c1", c1, 1), ("c2", c2, 2), ("o1", o1, 1), ("o2", o2, 2))
        for name, config, workers in phases:
            secs = catch_up(cli, config, workers)
            done = processed(client, name)
            if done != loaded:
                raise SystemExit(f"catch-up with {workers} worker(s) processed {done} of {loaded}")
            result[name] = done / secs
            step(f"catch-up {name}, {workers} worker(s)", done, secs)
            if name == "c1":
                result["realistic"] = realistic_memory(client, name, loaded_memory)
            client.flushall()  # the next phase starts from an empty server
            loaded_memory = int(client.info("memory")["used_memory"])
        result["latency"] = latency(
            cli,
            folder,
            bootstrap,
            rds.url,
            result["c1"] / 2,
            args.latency_seconds,
            args.customers,
        )
        step("latency", result["latency"]["sent"], args.latency_seconds)
        client.flushall()
        t0 = time.monotonic()
        result["memory"] = memory(
            cli, folder, bootstrap, rds.url, args.memory_customers, args.memory_templates
        )
        step("memory fill", args.memory_customers, time.monotonic() - t0)
    result["total_s"] = time.monotonic() - started
    text = table(result)
    print(text)
    if not args.no_append:
        with open(args.out, "a", encoding="utf-8") as f:
            f.write("\n" + text)
    return 0


def step(what: str, n: int, secs: float) -> None:
    rate = f" = {n / secs:,.0f}/s" if secs else ""
    print(f"  {what}: {n:,} in {secs:.1f} s{rate}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
