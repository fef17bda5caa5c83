"""Customer state in Redis: batched, server-side updates and reads.

One batch of events costs a fixed number of pipelined round trips, never one
per event: the events of each customer go to a single Lua call
(`apply_customer.lua`) and all customers' calls share one pipeline.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import orjson
import redis

from common.settings import Settings
from operators.clock import Watermark
from operators.customer import CustomerLabels, Facts, latest_run
from state.errors import call, execute
from state.keys import Keys
from state.replies import as_list

ANON_TTL_S = 30 * 86_400


def _load(name: str) -> str:
    return resources.files("state").joinpath("lua", name).read_text()


@dataclass(slots=True)
class Applied:
    """What one customer's Lua call reported back."""

    subject: str  # customer id, or anonymous id when `anonymous`
    anonymous: bool
    applied: int
    duplicates: int
    redirect: str | None
    created: bool
    old_n: int = 0
    old_m: int = 0
    final: dict[str, Any] = field(default_factory=dict)
    marks: list[dict[str, Any]] = field(default_factory=list)
    orders: tuple[tuple[int, int], ...] = ()
    conversions: list[tuple[str, bool]] = field(default_factory=list)  # (kind, holdout)
    sent: list[dict[str, Any]] = field(default_factory=list)  # compact events; a mark's i - 1
    dups: list[int] = field(default_factory=list)  # 1-based indices in `sent` not applied
    again: int = 0  # 1: the reply of the same call of a batch read again after a crash
    # effects outside the profile's slot not applied yet: {n, m, c (created), conv}
    pending: dict[str, Any] | None = None


@dataclass(slots=True)
class PartitionClocks:
    partitions: dict[str, int]  # logical "topic#p" -> highest event time read, ms
    highest: int


def facts_from(state: dict[str, Any], orders: tuple[tuple[int, int], ...]) -> Facts:
    return Facts(
        frequency=int(state.get("n") or 0),
        monetary_cents=int(state.get("m") or 0),
        first_activity_ms=_int(state.get("fa")),
        first_order_ms=_int(state.get("fo")),
        last_order_ms=_int(state.get("lo")),
        orders=orders,
        premium_streak=latest_run(as_list(state.get("pd"))),
    )


def labels_from(state: dict[str, Any]) -> CustomerLabels:
    return CustomerLabels(
        state.get("s"),
        state.get("t"),
        _int(state.get("iv")),
        _int(state.get("ev")),
        cart_decided_for=_int(state.get("acf")),
        cart_last_fired=_int(state.get("acl")),
        journey_done=tuple(x for x in (state.get("js") or "").split(",") if x),
        churn_score=None if state.get("cs") is None else float(state["cs"]),
        churn_pending=state.get("cx"),
        churn_scored_at=_int(state.get("csa")),
        abandoned_carts=int(state.get("nab") or 0),
    )


def _label_fields(lab: CustomerLabels) -> dict[str, Any]:
    """Profile field -> value (None = delete the field)."""
    return {
        "s": lab.segment,
        "t": lab.tier,
        "iv": lab.invited_streak_day,
        "ev": lab.judged_at,
        "acf": lab.cart_decided_for,
        "acl": lab.cart_last_fired,
        "js": ",".join(lab.journey_done) or None,
        "cs": None if lab.churn_score is None else round(lab.churn_score, 6),
        "csa": lab.churn_scored_at,
        "nab": lab.abandoned_carts or None,
    }


def event_digest(event_id: str) -> bytes:
    """48 bits of a hash of an event id: what the dedup record keeps.

    Two different ids of one customer collide with odds of about n^2 / 2^49
    (1e-10 for a thousand events in the window): a collision would skip an event.
    """
    return hashlib.blake2b(event_id.encode(), digest_size=6).digest()


def _int(v: Any) -> int | None:
    return None if v is None else int(v)


class CustomerStore:
    """Batched access to customer profiles. Create in a step's setup, not at import."""

    def __init__(
        self,
        client: redis.Redis,
        keys: Keys,
        *,
        dedup_ttl_s: int,
        window_days: int = 60,
        retention_ms: int = 400 * 86_400_000,
        uplift_window_ms: int = 7 * 86_400_000,
        abandoned_after_ms: int = 3_600_000,
    ) -> None:
        self.client = client
        self.keys = keys
        self.dedup_ttl_s = dedup_ttl_s
        self.window_days = window_days
        self.retention_ms = retention_ms
        self.uplift_window_ms = uplift_window_ms
        self.abandoned_after_ms = abandoned_after_ms
        self._apply = client.register_script(_load("apply_customer.lua"))
        self._read = client.register_script(_load("read_customer.lua"))
        self._take = client.register_script(_load("take_anonymous.lua"))
        self._clock = client.register_script(_load("advance_clock.lua"))
        self._reschedule = client.register_script(_load("reschedule.lua"))
        self._swap = client.register_script(_load("swap_field.lua"))
        self._monetary_update = client.register_script(_load("monetary_update.lua"))
        self._monetary_ranks = client.register_script(_load("monetary_ranks.lua"))

    @classmethod
    def for_settings(cls, client: redis.Redis, settings: Settings) -> CustomerStore:
        return cls(
            client,
            Keys(settings.redis.key_prefix, settings.engine.timer_shards),
            dedup_ttl_s=int(settings.engine.dedup_ttl.total_seconds()),
            uplift_window_ms=int(settings.policy.uplift_window.total_seconds() * 1000),
            abandoned_after_ms=int(settings.abandoned_cart.abandoned_after.total_seconds() * 1000),
        )

    def watermark(self, lateness_ms: int, wall_ms: int) -> Watermark:
        """A clock that goes on from the durable maximum event time."""
        clock = Watermark(lateness_ms)
        clock.merge(self.clock_max(), wall_ms)
        # events read before a restart still count once every partition is done
        raw = call(lambda: self.client.hget(self.keys.clock, "highest_ms"))
        clock.highest_before_ms = int(raw or 0)
        return clock

    # -- writes ---------------------------------------------------------------------

    def take_anonymous(
        self, pairs: Iterable[tuple[str, str]]
    ) -> dict[tuple[str, str], dict[str, str]]:
        """Stitch step 1 for (anonymous_id, customer_id) pairs; returns the histories."""
        pairs = list(dict.fromkeys(pairs))
        if not pairs:
            return {}
        pipe = self.client.pipeline(transaction=False)
        for anon, cid in pairs:
            self._take(keys=[self.keys.subject("a", anon)], args=[cid, ANON_TTL_S], client=pipe)
        out = {}
        for pair, flat in zip(pairs, execute(pipe, "take anonymous history"), strict=True):
            if flat:
                it = iter(x.decode() if isinstance(x, bytes) else x for x in flat)
                out[pair] = dict(zip(it, it, strict=True))
        return out

    def stitched_to(self, visitors: Sequence[str]) -> dict[str, str]:
        """Visitor id -> the customer it was stitched to, for those already stitched."""
        pipe = self.client.pipeline(transaction=False)
        for anon in visitors:
            pipe.hget(self.keys.subject("a", anon), "to")
        out = {}
        for anon, to in zip(visitors, execute(pipe, "read stitched visitors"), strict=True):
            if to:
                out[anon] = to.decode() if isinstance(to, bytes) else to
        return out

    def apply(
        self,
        batches: dict[tuple[str, bool], list[tuple[str, dict[str, Any]]]],
        now: int,
        max_event_ms: int,
        batch: str = "",
    ) -> tuple[list[Applied], int]:
        """Apply each subject's (event_id, compact event) list; also advance the clock.

        Keys of `batches` are (subject id, anonymous?). Returns the per-subject
        results and the durable max event time after this batch.
        """
        pipe = self.client.pipeline(transaction=False)
        order = list(batches)
        for subject, anonymous in order:
            pkey = self.keys.subject("a" if anonymous else "c", subject)
            events = batches[(subject, anonymous)]
            keys = [pkey, self.keys.orders(pkey), self.keys.dedup(pkey), self.keys.replies(pkey)]
            args = [
                self.dedup_ttl_s,
                self.window_days,
                self.retention_ms,
                now,
                ANON_TTL_S if anonymous else 0,
                orjson.dumps([ev for _, ev in events]),
                self.uplift_window_ms,
                self.abandoned_after_ms,
                b"".join(event_digest(eid) for eid, _ in events),
                batch,
            ]
            self._apply(keys=keys, args=args, client=pipe)
        self._clock(keys=[self.keys.clock], args=[max_event_ms], client=pipe)
        replies = execute(pipe, "apply customer events")
        results = []
        for (subject, anonymous), raw in zip(order, replies[:-1], strict=True):
            r = orjson.loads(raw)
            final = r.get("final") or {}
            results.append(
                Applied(
                    subject=subject,
                    anonymous=anonymous,
                    applied=r["applied"],
                    duplicates=r["dup"],
                    redirect=r.get("redirect"),
                    created=bool(r.get("created")) and not anonymous,
                    old_n=int(r.get("old", {}).get("n", 0)),
                    old_m=int(r.get("old", {}).get("m", 0)),
                    final=final,
                    marks=as_list(r.get("marks")),
                    orders=tuple((int(ts), int(net)) for ts, net in as_list(r.get("orders"))),
                    conversions=[(k, bool(h)) for k, h in as_list(r.get("conversions"))],
                    sent=[ev for _, ev in batches[(subject, anonymous)]],
                    dups=[int(i) for i in as_list(r.get("dups"))],
                    again=int(r.get("again") or 0),
                    pending=r.get("pe") if isinstance(r.get("pe"), dict) else None,
                )
            )
        return results, int(replies[-1])

    def update_monetary(
        self, results: Sequence[Applied], handed: Sequence[tuple[str, str]] = ()
    ) -> None:
        """Keep the live M distribution (customers with F >= 1) and its mean.

        Applies each profile's pending effects (`pe`, left by apply_customer.lua)
        and deletes them in one transaction, with the conversion counters and the
        stitched visitors' histories (`handed`: (anonymous id, customer id)), so
        a crash before or after this round leaves them counted exactly once.
        """
        args: list[str | int] = []
        delta_sum = delta_count = created = 0
        pipe = self.client.pipeline(transaction=True)
        # a customer can come back twice (its own events, then a stitched
        # visitor's): the last reply holds its final state, the effects are one
        last = {a.subject: a for a in results if not a.anonymous}
        for a in last.values():
            pe = a.pending
            if pe is None:
                continue
            old_n, old_m = int(pe.get("n") or 0), int(pe.get("m") or 0)
            new_n, new_m = int(a.final.get("n", 0)), int(a.final.get("m", 0))
            was, now_in = old_n >= 1, new_n >= 1
            if now_in or was:
                args += [a.subject, int(now_in), new_m]
            delta_sum += (new_m if now_in else 0) - (old_m if was else 0)
            delta_count += int(now_in) - int(was)
            created += 1 if pe.get("c") else 0
            for kind, holdout in as_list(pe.get("conv")):
                group = "holdout" if holdout else "treated"
                pipe.hincrby(self.keys.stats, f"uplift:{kind}:{group}:converted", 1)
            pipe.hdel(self.keys.customer(a.subject), "pe")
        if args or delta_sum or delta_count or created:
            self._monetary_update(
                keys=[self.keys.monetary, self.keys.agg],
                args=[*args, delta_sum, delta_count, created],
                client=pipe,
            )
        self.queue_handed(pipe, handed)
        if len(pipe):
            execute(pipe, "update monetary distribution")

    def queue_handed(self, pipe: Any, handed: Sequence[tuple[str, str]]) -> None:
        """Drop stitched visitors' histories, merged now: only the "to" marker stays."""
        for anon, cid in handed:
            key = self.keys.subject("a", anon)
            pipe.delete(key)
            pipe.hset(key, "to", cid)
            pipe.expire(key, ANON_TTL_S)

    def monetary_positions(self, values: Sequence[int]) -> tuple[list[tuple[int, int]], int, int]:
        """For each value: (customers below, customers equal); plus count and sum."""
        r = call(
            lambda: self._monetary_ranks(keys=[self.keys.monetary, self.keys.agg], args=values),
            "read monetary ranks",
        )
        pairs = [(int(r[2 * i]), int(r[2 * i + 1])) for i in range(len(values))]
        return pairs, int(r[-2]), int(r[-1] or 0)

    def pipeline(self) -> Any:
        return self.client.pipeline(transaction=False)

    def queue_commit(
        self,
        pipe: Any,
        labels: dict[str, CustomerLabels],
        timers: dict[str, tuple[int | None, int | None]],
        counters: dict[str, int],
        offsets: dict[str, int] | None = None,
    ) -> None:
        """Queue labels, review timers, counters and resume offsets on `pipe`.

        `timers` maps customer -> (score we saw or None, new score or None).
        Offsets go last: they are resume points, valid only once the rest is in.
        """
        for cid, lab in labels.items():
            pkey = self.keys.customer(cid)
            values = _label_fields(lab)
            fields = {k: v for k, v in values.items() if v is not None}
            dels = [k for k, v in values.items() if v is None]
            if fields:
                pipe.hset(pkey, mapping=fields)
            if dels:
                pipe.hdel(pkey, *dels)
        for cid, (seen, new) in timers.items():
            key = self.keys.timers(self.keys.timer_shard(cid))
            if seen is None:
                if new is not None:
                    pipe.zadd(key, {cid: new})
            else:
                self._reschedule(
                    keys=[key], args=[cid, seen, "" if new is None else new], client=pipe
                )
        for name, n in counters.items():
            if n:
                pipe.hincrby(self.keys.stats, name, n)
        if offsets:
            pipe.hset(self.keys.offsets, mapping=offsets)

    def queue_clock(self, pipe: Any, basis_ms: int, highest_ms: int = 0) -> None:
        """Persist the watermark basis and the highest event time (each kept if ahead)."""
        self._clock(keys=[self.keys.clock], args=[basis_ms, highest_ms], client=pipe)

    def queue_partition_clocks(self, pipe: Any, partitions: dict[str, int]) -> None:
        """Persist the highest event time read per input partition (the overall
        highest goes with `queue_clock`, kept only if ahead)."""
        pipe.hset(self.keys.clock, mapping={f"p:{part}": ms for part, ms in partitions.items()})

    def queue_swept(self, pipe: Any, batch: str, worker: int = 0) -> None:
        """Record that worker `worker`'s timer sweep pass of `batch` is done."""
        pipe.hset(self.keys.clock, _swept_field(worker), batch)

    def swept(self, worker: int = 0) -> str:
        """The batch whose timer sweep pass `worker` did last ("" if none)."""
        field = _swept_field(worker)
        raw = call(lambda: self.client.hget(self.keys.clock, field), "read the clock")
        return raw.decode() if raw else ""

    def queue_swap(
        self, pipe: Any, customer_id: str, name: str, expected: str | None, new: str | None
    ) -> int:
        """Queue a compare-and-set of one profile field; returns the reply's index."""
        index = len(pipe)
        self._swap(
            keys=[self.keys.customer(customer_id)],
            args=[name, expected or "", new or ""],
            client=pipe,
        )
        return index

    def execute(self, pipe: Any, what: str) -> list[Any]:
        return execute(pipe, what)

    # -- reads ----------------------------------------------------------------------

    def due_reviews(self, shards: Iterable[int], now: int, limit: int) -> list[tuple[str, int]]:
        pipe = self.client.pipeline(transaction=False)
        for shard in shards:
            pipe.zrangebyscore(
                self.keys.timers(shard), "-inf", now, start=0, num=limit, withscores=True
            )
        out = []
        for rows in execute(pipe, "read due reviews"):
            out.extend((m.decode() if isinstance(m, bytes) else m, int(s)) for m, s in rows)
        return out

    def read(
        self, customer_ids: Sequence[str]
    ) -> dict[str, tuple[dict[str, Any], tuple[tuple[int, int], ...]]]:
        pipe = self.client.pipeline(transaction=False)
        for cid in customer_ids:
            pkey = self.keys.customer(cid)
            self._read(keys=[pkey, self.keys.orders(pkey)], client=pipe)
        out = {}
        for cid, raw in zip(customer_ids, execute(pipe, "read customers"), strict=True):
            if raw:
                r = orjson.loads(raw)
                out[cid] = (r["final"], tuple((int(t), int(n)) for t, n in as_list(r["orders"])))
        return out

    def clock_max(self) -> int:
        return int(call(lambda: self.client.hget(self.keys.clock, "max_event_ms") or 0))

    def partition_clocks(self) -> PartitionClocks:
        """What `queue_partition_clocks` stored (empty on a fresh store)."""
        raw = call(lambda: self.client.hgetall(self.keys.clock), "read the clock")
        out = PartitionClocks({}, 0)
        for k, v in raw.items():
            name = k.decode()
            if name.startswith("p:"):
                out.partitions[name[2:]] = int(v)
            elif name == "highest_ms":
                out.highest = int(v)
        return out

    def timers_since(self, now: int) -> int:
        """Event time from which cart and journey deadlines are this engine's own.

        Set once, to the watermark the first engine with timers started at (0
        on a fresh store): a deadline before it comes from state an older
        version kept, and is settled without a trigger.
        """
        pipe = self.client.pipeline(transaction=False)
        pipe.hsetnx(self.keys.clock, "timers_since", now)
        pipe.hget(self.keys.clock, "timers_since")
        return int(execute(pipe, "read timers_since")[-1])

    def stats(self) -> dict[str, int]:
        raw = call(lambda: self.client.hgetall(self.keys.stats))
        return {k.decode(): int(v) for k, v in raw.items()}

    def agg(self) -> dict[str, int]:
        raw = call(lambda: self.client.hgetall(self.keys.agg))
        return {k.decode(): int(v) for k, v in raw.items()}


def _swept_field(worker: int) -> str:
    return "swept" if worker == 0 else f"swept:{worker}"
