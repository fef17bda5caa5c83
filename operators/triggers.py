"""Trigger records (SPEC §4): deterministic ids, the shape marketing tools read."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

MARKETING_KINDS = frozenset(
    {
        "abandoned_cart",
        "bopis_suggestion",
        "churn_risk",
        "segment_change",
        "tier_change",
        "win_back",
        "vip_invitation",
        "journey_step",
    }
)


def money(cents: int) -> str:
    """Cents as the exact decimal string triggers carry: 1999 -> "19.99"."""
    sign = "-" if cents < 0 else ""
    return f"{sign}{abs(cents) // 100}.{abs(cents) % 100:02d}"


def trigger_id(kind: str, subject: str, cause: str) -> str:
    """Same (kind, subject, cause) -> same id, so replays de-duplicate downstream."""
    digest = hashlib.blake2b(f"{kind}\x1f{subject}\x1f{cause}".encode(), digest_size=16)
    return digest.hexdigest()


def in_holdout(customer_id: str, share: float) -> bool:
    """Deterministic control group: a stable hash of the id, compared to the share."""
    h = hashlib.blake2b(customer_id.encode(), digest_size=8).digest()
    return int.from_bytes(h, "big") / 2**64 < share


@dataclass(slots=True)
class Trigger:
    """One decision. `emitted_at` is stamped by the sink, at emission."""

    kind: str
    subject_key: str  # "customer_id", "sku", "order_id" or "location_id"
    subject: str
    cause: str
    event_ts: int
    reason: dict[str, Any]
    payload: dict[str, Any]
    holdout: bool = False
    trigger_id: str = field(default="")

    def __post_init__(self) -> None:
        if not self.trigger_id:
            self.trigger_id = trigger_id(self.kind, self.subject, self.cause)

    def to_record(self, emitted_at_ms: int) -> dict[str, Any]:
        return {
            "trigger_id": self.trigger_id,
            "kind": self.kind,
            self.subject_key: self.subject,
            "event_ts": self.event_ts,
            "emitted_at": emitted_at_ms,
            "reason": self.reason,
            "payload": self.payload,
            "holdout": self.holdout,
        }
