"""The location reference file read at start-up (`[allocation] locations_file`).

Same records as the `locations` topic (SPEC §3), one JSON object per line (or a
CSV with those columns), checked by the same event contract. A bad record stops
the start-up with its line number: a store table is too important to load half.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import orjson

from connectors.errors import ReplayError
from connectors.events import Limits, Rejected, parse_record
from connectors.replay import read_events


def read_locations(path: str | Path) -> list[dict[str, Any]]:
    """The validated location records of `path`, in file order."""
    limits = Limits(now_ms=int(time.time() * 1000))
    out = []
    for n, rec in enumerate(read_events(Path(path), topic="locations"), start=1):
        raw = rec.value if isinstance(rec.value, bytes) else orjson.dumps(rec.value)
        parsed = parse_record("locations", raw, limits)
        if isinstance(parsed, Rejected):
            raise ReplayError(f"{path}: record {n}: {parsed.reason}")
        out.append(parsed.data)
    return out
