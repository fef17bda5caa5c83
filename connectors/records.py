"""Input records as a producer writes them, and the partitioning contract's keys (SPEC §2).

The simulator and `omnipulse replay` both produce `SimRecord`s; `record_key`
is the one place that says which key an event is produced under.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

# The input topics in the order a producer should fill them (reference data first).
TOPICS = ("locations", "stock", "clicks", "carts", "orders")


@dataclass(frozen=True, slots=True)
class SimRecord:
    """One record for a logical input topic; ``value`` is bytes only for malformed input."""

    topic: str
    key: str | None
    value: dict[str, Any] | bytes


def to_json_bytes(value: dict[str, Any] | bytes) -> bytes:
    """Encode a record value for Kafka; raw (malformed) bytes pass through unchanged."""
    return value if isinstance(value, bytes) else orjson.dumps(value)


def record_key(topic: str, value: dict[str, Any]) -> str | None:
    """The partition key of SPEC §2: customer (or anonymous id), SKU or location id."""
    if topic in ("clicks", "carts", "orders"):
        k = value.get("customer_id") or value.get("anonymous_id")
    elif topic == "stock":
        k = value.get("sku")
    elif topic == "locations":
        k = value.get("location_id")
    else:
        k = None
    return None if k is None else str(k)
