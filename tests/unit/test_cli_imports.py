"""What loading the command line for a profile lookup loads.

A customer view runs `omnipulse profile ID` once per lookup; importing the
engine (Bytewax, the Kafka client, the dataflow, the churn model's libraries)
for it would make every lookup take seconds. Checked in a fresh interpreter,
where nothing else has loaded them yet. The full command, against Redis, is
checked the same way in tests/integration/test_profile_cli.py.
"""

from __future__ import annotations

import subprocess
import sys

import orjson

ENGINE_ONLY = {"bytewax", "confluent_kafka", "river", "prometheus_client", "flows"}

IMPORT_PROFILE_PATH = """
import sys
import orjson
import omnipulse.cli
import omnipulse.endpoints
import omnipulse.profile
import state.connection
omnipulse.cli.build_parser()
print(orjson.dumps(sorted(sys.modules)).decode())
"""


def test_the_profile_path_loads_none_of_the_engine() -> None:
    out = subprocess.run(
        [sys.executable, "-c", IMPORT_PROFILE_PATH],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    modules = orjson.loads(out.stdout)
    assert "omnipulse.profile" in modules  # the check saw the lookup's modules
    assert sorted({m.split(".")[0] for m in modules} & ENGINE_ONLY) == []
    assert "omnipulse.runner" not in modules
