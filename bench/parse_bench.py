"""CPU time of `parse_record` per record, on simulated traffic; no broker, no Redis.

    python -m bench.parse_bench --records 100000 --repeat 5

Builds the records first (simulator reference data, then its event stream,
encoded as a producer would), then times only the parse loop with the process
CPU clock. The best of `--repeat` passes is reported: on a shared machine the
slower passes measure the neighbours. `--bad-share` mixes in the simulator's
malformed records, to see the reject path too.
"""

from __future__ import annotations

import argparse
import itertools
import time
from collections import Counter

from connectors.events import Event, Limits, parse_record
from omnipulse.simulator import Simulator, to_json_bytes


def build(records: int, bad_share: float) -> tuple[list[tuple[str, bytes]], int]:
    """`records` (topic, value) pairs and the wall clock they were made against."""
    now = int(time.time() * 1000)
    # all in the past, so no record trips the far-future check
    start = now - (records + 86_400) * 1000
    sim = Simulator(seed=11, customers=100_000, start_ms=start, bad_share=bad_share)
    stream = itertools.chain(sim.reference_data(), sim.events())
    return [(r.topic, to_json_bytes(r.value)) for r in itertools.islice(stream, records)], now


def one_pass(records: list[tuple[str, bytes]], limits: Limits) -> float:
    """CPU seconds for parsing every record once."""
    started = time.process_time()
    # Results are dropped as they come, as the engine drops a batch's: 100,000 of
    # them kept alive would put the garbage collector's walks over them in the figure.
    for topic, value in records:
        parse_record(topic, value, limits)
    return time.process_time() - started


def outcomes(records: list[tuple[str, bytes]], limits: Limits) -> Counter[str]:
    """Accepted records and reject codes per topic (not timed)."""
    out: Counter[str] = Counter()
    for topic, value in records:
        p = parse_record(topic, value, limits)
        out[f"{topic} {'ok' if isinstance(p, Event) else p.code}"] += 1
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--bad-share", type=float, default=0.0)
    args = parser.parse_args(argv)
    records, now = build(args.records, args.bad_share)
    limits = Limits(now_ms=now)
    total_bytes = sum(len(v) for _, v in records)
    times = [one_pass(records, limits) for _ in range(args.repeat)]
    n = len(records)
    print(f"{n:,} records, {total_bytes / n:.0f} bytes on average")
    for key, count in sorted(outcomes(records, limits).items()):
        print(f"  {key:<28} {count:>8,}")
    per = sorted(t / n * 1e6 for t in times)
    print(f"parse_record: {per[0]:.2f} µs CPU per record (best of {len(per)}; "
          f"median {per[len(per) // 2]:.2f})")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
