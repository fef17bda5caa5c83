"""The churn model through the real engine: replay a history, catch up, report.

Starts the embedded broker and redis-server in a scratch folder, loads the file
with `omnipulse replay`, runs `omnipulse run --until-caught-up` and prints what
`omnipulse model --json` says, with the timings. CDNOW's dates (1997-98) are
before the engine's default `engine.min_event_time`, so a config that allows
them is written next to the services.

    python -m bench.churn_data /tmp/cdnow.jsonl
    python -m bench.churn_engine /tmp/cdnow.jsonl
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson

from connectors.embedded import embedded_services

CONFIG = """\
[engine]
min_event_time = "1990-01-01T00:00:00Z"
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("file", help="JSONL history (e.g. from bench.churn_data)")
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="omnipulse-bench-") as tmp:
        config = Path(tmp) / "omnipulse.toml"
        config.write_text(CONFIG)
        started = time.monotonic()
        with embedded_services(Path(tmp)) as (broker, rds):
            env = dict(
                os.environ,
                KAFKA_BOOTSTRAP_SERVERS=broker.bootstrap_servers,
                REDIS_URL=rds.url,
                OMNIPULSE_CONFIG=str(config),
            )

            def cli(*words: str) -> bytes:
                cmd = [sys.executable, "-m", "omnipulse.cli", *words]
                return subprocess.run(cmd, env=env, check=True, capture_output=True).stdout

            cli("topics", "create")
            cli("replay", args.file)
            loaded = time.monotonic()
            cli("run", "--until-caught-up", "--workers", str(args.workers))
            done = time.monotonic()
            report = orjson.loads(cli("model", "--json"))
    print(
        orjson.dumps(
            {
                "file": args.file,
                "replay_s": round(loaded - started, 1),
                "engine_s": round(done - loaded, 1),
                **{k: v for k, v in report.items() if k != "description"},
            }
        ).decode()
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
