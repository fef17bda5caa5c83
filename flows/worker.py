"""One worker thread's connections, stores, rules, clock and caches.

Bytewax calls a `flat_map_batch` mapper from every worker thread of a
process, so each thread builds its own `Worker` on first use: never at
import, never in a step's `__init__`.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from common.settings import Settings
from connectors.kafka_io import OffsetCommitter, consumer_config
from flows.rules import Rules
from operators.clock import Watermark
from operators.geo import Location
from state.cluster import Cluster
from state.customers import CustomerStore
from state.inventory import InventoryParams, InventoryStore
from state.keys import Keys
from state.ledger import TriggerLedger
from state.locations import LocationStore
from state.model import ModelStore, SharedChurnModel
from state.outbox import Outbox, Receipt
from state.sales import SalesStore

T = TypeVar("T")


class PerThread(Generic[T]):
    """One value per worker thread, keyed by the OS thread.

    Not `threading.local`: Bytewax runs its workers on threads Python did not
    start, and when there are several, their Python thread state (and with it
    whatever a `threading.local` held) is dropped between calls. A worker's
    connections and clock would be rebuilt for every batch.
    """

    def __init__(self) -> None:
        self._values: dict[int, T] = {}

    def get(self) -> T | None:
        return self._values.get(threading.get_ident())

    def set(self, value: T) -> None:
        self._values[threading.get_ident()] = value


# Live mode: how long a caught-up partition still holds the event-time clock
# (see operators.clock.Watermark.idle_grace_ms).
PARTITION_IDLE_GRACE_MS = 500


@dataclass
class ChurnUpdate:
    """A customer's pending churn vector this batch: what was read, what replaces it,
    and the labels decided (queued for the learner with the swap in Redis)."""

    expected: str | None
    new: str | None
    # (time of the score, its vector, label, heuristic's score, time the label became known)
    learn: list[tuple[int, dict[str, float], int, float | None, int]] = field(default_factory=list)


def wall_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class Worker:
    settings: Settings
    live: bool
    client: redis.Redis
    store: CustomerStore
    inventory: InventoryStore
    location_store: LocationStore
    ledger: TriggerLedger
    rules: Rules
    clock: Watermark
    counters: Counter[str] = field(default_factory=Counter)
    offsets: dict[str, int] = field(default_factory=dict)  # "topic#p" -> next offset
    locations: dict[str, Location] = field(default_factory=dict)
    locations_version: int = -1
    persisted_clock_ms: int = 0
    persisted_partitions: dict[str, int] = field(default_factory=dict)  # "topic#p" -> max ms
    timers_since: int = 0  # cart/journey deadlines before this predate the engine
    committer: OffsetCommitter | None = None  # consumer-group commits, for lag tools
    model_store: ModelStore | None = None
    model: SharedChurnModel | None = None  # the process's copy of the churn model
    # customer -> (pending vector as read, as decided, labels to learn once taken)
    churn_updates: dict[str, ChurnUpdate] = field(default_factory=dict)
    sales: SalesStore | None = None  # per-channel hourly sales
    outbox: Outbox | None = None
    # this worker's producer, as named in outbox entries: unique per process run
    writer: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    settlements: int = 0
    receipts: list[Receipt] = field(default_factory=list)  # for the sink, after this batch
    dropped: list[str] = field(default_factory=list)  # tokens that settled nothing
    memo: str = ""  # batch id under which a reply was kept, dropped at the commit
    batch: str = ""  # ordered input: the id of the batch being processed
    sweep_mark: str = ""  # batch whose sweep pass the next commit completes
    pending_sales: list[Any] = field(default_factory=list)  # ordered input: for the commit
    replies: list[str] = field(default_factory=list)  # apply-reply memos, dropped at the commit
    handed: list[tuple[str, str]] = field(default_factory=list)  # stitched, for the commit
    # ordered input: this worker among the others, the batch whose end the
    # next commit writes as the resume point, and the last one written
    cluster: Cluster | None = None
    seq: int = 0
    seq_written: int = -1
    group_pending: dict[str, int] = field(default_factory=dict)  # for the consumer group

    def next_token(self) -> str:
        self.settlements += 1
        return f"{self.writer}.{self.settlements}"

    def batch_id(self) -> str:
        """With ordered input, the id of the batch being processed ("" otherwise).

        A batch is the same after a restart (same start, same end offsets), so
        state calls keyed by it can give a re-read batch what they gave before.
        """
        self.memo = self.batch
        return self.batch

    def take_receipts(self) -> list[Receipt]:
        out, self.receipts = self.receipts, []
        return out

    @classmethod
    def connect(
        cls,
        settings: Settings,
        redis_url: str,
        *,
        live: bool,
        bootstrap: str | None = None,
        model: SharedChurnModel | None = None,
    ) -> Worker:
        """Connect one worker; `model` is the process's shared churn model, if loaded."""
        s = settings
        # No retries inside redis-py: state.errors sends a failed pipeline again
        # itself, after reloading the Lua scripts a restarted Redis has lost.
        client = redis.Redis.from_url(redis_url, retry=Retry(NoBackoff(), 0))
        keys = Keys(s.redis.key_prefix, s.engine.timer_shards)
        rules = Rules.from_settings(s)
        store = CustomerStore.for_settings(client, s)
        inventory = InventoryStore(
            client,
            keys,
            InventoryParams(
                z=rules.z,
                ewma_alpha=s.reorder.ewma_alpha,
                default_lead_time_days=s.reorder.default_lead_time_days,
                min_history_days=s.reorder.min_history_days,
                cover_days=s.reorder.cover_days,
                dedup_ttl_s=int(s.engine.dedup_ttl.total_seconds()),
                alloc_ttl_s=int(s.allocation.plan_retention.total_seconds()),
            ),
        )
        ledger = TriggerLedger(
            client,
            keys,
            claim_ttl_s=rules.trigger_ttl_s,
            max_per_day=s.policy.max_per_day,
            uplift_window_ms=int(s.policy.uplift_window.total_seconds() * 1000),
        )
        lateness = int(s.engine.allowed_lateness.total_seconds() * 1000)
        clock = store.watermark(lateness, wall_ms())
        # where each input partition was: a restart holds the clock as a clean run would
        persisted = store.partition_clocks()
        # (not the highest event time: with no partition open yet, the clock
        # would jump to it before the input's own marks say which ones hold it)
        clock.partition_max.update(persisted.partitions)
        if live and not s.engine.ordered_input:
            # ordered input never lets one partition overtake another: no grace needed
            clock.idle_grace_ms = PARTITION_IDLE_GRACE_MS
        w = cls(
            s, live, client, store, inventory, LocationStore(client, keys), ledger, rules, clock
        )
        w.persisted_partitions = dict(persisted.partitions)
        w.timers_since = store.timers_since(clock.now)
        w.sales = SalesStore.for_settings(client, s)
        w.outbox = Outbox(client, keys)
        w.model_store = ModelStore(client, s.redis.key_prefix)
        w.model = model if model is not None else SharedChurnModel(*w.model_store.load_versioned())
        if bootstrap:
            k = s.kafka
            w.committer = OffsetCommitter(
                consumer_config(bootstrap, k.consumer_group, dict(k.extra))
            )
        return w

    @property
    def dedup_ttl_ms(self) -> int:
        """How long a replayed event (or a label queued twice) is recognised."""
        return int(self.settings.engine.dedup_ttl.total_seconds() * 1000)

    def refresh_locations(self, version: int) -> None:
        """Reload the location table when another writer changed it."""
        if version == self.locations_version:
            return
        safety = self.rules.default_safety_stock
        self.locations = {
            lid: Location.from_record(rec, safety) for lid, rec in self.location_store.all().items()
        }
        self.locations_version = version

    def take_counters(self) -> dict[str, int]:
        out = dict(self.counters)
        self.counters.clear()
        return out

    def take_offsets(self) -> dict[str, int]:
        out, self.offsets = self.offsets, {}
        return out
