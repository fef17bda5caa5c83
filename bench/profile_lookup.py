"""Wall time of one `omnipulse profile ID`, as a customer view calls it.

    python -m bench.profile_lookup --runs 7 [--before DIR] [--no-bytecode-cache]

Starts the embedded broker and redis-server, puts one customer's three orders
through `omnipulse replay` and `omnipulse run --until-caught-up`, then runs
`omnipulse profile` as a fresh process per lookup: one untimed call, then
`--runs` timed ones. Prints each call's wall time, the median, and the median
CPU time of the process (user + system), which moves less than wall time on a
shared machine.

`--before DIR` also times the source tree in DIR (an earlier commit, e.g.
`git archive REV | tar -x -C DIR`), in turns with this checkout, on the same
services and data, with the same installed packages; both must print the same
profile.

By default a call reads the compiled bytecode the untimed call cached, as an
installed package does; `--no-bytecode-cache` makes every call compile the
project's modules from source.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson

from bench.engine_bench import commit, machine
from connectors.embedded import embedded_services

CUSTOMER = "cust-42"
HERE = Path(__file__).resolve().parents[1]


def orders() -> bytes:
    """Three orders of one customer, a day apart, as replay reads them."""
    return b"".join(
        orjson.dumps(
            {
                "topic": "orders",
                "type": "order_placed",
                "ts": f"2025-01-{6 + i:02d}T09:00:00Z",
                "channel": "web",
                "customer_id": CUSTOMER,
                "order_id": f"o{i}",
                "event_id": f"e{i}",
                "lines": [{"sku": "SKU-1", "qty": 1, "unit_price": "88.80"}],
                "total": "88.80",
                "currency": "CNY",
                "fulfilment": {"mode": "delivery", "lat": 31.23, "lon": 121.47},
            }
        )
        + b"\n"
        for i in range(3)
    )


def timed(cmd: list[str], env: dict[str, str], cwd: Path) -> tuple[bytes, float, float]:
    """Standard output, wall seconds and CPU seconds of one run of `cmd`."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    out = subprocess.run(cmd, env=env, cwd=cwd, check=True, capture_output=True).stdout
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    return out, wall, cpu


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--before", type=Path, help="an earlier commit's source tree")
    parser.add_argument("--no-bytecode-cache", action="store_true")
    args = parser.parse_args(argv)
    omnipulse = str(Path(sys.executable).with_name("omnipulse"))
    print(f"machine: {machine()}; load average {os.getloadavg()[0]:.2f}; commit {commit()}")
    with (
        tempfile.TemporaryDirectory(prefix="omnipulse-lookup-") as tmp,
        embedded_services(Path(tmp)) as (broker, rds),
    ):
        folder = Path(tmp)
        env = dict(
            os.environ,
            KAFKA_BOOTSTRAP_SERVERS=broker.bootstrap_servers,
            REDIS_URL=rds.url,
            OMNIPULSE_TOPIC_PREFIX="lookup.",
            OMNIPULSE_KEY_PREFIX="lookup",
            OMNIPULSE_HTTP_PORT="0",
        )
        env.pop("OMNIPULSE_CONFIG", None)
        if args.no_bytecode_cache:
            env["PYTHONDONTWRITEBYTECODE"] = "1"
        else:
            # Cached in the temporary folder: the source trees stay as they are.
            env.pop("PYTHONDONTWRITEBYTECODE", None)
            env["PYTHONPYCACHEPREFIX"] = str(folder / "pycache")
        (folder / "orders.jsonl").write_bytes(orders())
        for words in (
            ("topics", "create"),
            ("replay", "orders.jsonl"),
            ("run", "--until-caught-up"),
        ):
            subprocess.run(
                [omnipulse, *words], env=env, cwd=folder, check=True, capture_output=True
            )

        trees = {"this checkout": HERE}
        if args.before:
            trees = {"before": args.before.resolve(), **trees}
        envs = {name: dict(env, PYTHONPATH=str(tree)) for name, tree in trees.items()}
        cmd = [omnipulse, "profile", CUSTOMER]
        answers = {name: timed(cmd, e, folder)[0] for name, e in envs.items()}  # untimed
        if len(set(answers.values())) != 1:
            raise SystemExit(f"the trees print different profiles: {answers}")
        walls: dict[str, list[float]] = {name: [] for name in envs}
        cpus: dict[str, list[float]] = {name: [] for name in envs}
        for _ in range(args.runs):
            for name, e in envs.items():
                _, wall, cpu = timed(cmd, e, folder)
                walls[name].append(wall)
                cpus[name].append(cpu)
    cache = "none" if args.no_bytecode_cache else "cached"
    for name in envs:
        each = " ".join(f"{w:.3f}" for w in walls[name])
        print(
            f"{name} (bytecode {cache}): median {statistics.median(walls[name]):.3f} s wall, "
            f"{statistics.median(cpus[name]):.3f} s CPU; runs {each}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
