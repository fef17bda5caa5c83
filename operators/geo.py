"""Locations, great-circle distance and the cost ranking for order allocation (SPEC §5.7).

Pure: a location record in, `Location` out; a customer position and locations in,
candidates ranked by shipping cost out. Stock is not looked at here except as a
mapping of available units handed in (already net of safety stock); reserving it
is the state layer's job.

Cost of shipping from a location = round(distance_km × ship_cost_per_km) +
handling_cost, in integer cents. Candidates are ordered by (cost, distance,
location_id): cheapest first, ties nearer first, then by id so that the same
input always gives the same plan.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

EARTH_RADIUS_KM = 6371.0088  # mean Earth radius (IUGG), as the `haversine` package uses
KINDS = ("store", "warehouse")


@dataclass(frozen=True, slots=True)
class Location:
    location_id: str
    kind: str  # "store" | "warehouse"
    lat: float
    lon: float
    ship_cost_per_km: int  # cents per km
    handling_cost: int  # cents
    active: bool = True
    safety_stock: int = 0  # units held back from allocation

    @classmethod
    def from_record(cls, rec: Mapping[str, Any], default_safety: int = 0) -> Location:
        """A location from a parsed `locations` record (money already in cents).

        `safety_stock` is not part of the topic contract; a record that carries one
        overrides `default_safety` (the configured default).
        """
        safety = rec.get("safety_stock")
        return cls(
            location_id=str(rec["location_id"]),
            kind=str(rec["kind"]),
            lat=float(rec["lat"]),
            lon=float(rec["lon"]),
            ship_cost_per_km=int(rec.get("ship_cost_per_km") or 0),
            handling_cost=int(rec.get("handling_cost") or 0),
            active=bool(rec.get("active", True)),
            safety_stock=max(0, int(default_safety if safety is None else safety)),
        )


def haversine_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance in km between two points given in degrees."""
    p1 = math.radians(lat1)
    p2 = math.radians(lat2)
    dlat = p2 - p1
    dlon = math.radians(lon2 - lon1)
    h = math.sin(dlat / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dlon / 2) ** 2
    # Rounding can push h a hair past 1 for antipodal points.
    return 2 * EARTH_RADIUS_KM * math.asin(math.sqrt(min(1.0, h)))


@dataclass(frozen=True, slots=True)
class Candidate:
    location: Location
    distance_km: float
    cost: int  # cents: round(distance_km * ship_cost_per_km) + handling_cost

    @property
    def location_id(self) -> str:
        return self.location.location_id


def candidate(lat: float, lon: float, location: Location) -> Candidate:
    """`location` seen from the position (lat, lon): its distance and shipping cost."""
    d = haversine_km(lat, lon, location.lat, location.lon)
    return Candidate(location, d, round(d * location.ship_cost_per_km) + location.handling_cost)


def rank_candidates(
    lat: float,
    lon: float,
    locations: Iterable[Location],
    *,
    kinds: Collection[str] = KINDS,
) -> list[Candidate]:
    """Active locations of `kinds`, cheapest first (ties: nearer first, then by id)."""
    found = [candidate(lat, lon, loc) for loc in locations if loc.active and loc.kind in kinds]
    found.sort(key=lambda c: (c.cost, c.distance_km, c.location.location_id))
    return found


def nearest_holding(
    lat: float,
    lon: float,
    locations: Iterable[Location],
    available: Mapping[str, int],
    *,
    kind: str = "store",
) -> Candidate | None:
    """The nearest active location of `kind` with available units > 0 (ties: by id).

    `available` maps location_id to units already net of safety stock; a location
    missing from it holds nothing.
    """
    best: Candidate | None = None
    for loc in locations:
        if not loc.active or loc.kind != kind or available.get(loc.location_id, 0) <= 0:
            continue
        c = candidate(lat, lon, loc)
        if best is None or (c.distance_km, loc.location_id) < (
            best.distance_km,
            best.location.location_id,
        ):
            best = c
    return best


def plan_cost(plan_location_ids: Iterable[str | None], ranked: Sequence[Candidate]) -> int:
    """Cost of a plan, one id per line (None: backorder).

    Each distinct location ships one parcel, so its cost counts once however many
    lines it serves. Raises KeyError for a location that is not among `ranked`.
    """
    cost = {c.location.location_id: c.cost for c in ranked}
    used = {lid for lid in plan_location_ids if lid is not None}
    missing = used - cost.keys()
    if missing:
        raise KeyError(f"not among the ranked candidates: {sorted(missing)}")
    return sum(cost[lid] for lid in used)
