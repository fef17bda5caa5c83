"""Per-channel hourly sales in Redis: one batched write per engine batch, reads for
`omnipulse report` and for a metrics collector.

One hash per hour (`Keys.sales`) holds every channel's counters; a set per
channel and hour holds its distinct session ids for `sales.session_memory`,
while the hash keeps the count for `sales.retention`. Both TTLs are refreshed
on every write, so keys of hours that no longer get events expire.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from importlib import resources
from typing import Any

import orjson
import redis

from common.settings import Settings
from operators.sales import ChannelHour, Tally, hour_start, hours_back
from state.errors import call, execute
from state.keys import Keys
from state.replies import text

FIELDS = {"o": "placed", "x": "cancelled", "r": "returned", "g": "gross", "f": "refunded"}
MAX_HOURS = 24 * 400  # a report range longer than this is a typo, not a question


class SalesStore:
    """Batched access to the hourly sales buckets. Create in a step's setup, not at import."""

    def __init__(
        self, client: redis.Redis, keys: Keys, *, retention_s: int, session_ttl_s: int
    ) -> None:
        self.client = client
        self.keys = keys
        self.retention_s = retention_s
        self.session_ttl_s = session_ttl_s
        self._add = client.register_script(
            resources.files("state").joinpath("lua", "add_sales.lua").read_text()
        )

    @classmethod
    def for_settings(cls, client: redis.Redis, settings: Settings) -> SalesStore:
        return cls(
            client,
            Keys(settings.redis.key_prefix, settings.engine.timer_shards),
            retention_s=int(settings.sales.retention.total_seconds()),
            session_ttl_s=int(settings.sales.session_memory.total_seconds()),
        )

    def add(self, tallies: dict[tuple[str, int], Tally]) -> None:
        """Add a batch's bucket increments: one pipeline, one script call per hour."""
        pipe = self.client.pipeline(transaction=False)
        self.queue_add(pipe, tallies)
        if len(pipe):
            execute(pipe, "add hourly sales")

    def queue_add(self, pipe: Any, tallies: dict[tuple[str, int], Tally]) -> None:
        """Queue `add`'s script calls on a caller's pipeline (a batch's commit)."""
        by_hour: dict[int, list[tuple[str, Tally]]] = defaultdict(list)
        for (channel, hour), t in tallies.items():
            by_hour[hour].append((channel, t))
        for hour, rows in sorted(by_hour.items()):
            keys = [self.keys.sales(hour)]
            args = []
            for channel, t in sorted(rows, key=lambda r: r[0]):
                slot = 0
                if t.sessions:
                    keys.append(self.keys.sales_sessions(hour, channel))
                    slot = len(keys)
                counts = [str(v) for v in t.counts().values()]
                args.append([channel, *counts, sorted(t.sessions), slot])
            self._add(
                keys=keys,
                args=[self.retention_s, self.session_ttl_s, orjson.dumps(args)],
                client=pipe,
            )

    def read(self, hours: Sequence[int]) -> list[ChannelHour]:
        """The buckets of the given hour starts that have figures, by hour then channel."""
        if len(hours) > MAX_HOURS:
            raise ValueError(f"{len(hours)} hours asked for; at most {MAX_HOURS} at once")
        pipe = self.client.pipeline(transaction=False)
        for hour in hours:
            pipe.hgetall(self.keys.sales(hour))
        out = []
        for hour, raw in zip(hours, execute(pipe, "read hourly sales"), strict=True):
            per: dict[str, dict[str, int]] = defaultdict(dict)
            for k, v in raw.items():
                channel, _, name = text(k).rpartition("|")
                per[channel][name] = int(v)
            for channel in sorted(per):
                f = per[channel]
                out.append(
                    ChannelHour(
                        hour,
                        channel,
                        placed=f.get("o", 0),
                        cancelled=f.get("x", 0),
                        returned=f.get("r", 0),
                        gross_cents=f.get("g", 0),
                        refunded_cents=f.get("f", 0),
                        sessions=f.get("s", 0),
                    )
                )
        return out

    def latest_event_ms(self) -> int:
        """The highest event time the engine has applied (0 before any)."""
        raw: Any = call(
            lambda: self.client.hget(self.keys.clock, "max_event_ms"), "read the engine clock"
        )
        return int(raw or 0)


def recent_sales(
    client: redis.Redis, settings: Settings, hours: int = 24
) -> tuple[list[int], list[ChannelHour]]:
    """The last `hours` hours up to the newest event's hour: (hour starts, rows).

    For a metrics collector as much as for `omnipulse report`: event time, so a
    replayed history reports its own last hours, not the wall clock's.
    """
    store = SalesStore.for_settings(client, settings)
    latest = store.latest_event_ms()
    if latest <= 0:
        return [], []
    tz = settings.engine.tz()
    starts = hours_back(hour_start(latest, tz), hours, tz)
    return starts, store.read(starts)
