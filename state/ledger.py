"""Emitted-once claims, daily caps, held triggers and uplift exposures in Redis.

A customer's triggers are settled by one Lua call next to the profile
(`claim_triggers.lua`), so the cap count, the claim, the exposure and the
customer's outbox entry (what goes out, until delivered: `state.outbox`)
change together. Triggers about a SKU or an order are claimed with a SET NX
whose value is the settlement's token, so a restart can tell which settlement
won the claim. Both are queued on a caller's pipeline, so they share the
batch's last round trip with the labels, timers and counters.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

import orjson
import redis

from state.keys import Keys
from state.replies import as_list

CAP_TTL_S = 2 * 86_400  # a day's count is needed until that day has surely passed


@dataclass(frozen=True, slots=True)
class ClaimItem:
    """One customer trigger to settle."""

    trigger_id: str
    kind: str
    event_ts: int
    day: int  # local calendar day of event_ts (the cap's day)
    marketing: bool
    holdout: bool
    release_ms: int  # end of the quiet hours it falls in; 0 = not in quiet hours
    record: dict[str, Any]  # the trigger record, kept if it has to be held


@dataclass(frozen=True, slots=True)
class CustomerSettlement:
    outcomes: list[str]  # per item: "emit", "held", "dup" or "capped"
    released: list[dict[str, Any]]  # held records whose quiet hours are over
    counters: dict[str, int]  # outcome counters, kept in the outbox entry too
    outbox: bool  # an outbox entry was written under the token


class TriggerLedger:
    def __init__(
        self,
        client: redis.Redis,
        keys: Keys,
        *,
        claim_ttl_s: int,
        max_per_day: int,
        uplift_window_ms: int,
    ) -> None:
        self.keys = keys
        self.claim_ttl_s = claim_ttl_s
        self.max_per_day = max_per_day
        self.uplift_window_ms = uplift_window_ms
        source = resources.files("state").joinpath("lua", "claim_triggers.lua").read_text()
        self._claim = client.register_script(source)

    def queue_customer(
        self, pipe: Any, customer_id: str, items: Sequence[ClaimItem], now: int, token: str
    ) -> int:
        """Queue one customer's settlement; returns the reply's index in `pipe`."""
        pkey = self.keys.customer(customer_id)
        keys = [pkey, self.keys.orders(pkey), self.keys.outbox(pkey)]
        for it in items:
            keys.append(self.keys.trigger(pkey, it.trigger_id))
            keys.append(self.keys.cap(pkey, it.day))
        spec = [
            {
                "m": 1 if it.marketing else 0,
                "ts": it.event_ts,
                "kind": it.kind,
                "h": 1 if it.holdout else 0,
                "q": it.release_ms,
                # kept as the exact JSON text: a round trip through Lua's cjson
                # would turn [] into {} and cut floats to 14 digits
                "rec": orjson.dumps(it.record).decode(),
            }
            for it in items
        ]
        args = [
            self.max_per_day,
            self.claim_ttl_s,
            CAP_TTL_S,
            self.uplift_window_ms,
            now,
            orjson.dumps(spec),
            token,
        ]
        index = len(pipe)
        self._claim(keys=keys, args=args, client=pipe)
        return index

    @staticmethod
    def settlement(reply: bytes) -> CustomerSettlement:
        r = orjson.loads(reply)
        counters = r.get("n") or {}
        return CustomerSettlement(
            outcomes=as_list(r.get("out")),
            released=[orjson.loads(rec) for rec in as_list(r.get("released"))],
            counters=dict(counters) if isinstance(counters, dict) else {},
            outbox=bool(r.get("ob")),
        )

    def queue_other(self, pipe: Any, trigger_id: str, token: str) -> int:
        """Queue the claim of a SKU/order trigger; the reply is truthy when it is new."""
        index = len(pipe)
        pipe.set(self.keys.claim(trigger_id), token, nx=True, ex=self.claim_ttl_s)
        return index
