"""The static world behind the traffic simulator: stores, warehouses, SKUs, customers.

Built once from the seed (see :mod:`omnipulse.simulator` for the traffic itself). Also
the record type and the small encoding helpers shared by the simulator and file replay.
Coordinates are real city centres; prices are in CNY.
"""

from __future__ import annotations

import math
import random
from bisect import bisect
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from decimal import ROUND_HALF_UP, Decimal
from itertools import accumulate
from typing import Any

import orjson

from common.errors import ConfigError
from connectors.records import SimRecord

CURRENCY = "CNY"
MIN_MS = 60_000
HOUR_MS = 3_600_000
DAY_MS = 86_400_000
CENT = Decimal("0.01")
_CN_TZ = timezone(timedelta(hours=8))

# (id, lat, lon, relative size): city centres; the size weights where customers live.
CITIES: tuple[tuple[str, float, float, int], ...] = (
    ("shanghai", 31.2304, 121.4737, 24), ("beijing", 39.9042, 116.4074, 22),
    ("guangzhou", 23.1291, 113.2644, 18), ("shenzhen", 22.5431, 114.0579, 17),
    ("chengdu", 30.5728, 104.0668, 16), ("chongqing", 29.5630, 106.5516, 16),
    ("hangzhou", 30.2741, 120.1551, 12), ("wuhan", 30.5928, 114.3055, 12),
    ("xian", 34.3416, 108.9398, 12), ("nanjing", 32.0603, 118.7969, 9),
    ("tianjin", 39.3434, 117.3616, 13), ("suzhou", 31.2990, 120.5853, 12),
    ("changsha", 28.2282, 112.9388, 10), ("zhengzhou", 34.7466, 113.6254, 12),
    ("qingdao", 36.0671, 120.3826, 10), ("shenyang", 41.8057, 123.4315, 9),
    ("dalian", 38.9140, 121.6147, 7), ("xiamen", 24.4798, 118.0894, 5),
    ("kunming", 25.0389, 102.7183, 8), ("harbin", 45.8038, 126.5349, 10),
    ("jinan", 36.6512, 117.1201, 9), ("hefei", 31.8206, 117.2272, 9),
    ("fuzhou", 26.0745, 119.2965, 8), ("nanning", 22.8170, 108.3665, 8),
)  # fmt: skip
# Regional distribution centres near the big consumer regions.
WAREHOUSE_SITES: tuple[tuple[str, float, float], ...] = (
    ("wh-east-kunshan", 31.3856, 120.9807), ("wh-south-dongguan", 23.0205, 113.7518),
    ("wh-north-langfang", 39.5380, 116.6837), ("wh-west-chengdu", 30.5744, 103.9237),
    ("wh-central-wuhan", 30.5801, 114.2734),
)  # fmt: skip
# (category, lowest, highest list price in CNY, search queries)
CATEGORIES: tuple[tuple[str, int, int, tuple[str, ...]], ...] = (
    ("apparel", 59, 1299, ("down jacket", "连衣裙", "linen shirt")),
    ("shoes", 129, 1599, ("running shoes", "运动鞋", "leather boots")),
    ("beauty", 39, 1899, ("lipstick", "面霜", "serum")),
    ("electronics", 199, 8999, ("earbuds", "手机", "tablet")),
    ("home", 19, 2999, ("bedding", "空气净化器", "coffee machine")),
    ("food", 9, 399, ("tea gift box", "零食", "coffee beans")),
    ("baby", 29, 899, ("stroller", "奶粉", "diapers")),
    ("sports", 49, 3999, ("yoga mat", "自行车", "tent")),
)
QUERIES = {c[0]: c[3] for c in CATEGORIES}
# Session shares by channel (percent); store = POS sale, marketplace/phone = order only.
CHANNELS = ("app", "web", "mini_program", "marketplace", "store", "social", "phone")
_CHANNEL_CUM = list(accumulate((28, 20, 20, 12, 12, 5, 3)))
ONLINE_CHANNELS = ("app", "web", "mini_program")

# The fading-churn rule (see :mod:`omnipulse.simulator`): a customer's hidden risk is
# the chance, at each order placed, that this order starts their fade. At-risk
# customers (a share of CHURN_AT_RISK_SHARE) draw it from CHURN_AT_RISK, the others
# from CHURN_LOW_RISK. A fade lasts CHURN_FADE_DAYS (uniform); while it lasts the
# customer's vigour falls linearly from 1 to CHURN_FADE_FLOOR: a visit happens with
# probability vigour (browsing drops) and may end in an order with probability vigour
# again (so the gaps between orders grow as vigour squared). After the fade the
# customer never orders again and keeps CHURN_GONE_VISITS of their visits.
CHURN_AT_RISK_SHARE = 0.35
CHURN_AT_RISK = (0.08, 0.30)
CHURN_LOW_RISK = (0.0, 0.004)
CHURN_FADE_DAYS = (30.0, 75.0)
CHURN_FADE_FLOOR = 0.15
CHURN_GONE_VISITS = 0.1


def format_ts(ms: int, n: int) -> int | str:
    """Event time in the three accepted spellings, chosen by ``n`` so consumers see all."""
    r = n % 10
    if r < 5:
        return ms
    dt = datetime.fromtimestamp(ms // 1000, tz=UTC)
    if r < 8:
        return f"{dt:%Y-%m-%dT%H:%M:%S}.{ms % 1000:03d}Z"
    return f"{dt.astimezone(_CN_TZ):%Y-%m-%dT%H:%M:%S}.{ms % 1000:03d}+08:00"


@dataclass(frozen=True, slots=True)
class Sku:
    sku: str
    category: str
    premium: bool
    price: Decimal


@dataclass(frozen=True, slots=True)
class Customer:
    cid: str
    anon_id: str  # the id of the customer's own device before login
    home: int  # index of the home store (city)
    channel: str  # preferred channel
    big: bool  # big spender: premium baskets, converts more often
    churn_at: int | None  # event time after which the customer stops ordering
    streak_at: int | None  # start of the 3-day premium browsing streak (00:00 UTC)
    # hidden: the chance that an order placed starts the customer's fade (churn rule)
    churn_risk: float = 0.0


@dataclass(frozen=True, slots=True)
class StockLevel:
    on_hand: int
    reorder_point: int | None
    max_level: int | None
    lead_time_days: int | None


class World:
    """A seeded retail world; immutable once built, so every run of it starts equal."""

    def __init__(
        self,
        *,
        seed: int,
        customers: int,
        stores: int,
        warehouses: int,
        skus: int,
        start_ms: int,
    ) -> None:
        for name, v, lo in (
            ("customers", customers, 10),
            ("stores", stores, 1),
            ("warehouses", warehouses, 1),
            ("skus", skus, 20),
        ):
            if v < lo:
                raise ConfigError(f"simulator.{name}: must be at least {lo}, got {v}")
        self.seed, self.start_ms = seed, start_ms
        rng = random.Random(f"omnipulse-world-{seed}")
        self._build_locations(rng, stores, warehouses)
        self._build_skus(rng, skus)
        self._build_stock(rng)
        self._build_customers(rng, customers)

    # --- the world -------------------------------------------------------------------

    def _build_locations(self, rng: random.Random, stores: int, warehouses: int) -> None:
        self.locations: list[dict[str, Any]] = []
        for i in range(stores):
            name, lat, lon, _ = CITIES[i % len(CITIES)]
            suffix = "" if i < len(CITIES) else f"-{i // len(CITIES) + 1}"
            # Stores pick and pack by hand and pay courier rates; warehouses ship in bulk,
            # cheaper per km and per parcel. A nearby store still wins for far customers.
            self.locations.append(
                {
                    "location_id": f"store-{name}{suffix}",
                    "kind": "store",
                    "lat": round(lat + rng.uniform(-0.03, 0.03), 5),
                    "lon": round(lon + rng.uniform(-0.03, 0.03), 5),
                    "ship_cost_per_km": "0.05",
                    "handling_cost": "8.00",
                    "active": True,
                }
            )
        for i in range(warehouses):
            name, lat, lon = WAREHOUSE_SITES[i % len(WAREHOUSE_SITES)]
            suffix = "" if i < len(WAREHOUSE_SITES) else f"-{i // len(WAREHOUSE_SITES) + 1}"
            self.locations.append(
                {
                    "location_id": name + suffix,
                    "kind": "warehouse",
                    "lat": lat,
                    "lon": lon,
                    "ship_cost_per_km": "0.02",
                    "handling_cost": "3.00",
                    "active": True,
                }
            )
        self.store_idx = list(range(stores))
        self.wh_idx = list(range(stores, stores + warehouses))
        self._city_cum = list(accumulate(CITIES[i % len(CITIES)][3] for i in range(stores)))
        # Where a customer of each home store is served from: warehouses first, nearest
        # first, then stores; a rough stand-in for the engine's cost-based allocation.
        self.near = [
            sorted(
                range(len(self.locations)),
                key=lambda j, h=h: (
                    self.locations[j]["kind"] != "warehouse",
                    distance_km(self.locations[h], self.locations[j]),
                ),
            )
            for h in self.store_idx
        ]

    def _build_skus(self, rng: random.Random, n: int) -> None:
        self.skus: list[Sku] = []
        for i in range(n):
            cat, lo, hi, _ = CATEGORIES[i % len(CATEGORIES)]
            premium = i % 10 == 9  # every tenth SKU, so each category has a premium line
            # Log-uniform prices; premium lines sit in the top quarter of their category.
            u = rng.uniform(0.75, 1.0) if premium else rng.uniform(0.0, 0.7)
            price = Decimal(lo * (hi / lo) ** u).quantize(Decimal(1)) - Decimal("0.01")
            self.skus.append(Sku(f"SKU-{i + 1:05d}", cat, premium, price))
        # Zipf popularity over a shuffled order, so price and popularity are unrelated.
        ranks = list(range(1, n + 1))
        rng.shuffle(ranks)
        self._sku_cum = list(accumulate(1.0 / r for r in ranks))
        self.premium = [i for i, s in enumerate(self.skus) if s.premium]
        median = sorted(s.price for s in self.skus)[n // 2]
        self.pricey = [i for i, s in enumerate(self.skus) if s.price >= median]
        self.by_category = {
            c[0]: [i for i, s in enumerate(self.skus) if s.category == c[0]] for c in CATEGORIES
        }
        # Popular, ordinary SKUs that sell out online early but stay on store shelves.
        by_rank = sorted(range(n), key=lambda i: ranks[i])
        popular = by_rank[5:40]
        self.store_only = {i for i in popular if not self.skus[i].premium}
        self.store_only = set(sorted(self.store_only)[: max(2, n // 100)])
        # Limited editions: best sellers that only the warehouses get, a few units per
        # drop, so carts holding them see "only N left" and, between drops, a sell-out.
        hits = [i for i in by_rank[2:8] if not self.skus[i].premium and i not in self.store_only]
        self.limited = set(hits[: max(1, n // 200)])
        # ...each from one distribution centre (index into `locations`)
        self.limited_at = {s: self.wh_idx[k % len(self.wh_idx)] for k, s in enumerate(hits)}

    def _build_stock(self, rng: random.Random) -> None:
        self.initial: dict[tuple[int, int], StockLevel] = {}
        for s in range(len(self.skus)):
            for loc in range(len(self.locations)):
                wh = loc in self.wh_idx
                if s in self.limited:  # no replenishment policy: drops come when they come
                    units = rng.randint(2, 4) if loc == self.limited_at[s] else 0
                    self.initial[s, loc] = StockLevel(units, None, None, None)
                    continue
                if s in self.store_only:
                    on_hand = 2 if wh else rng.randint(2, 6)
                else:
                    on_hand = rng.randint(60, 400) if wh else rng.randint(4, 30)
                if rng.random() < 0.7:  # the rest leave the reorder point to the engine
                    rp = rng.randint(20, 60) if wh else rng.randint(3, 8)
                    mx = max(on_hand, rp * 4)
                    lead = rng.randint(2, 5) if wh else rng.randint(1, 3)
                    self.initial[s, loc] = StockLevel(on_hand, rp, mx, lead)
                else:
                    self.initial[s, loc] = StockLevel(on_hand, None, None, None)

    def _build_customers(self, rng: random.Random, n: int) -> None:
        self.customers: list[Customer] = []
        weights = []
        # Own stream for the hidden churn risk, so the rest of the world is drawn as before.
        crng = random.Random(f"omnipulse-churn-{self.seed}")
        for i in range(n):
            big = rng.random() < 0.02
            churn_at = streak_at = None
            r = rng.random()
            if r < 0.15:
                churn_at = self.start_ms + int(rng.uniform(3, 25) * DAY_MS)
            elif r < 0.17 and not big:
                day = self.start_ms // DAY_MS + rng.randint(1, 14)
                streak_at = day * DAY_MS
            home = bisect(self._city_cum, rng.random() * self._city_cum[-1])
            channel = CHANNELS[bisect(_CHANNEL_CUM, rng.random() * _CHANNEL_CUM[-1])]
            anon = f"anon-{rng.getrandbits(48):012x}"
            at_risk = crng.random() < CHURN_AT_RISK_SHARE
            risk = crng.uniform(*(CHURN_AT_RISK if at_risk else CHURN_LOW_RISK))
            self.customers.append(
                Customer(f"C{i + 1:06d}", anon, home, channel, big, churn_at, streak_at, risk)
            )
            weights.append(rng.paretovariate(1.2) * (5.0 if big else 1.0))  # heavy tail
        self._cust_cum = list(accumulate(weights))

    # --- output ----------------------------------------------------------------------

    def reference_data(self) -> list[SimRecord]:
        """Locations first, then the opening ``stock_set`` of every (SKU, location)."""
        out: list[SimRecord] = []
        for n, loc in enumerate(self.locations, 1):
            value = {"event_id": f"sim-{self.seed}-ref-{n}", "ts": self.start_ms, **loc}
            out.append(SimRecord("locations", loc["location_id"], value))
        for n, ((s, loc), lv) in enumerate(self.initial.items(), len(out) + 1):
            sku = self.skus[s]
            value = {
                "event_id": f"sim-{self.seed}-ref-{n}",
                "type": "stock_set",
                "ts": self.start_ms,
                "sku": sku.sku,
                "location_id": self.locations[loc]["location_id"],
                "on_hand": lv.on_hand,
                "list_price": str(sku.price),
            }
            if lv.reorder_point is not None:
                value |= {
                    "reorder_point": lv.reorder_point,
                    "max_level": lv.max_level,
                    "lead_time_days": lv.lead_time_days,
                }
            out.append(SimRecord("stock", sku.sku, value))
        return out

    # --- random picks ----------------------------------------------------------------

    def pick_sku(self, rng: random.Random) -> int:
        return bisect(self._sku_cum, rng.random() * self._sku_cum[-1])

    def pick_customer(self, rng: random.Random) -> Customer:
        return self.customers[bisect(self._cust_cum, rng.random() * self._cust_cum[-1])]


def distance_km(a: dict[str, Any], b: dict[str, Any]) -> float:
    """Great-circle distance between two records with ``lat``/``lon`` (haversine)."""
    la1, lo1, la2, lo2 = map(math.radians, (a["lat"], a["lon"], b["lat"], b["lon"]))
    h = (
        math.sin((la2 - la1) / 2) ** 2
        + math.cos(la1) * math.cos(la2) * math.sin((lo2 - lo1) / 2) ** 2
    )
    return 12_742.0 * math.asin(math.sqrt(h))


def pick_channel(rng: random.Random) -> str:
    return CHANNELS[bisect(_CHANNEL_CUM, rng.random() * _CHANNEL_CUM[-1])]


def money(d: Decimal, as_number: bool) -> str | float:
    """Both spellings the contract accepts; float repr of a 2-decimal amount is exact."""
    return float(d) if as_number else str(d)


def line_total(lines: list[tuple[int, int, Decimal]]) -> Decimal:
    return sum((p * q for _, q, p in lines), Decimal(0)).quantize(CENT, ROUND_HALF_UP)


def malform(
    rng: random.Random, topic: str, key: str | None, value: dict[str, Any], ts: int, event_id: str
) -> SimRecord:
    """A broken copy of ``value`` under a new event id, as raw bytes: what a buggy
    channel system might send, and what the engine must dead-letter."""
    v = {**value, "event_id": event_id}
    kind = rng.randrange(7)
    if kind == 0:
        return SimRecord(topic, key, orjson.dumps(v)[: -rng.randint(2, 12)])  # truncated
    if kind == 1:
        return SimRecord(topic, key, b"\xff\xfe" + orjson.dumps(v))  # not UTF-8
    if kind == 2:  # a required field is missing
        required = {
            "clicks": ("session_id",),
            "carts": ("customer_id", "sku", "qty"),
            "orders": ("customer_id", "order_id", "lines", "total", "currency"),
            "stock": ("sku", "location_id", "delta", "on_hand"),
        }.get(topic, ())
        del v[rng.choice([f for f in ("event_id", "type", "ts", *required) if f in v])]
    elif kind == 3 and ("qty" in v or "lines" in v or "on_hand" in v):  # negative quantity
        if "qty" in v:
            v["qty"] = -rng.randint(1, 3)
        elif "lines" in v:
            v["lines"] = [{**v["lines"][0], "qty": -1}, *v["lines"][1:]]
        else:
            v["on_hand"] = -5
    elif kind == 5:  # unparseable, impossible or far-future event time
        v["ts"] = rng.choice(("yesterday", "2026-13-45T99:00:00Z", ts + 40 * DAY_MS))
    elif kind == 6:  # a field of the wrong JSON type
        field = next((f for f in ("qty", "lines", "delta", "on_hand") if f in v), "event_id")
        v[field] = {"qty": "two", "lines": "SKU-00001 x2", "event_id": 42}.get(field, "-3")
    else:  # an unknown type (also kind 3 where there is no quantity to break)
        v["type"] = rng.choice(("teleport", "cart_explode", "PageView"))
    return SimRecord(topic, key, orjson.dumps(v))
