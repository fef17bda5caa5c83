"""Stores and warehouses in Redis: the location table, a geo index of the active
ones, and a version counter that readers use to know when to reload.

    <p>:{inv}:loc    hash   location_id -> record (JSON)
    <p>:{inv}:geo    geo    active locations (lon, lat)
    <p>:{inv}:locv   string version, incremented by every put

A record is ``{location_id, kind: "store"|"warehouse", lat, lon,
ship_cost_per_km (cents), handling_cost (cents), active, safety_stock?}``,
kept as it comes: a record without ``safety_stock`` stays without one, so the
reader applies its configured default.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import orjson
import redis

from state.errors import call, execute
from state.keys import Keys
from state.replies import text

KINDS = ("store", "warehouse")
# What a Redis geo index accepts (EPSG:3857 limits): a location nearer a pole is kept
# in the table but left out of the index.
_GEO_MAX_LAT = 85.05112878


def _normal(rec: dict[str, Any]) -> dict[str, Any]:
    """The record to store; ValueError for one no reader could use."""
    lid = rec.get("location_id")
    if not isinstance(lid, str) or not lid:
        raise ValueError(f"location: location_id must be a non-empty string, got {lid!r}")
    if rec.get("kind") not in KINDS:
        raise ValueError(f"location {lid}: kind must be one of {KINDS}, got {rec.get('kind')!r}")
    lat, lon = rec.get("lat"), rec.get("lon")
    for name, v, limit in (("lat", lat, 90.0), ("lon", lon, 180.0)):
        if isinstance(v, bool) or not isinstance(v, int | float) or not -limit <= v <= limit:
            raise ValueError(f"location {lid}: {name} must be within ±{limit}, got {v!r}")
    out = dict(rec)
    out["active"] = bool(rec.get("active", True))
    return out


def _indexed(rec: dict[str, Any]) -> bool:
    return rec["active"] and abs(rec["lat"]) <= _GEO_MAX_LAT


class LocationStore:
    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        self.client = client
        self.keys = keys

    def put(self, records: Iterable[dict[str, Any]]) -> int:
        """Upsert records (last one wins per id) in one MULTI/EXEC; returns the new version.

        Only active locations within the geo index's latitude range are indexed.
        Raises ValueError for a record without a usable id, kind or coordinates,
        before anything is written.
        """
        recs = {r["location_id"]: r for r in map(_normal, records)}
        if not recs:
            return self.version()
        k = self.keys
        pipe = self.client.pipeline(transaction=True)
        pipe.hset(k.locations, mapping={lid: orjson.dumps(r) for lid, r in recs.items()})
        active = [(r["lon"], r["lat"], lid) for lid, r in recs.items() if _indexed(r)]
        gone = [lid for lid, r in recs.items() if not _indexed(r)]
        if active:
            pipe.geoadd(k.locations_geo, [x for triple in active for x in triple])
        if gone:
            pipe.zrem(k.locations_geo, *gone)
        pipe.incr(k.locations_version)
        return int(execute(pipe, "put locations")[-1])

    def all(self) -> dict[str, dict[str, Any]]:
        raw = call(lambda: self.client.hgetall(self.keys.locations))
        return {text(lid): orjson.loads(v) for lid, v in raw.items()}

    def version(self) -> int:
        return int(call(lambda: self.client.get(self.keys.locations_version)) or 0)

    def near(
        self, lat: float, lon: float, radius_km: float, kind: str | None = None
    ) -> list[tuple[str, float]]:
        """Active locations within `radius_km`, nearest first, as (id, distance_km)."""
        hits = call(
            lambda: self.client.geosearch(
                self.keys.locations_geo,
                longitude=lon,
                latitude=lat,
                radius=radius_km,
                unit="km",
                sort="ASC",
                withdist=True,
            )
        )
        out = [(text(lid), float(dist)) for lid, dist in hits]
        if kind is None or not out:
            return out
        raw = call(lambda: self.client.hmget(self.keys.locations, [lid for lid, _ in out]))
        return [
            hit
            for hit, rec in zip(out, raw, strict=True)
            if rec is not None and orjson.loads(rec).get("kind") == kind
        ]
