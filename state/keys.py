"""Redis key layout. Every key of one customer shares a hash tag, so the same
layout works on Redis Cluster: a customer's Lua call touches one slot only.

    <p>:{c:<id>}            hash   profile (RFM facts, rings, cart, labels)
    <p>:{c:<id>}:o          hash   order_id -> "ts|net_cents|state" (pruned past retention)
    <p>:{c:<id>}:d          string digests of the applied events of the dedup window (TTL)
    <p>:{c:<id>}:r          hash   ordered input: (batch, digests) -> apply reply, until
                                   the batch commits (a batch read again gets it back)
    <p>:{c:<id>}:t:<trig>   string emitted-once marker of a customer's trigger (TTL)
    <p>:{c:<id>}:cap:<day>  string marketing triggers on that calendar day (TTL)
    <p>:{c:<id>}:ob         hash   token -> records and counters of a settlement not yet
                                   confirmed delivered (the customer's outbox)
    <p>:{t:<trig>}          string emitted-once marker of a SKU/order trigger (TTL):
                                   the token of the settlement that claimed it
    <p>:outbox              hash   token -> pending settlement: writer, customers,
                                   SKU/order trigger records (until delivered)
    <p>:outbox:acked        hash   writer -> its last delivered trigger offsets;
                                   "start" -> trigger topics' end at the last recovery
    <p>:{a:<id>}            hash   anonymous visitor's history (TTL), or "to" once stitched
    <p>:{rfm}:m             zset   customer -> monetary cents, customers with F >= 1
    <p>:{rfm}:agg           hash   sum (cents), count, customers (one slot: one Lua call)
    <p>:timers:{<shard>}    zset   customer -> event time of the next time-driven review
    <p>:clock               hash   max_event_ms: the durable watermark basis; p:<topic#p>
                                   and highest_ms: latest event time read per partition
    <p>:stats               hash   counters: events, rejects, duplicates, triggers
    <p>:offsets             hash   "topic/partition" -> next offset to read
    <p>:{sales:<hour>}      hash   "<channel>|<o|x|r|g|f|s>" -> sales of one hour (TTL)
    <p>:{sales:<hour>}:s:<ch> set  distinct session ids of a channel in that hour (TTL)

An hour is named by the epoch ms at which it began (in `engine.timezone`);
its hash and session sets share a hash tag, so one Lua call adds a batch's
figures to an hour on Redis Cluster too.

Inventory and locations share one hash tag, {inv}, so a single Lua call can
touch several SKUs atomically (one slot, also on Redis Cluster):

    <p>:{inv}:s:<sku>       hash   location_id -> on_hand
    <p>:{inv}:m:<sku>       hash   "<loc>|<field>": rp, max, lt, arm, x, dd, du, mu, var, nd
    <p>:{inv}:lp            hash   sku -> list price, cents
    <p>:{inv}:a:<order>     string allocation plan (JSON) or "released" tombstone (TTL)
    <p>:{inv}:e:<event>     string dedup marker of an applied stock event or sale (TTL)
    <p>:{inv}:r:<batch>     string reply of a batch's inventory call, until the batch
                                   is committed (ordered input only)
    <p>:{inv}:loc           hash   location_id -> location record (JSON)
    <p>:{inv}:geo           geo    active locations
    <p>:{inv}:locv          string version counter of the location table
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Keys:
    prefix: str = "op"
    timer_shards: int = 16

    def subject(self, kind: str, ident: str) -> str:
        """Profile hash of a customer (kind "c") or anonymous visitor (kind "a")."""
        return f"{self.prefix}:{{{kind}:{ident}}}"

    def customer(self, customer_id: str) -> str:
        return self.subject("c", customer_id)

    def orders(self, profile_key: str) -> str:
        return f"{profile_key}:o"

    def replies(self, profile_key: str) -> str:
        """Ordered input: the customer's apply replies of the batch being processed."""
        return f"{profile_key}:r"

    def dedup(self, profile_key: str) -> str:
        return f"{profile_key}:d"

    def trigger(self, profile_key: str, trigger_id: str) -> str:
        return f"{profile_key}:t:{trigger_id}"

    def cap(self, profile_key: str, day: int) -> str:
        """Count of the customer's marketing triggers on one calendar day."""
        return f"{profile_key}:cap:{day}"

    def outbox(self, profile_key: str) -> str:
        """A customer's settlements whose records are not confirmed delivered yet."""
        return f"{profile_key}:ob"

    @property
    def pending(self) -> str:
        """Index of settlements not confirmed delivered yet (token -> what to look at)."""
        return f"{self.prefix}:outbox"

    @property
    def acked(self) -> str:
        return f"{self.prefix}:outbox:acked"

    def claim(self, trigger_id: str) -> str:
        """Emitted-once marker of a trigger whose subject is not a customer."""
        return f"{self.prefix}:{{t:{trigger_id}}}"

    def timer_shard(self, customer_id: str) -> int:
        return zlib.crc32(customer_id.encode()) % self.timer_shards

    def timers(self, shard: int) -> str:
        return f"{self.prefix}:timers:{{{shard}}}"

    @property
    def monetary(self) -> str:
        return f"{self.prefix}:{{rfm}}:m"

    @property
    def agg(self) -> str:
        return f"{self.prefix}:{{rfm}}:agg"

    @property
    def clock(self) -> str:
        return f"{self.prefix}:clock"

    @property
    def stats(self) -> str:
        return f"{self.prefix}:stats"

    @property
    def offsets(self) -> str:
        return f"{self.prefix}:offsets"

    def sales(self, hour_start_ms: int) -> str:
        return f"{self.prefix}:{{sales:{hour_start_ms}}}"

    def sales_sessions(self, hour_start_ms: int, channel: str) -> str:
        return f"{self.sales(hour_start_ms)}:s:{channel}"

    # -- inventory and locations: one hash tag, {inv} --------------------------------

    @property
    def inv_base(self) -> str:
        return f"{self.prefix}:{{inv}}"

    def inv_stock(self, sku: str) -> str:
        return f"{self.inv_base}:s:{sku}"

    def inv_meta(self, sku: str) -> str:
        return f"{self.inv_base}:m:{sku}"

    @property
    def inv_price(self) -> str:
        return f"{self.inv_base}:lp"

    def inv_alloc(self, order_id: str) -> str:
        return f"{self.inv_base}:a:{order_id}"

    def inv_memo(self, batch: str) -> str:
        return f"{self.inv_base}:r:{batch}"

    def inv_dedup(self, event_id: str) -> str:
        return f"{self.inv_base}:e:{event_id}"

    @property
    def locations(self) -> str:
        return f"{self.inv_base}:loc"

    @property
    def locations_geo(self) -> str:
        return f"{self.inv_base}:geo"

    @property
    def locations_version(self) -> str:
        return f"{self.inv_base}:locv"
