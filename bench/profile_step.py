"""Where a batch's time goes: the engine's batch step under cProfile, no Kafka.

    python -m bench.profile_step --events 100000 --customers 100000

Simulated records go straight into `EngineStep.process` in batches of
`engine.batch_size`, against a fresh embedded redis-server, so the figures
are the state and decision path alone. Prints the time per stage of the step
(as a share of the step), the slowest functions, and Redis' own per-command
figures (`INFO commandstats`), which show the server side of each script call.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import itertools
import pstats
import time
from pathlib import Path
from tempfile import TemporaryDirectory

import redis

from common.settings import INPUT_TOPICS, settings_from_dict
from connectors.embedded import EmbeddedRedis
from connectors.kafka_io import PartitionMark, Record
from flows.steps import EngineStep
from omnipulse.simulator import Simulator, to_json_bytes

# The step's stages: (label, module file, function names as cProfile reports them)
STAGES = (
    ("parse and validate", "connectors/events.py", ("parse_record",)),
    ("customers: apply (Lua)", "flows/customers.py", ("apply_customers",)),
    ("inventory and allocation", "flows/commerce.py", ("apply_inventory",)),
    ("BOPIS checks", "flows/commerce.py", ("bopis",)),
    ("judge: segments, timers, churn", "flows/customers.py", ("judge",)),
    ("settle: claims, caps, offsets", "flows/policy.py", ("settle",)),
    ("timer sweep", "flows/steps.py", ("sweep",)),
    ("Redis round trips (part of the above)", "state/errors.py", ("execute", "call")),
)


def records(events: int, customers: int) -> list[Record]:
    now = int(time.time() * 1000)
    sim = Simulator(seed=11, customers=customers, start_ms=now - (events + 86_400) * 1000)
    stream = itertools.chain(sim.reference_data(), itertools.islice(sim.events(), events))
    return [
        Record(r.topic, 0, i, r.key.encode() if r.key else None, to_json_bytes(r.value), now)
        for i, r in enumerate(stream)
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args(argv)
    recs = records(args.events, args.customers)
    with TemporaryDirectory(prefix="omnipulse-profile-") as tmp, EmbeddedRedis(Path(tmp)) as rds:
        settings = settings_from_dict({"redis": {"url": rds.url, "key_prefix": "prof"}})
        step = EngineStep(settings, redis_url=rds.url, live=False)
        step.process([PartitionMark(f"{t}#0", at_end=False) for t in INPUT_TOPICS])
        size = settings.engine.batch_size
        profile = cProfile.Profile()
        started = time.perf_counter()
        profile.enable()
        for i in range(0, len(recs), size):
            step.process(recs[i : i + size])
        profile.disable()
        elapsed = time.perf_counter() - started
        commands = redis.Redis.from_url(rds.url).info("commandstats")
    stats = pstats.Stats(profile)
    table = stats.stats  # type: ignore[attr-defined]

    def cumulative(module: str, names: tuple[str, ...]) -> float:
        return sum(
            v[3] for (path, _, name), v in table.items() if name in names and path.endswith(module)
        )

    total = cumulative("flows/steps.py", ("process",))
    print(f"{len(recs):,} events in {elapsed:.1f} s under the profiler "
          f"({len(recs) / elapsed:,.0f} events/s; the profiler roughly halves it)\n")  # fmt: skip
    print("| stage | share of the step | µs per event |\n|---|---|---|")
    for label, module, names in STAGES:
        ct = cumulative(module, names)
        print(f"| {label} | {ct / total:.0%} | {ct / len(recs) * 1e6:.0f} |")
    print("\nRedis server time per command (INFO commandstats; Lua's inner calls count too):")
    for name, v in sorted(commands.items(), key=lambda kv: -kv[1]["usec"])[:8]:
        print(f"  {name[8:]:<12} {v['calls']:>9,} calls  {v['usec'] / 1e6:6.2f} s  "
              f"{v['usec_per_call']:7.1f} µs/call")  # fmt: skip
    out = io.StringIO()
    pstats.Stats(profile, stream=out).sort_stats("tottime").print_stats(args.top)
    print("\nSlowest functions (own time):")
    print(out.getvalue().split("\n", 6)[-1])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
