"""The trigger outbox: what a settlement claimed, until Kafka has it.

A trigger is claimed in Redis (emitted-once marker, daily cap) by the batch
step and produced by the sink afterwards. In between, its record waits in an
outbox, so a crash at any moment cannot lose it:

- before the claims, on the same connection (so Redis runs it first), the
  settlement's index entry is written: `<p>:outbox` token -> writer, the
  customers it settles and the records of its SKU/order triggers;
- each customer's claim script writes what goes out (records, outcome
  counters) to the customer's `<p>:{c:<id>}:ob` under the token, in the same
  atomic call as the claims; a SKU/order trigger's claim marker holds the
  token of the settlement that won it;
- once the producer's delivery reports are in, the sink confirms: one MULTI
  adds the outcome and emission counters, deletes the entries and records the
  writer's last delivered offsets.

What is still pending at start-up was claimed and maybe delivered, but not
confirmed. `flows.recovery` reads the trigger topics from the pending writers'
last confirmed offsets, takes the ids found there as delivered and emits the
rest, then calls `finish`. Counters are added once, with the confirmation.

Keys are Redis-Cluster-safe per call: the claim script touches one customer's
slot; the index, the acked offsets and the counters are separate commands.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
import redis

from state.errors import execute
from state.keys import Keys
from state.replies import as_list

START = "start"  # field of the acked hash: the trigger topics' end at the last recovery


@dataclass(slots=True)
class Receipt:
    """What the sink confirms once the messages before it are delivered."""

    token: str
    writer: str
    customers: list[str]  # customer ids with an outbox entry under the token
    counters: dict[str, int] = field(default_factory=dict)


@dataclass(slots=True)
class Pending:
    """A settlement found unconfirmed at start-up."""

    token: str
    writer: str
    customers: list[str]
    records: list[dict[str, Any]]  # what it emitted, less `emitted_at`
    counters: dict[str, int]


def emission_counters(records: Iterable[dict[str, Any]]) -> Counter[str]:
    return Counter(f"emitted:{rec['kind']}" for rec in records)


class Outbox:
    """Index entries, confirmations and start-up reads of pending settlements."""

    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        self.client = client
        self.keys = keys

    def queue_pending(
        self,
        pipe: Any,
        token: str,
        writer: str,
        customers: Sequence[str],
        others: Sequence[tuple[str, bytes]],
    ) -> None:
        """Queue the index entry; must precede the settlement's claims on `pipe`.

        `others` are (trigger_id, record as JSON) of the SKU/order triggers.
        """
        entry = {
            "w": writer,
            "c": list(customers),
            "o": [[tid, orjson.Fragment(rec)] for tid, rec in others],
        }
        pipe.hset(self.keys.pending, token, orjson.dumps(entry))

    def queue_drop(self, pipe: Any, tokens: Sequence[str]) -> None:
        """Forget index entries of settlements that emitted and counted nothing."""
        if tokens:
            pipe.hdel(self.keys.pending, *tokens)

    def confirm(self, receipts: Sequence[Receipt], offsets: dict[str, int]) -> None:
        """The receipts' messages are delivered, `offsets` ("topic#p" -> next offset)
        their writer's ends: count them and drop their entries, atomically."""
        if not receipts:
            return
        pipe = self.client.pipeline(transaction=True)
        counters: Counter[str] = Counter()
        writers = set()
        for r in receipts:
            counters.update(r.counters)
            writers.add(r.writer)
            for cid in r.customers:
                pipe.hdel(self.keys.outbox(self.keys.customer(cid)), r.token)
        pipe.hdel(self.keys.pending, *(r.token for r in receipts))
        for name, n in counters.items():
            if n:
                pipe.hincrby(self.keys.stats, name, n)
        if offsets:
            for w in writers:
                pipe.hset(self.keys.acked, w, orjson.dumps(offsets))
        execute(pipe, "confirm delivered triggers")

    # -- start-up ---------------------------------------------------------------------

    def pending(self) -> list[Pending]:
        """Every unconfirmed settlement, with the records it emitted (two round trips)."""
        raw = execute(self.client.pipeline(False).hgetall(self.keys.pending), "read outbox")[0]
        if not raw:
            return []
        entries = [(t.decode(), orjson.loads(v)) for t, v in raw.items()]
        pipe = self.client.pipeline(transaction=False)
        slots: list[tuple[int, str, Any]] = []  # (entry index, what, detail)
        for i, (token, e) in enumerate(entries):
            for cid in as_list(e.get("c")):
                pipe.hget(self.keys.outbox(self.keys.customer(cid)), token)
                slots.append((i, "c", None))
            for tid, rec in as_list(e.get("o")):
                pipe.get(self.keys.claim(tid))
                slots.append((i, "o", rec))
        replies = execute(pipe, "read outbox entries") if slots else []
        out = [Pending(token, e["w"], list(as_list(e.get("c"))), [], {}) for token, e in entries]
        for (i, what, rec), reply in zip(slots, replies, strict=True):
            p = out[i]
            if what == "c":
                if reply:
                    entry = orjson.loads(reply)
                    p.records.extend(orjson.loads(r) for r in as_list(entry.get("r")))
                    for name, n in (entry.get("n") or {}).items():
                        p.counters[name] = p.counters.get(name, 0) + int(n)
            elif reply is not None and reply.decode() == p.token:
                p.records.append(rec)  # this settlement won the claim
        return out

    def acked_offsets(self) -> tuple[dict[str, dict[str, int]], dict[str, int]]:
        """(writer -> "topic#p" -> next offset after its last confirmed record,
        "topic#p" -> end offset at the last recovery)."""
        raw = execute(self.client.pipeline(False).hgetall(self.keys.acked), "read acked")[0]
        parsed = {k.decode(): orjson.loads(v) for k, v in raw.items()}
        start = parsed.pop(START, {})
        return parsed, start

    def finish(
        self, settled: Sequence[Pending], counters: dict[str, int], ends: dict[str, int]
    ) -> None:
        """Recovery is done: count, drop the entries, restart the acked offsets at `ends`."""
        pipe = self.client.pipeline(transaction=True)
        for p in settled:
            for cid in p.customers:
                pipe.hdel(self.keys.outbox(self.keys.customer(cid)), p.token)
        if settled:
            pipe.hdel(self.keys.pending, *(p.token for p in settled))
        for name, n in counters.items():
            if n:
                pipe.hincrby(self.keys.stats, name, n)
        # Writers of earlier runs are gone; what a new one writes lands after `ends`.
        pipe.delete(self.keys.acked)
        if ends:
            pipe.hset(self.keys.acked, START, orjson.dumps(ends))
        execute(pipe, "finish outbox recovery")
