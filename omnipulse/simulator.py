"""Deterministic omnichannel retail traffic for ``omnipulse simulate``, demos and tests.

Pure Python, no I/O: :class:`Simulator` yields :class:`SimRecord` items (logical topic,
key, value) and a connector produces them to Kafka (encode values with
:func:`to_json_bytes`). The same seed and parameters give the same records on every run
and on every call of :meth:`Simulator.events`. Send :meth:`Simulator.reference_data`
(locations, then the opening stock of every SKU at every location) before the stream.

**Simulated time.** Event time starts at ``start_ms`` and advances by ``time_scale``
simulated seconds per yielded event on average, so N events cover about
``N * time_scale`` seconds. Sessions arrive as a random process whose gaps grow with
the number of events each arrival produced, while events inside a session keep their
realistic spacing (clicks seconds apart, an order minutes after checkout, a return
days later); everything is merged in event-time order (``ts`` never decreases).

- ``time_scale=1`` (default): about one simulated second per event;
- ``time_scale=120`` (demo): 60 s at 2,000 events/s (120k events) cover about
  150 days, so abandoned carts (1 h), journey steps (1/3/7 d) and sleeping customers
  (90 d without an order) all occur within a minute of wall time.

(Slightly less than ``N * time_scale``: the few sessions scheduled up front for
churners and premium browsers are not counted in the gaps.) A live engine rejects
events more than a day ahead of its wall clock, so for a fast demo put ``start_ms`` at
least ``N * time_scale`` seconds in the past.

**Contents** (so that every trigger kind can fire): heavy-tailed (Pareto) customer
activity; sessions on web, app, mini_program and social with page, search and product
views, some starting anonymous and stitched to the customer at login (a click carrying
both ids); carts abandoned or turned into an order minutes later, each customer's cart
kept open across visits as a shop keeps it (a later order buys what is left in it, or
the shopper removes the old lines first; any order covers the cart lines it contains,
as the engine reads it); POS sales
(``in_store``), marketplace and phone orders, pickup and delivery; cancellations and
returns of earlier orders (same lines and total); big spenders reaching the gold and
platinum tiers; churners who stop ordering after 3-25 days and browse far less;
customers who fade out by the churn rule below; a few
customers viewing premium products on 3-4 consecutive days without ordering; order
lines priced more than 5 % below the list price; stock adjustments pushing stock
below reorder points and restocks (``stock_set``) after the lead time; a few SKUs sold
out at every warehouse early on but still on store shelves; a few best-selling limited
editions stocked only at one warehouse, 2-5 units per drop every 2-7 days and never
adjusted or replenished otherwise, so demand outruns them: carts holding them get
"only N left" reminders and, between drops, find them sold out.

**Churn rule** (known, so that a churn model can be checked against it). Every
customer has a hidden risk (:class:`~omnipulse.simworld.Customer` ``churn_risk``):
about a third are at risk (8-30 %), the rest nearly never churn (under 0.4 %). Each
order placed starts the customer's *fade* with probability equal to that risk. A fade
lasts 30-75 days, during which the customer's vigour falls linearly from 1 to 0.15:
each visit happens with probability vigour (browsing and cart activity drop) and can
end in an order only with probability vigour again (the gaps between orders grow).
When the fade is over the customer never orders again and makes a tenth of their
visits. So churners show a growing gap against their usual interval and falling
activity before they stop for good, while the onset is hidden and per order. The
decisions use their own random stream (``omnipulse-churn-traffic-{seed}``); the rule's
constants are the ``CHURN_*`` values in :mod:`omnipulse.simworld`. (The 3-25 day
churners above are a separate, older rule for short demos.)

**Malformed input.** With ``bad_share > 0``, after each event an extra malformed record
is injected with that probability, as raw ``bytes``: truncated JSON, invalid UTF-8, a
missing field, a negative quantity, an unknown type, a bad timestamp, a wrong field
type. They use their own random stream and ids (``sim-{seed}-bad-{n}``), so the
well-formed stream is the same with or without them.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Iterator
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from common.errors import ConfigError
from connectors.records import TOPICS, SimRecord, record_key, to_json_bytes
from omnipulse.simworld import (
    CATEGORIES,
    CENT,
    CHURN_FADE_DAYS,
    CHURN_FADE_FLOOR,
    CHURN_GONE_VISITS,
    CURRENCY,
    DAY_MS,
    HOUR_MS,
    MIN_MS,
    ONLINE_CHANNELS,
    QUERIES,
    Customer,
    World,
    format_ts,
    line_total,
    malform,
    money,
    pick_channel,
)

__all__ = ["TOPICS", "SimRecord", "Simulator", "format_ts", "record_key", "to_json_bytes"]

Line = tuple[int, int, Decimal]  # (sku index, qty, unit price)


class Simulator(World):
    """A seeded retail world and its endless traffic; see the module docstring."""

    def __init__(
        self,
        *,
        seed: int = 7,
        customers: int = 5000,
        stores: int = 24,
        warehouses: int = 3,
        skus: int = 400,
        start_ms: int,
        time_scale: float = 1.0,
        bad_share: float = 0.0,
    ) -> None:
        if not time_scale > 0:
            raise ConfigError(f"simulator.time_scale: must be positive, got {time_scale}")
        if not 0.0 <= bad_share < 1.0:
            raise ConfigError(f"simulator.bad_share: must be in [0, 1), got {bad_share}")
        world = {"customers": customers, "stores": stores, "warehouses": warehouses, "skus": skus}
        super().__init__(seed=seed, start_ms=start_ms, **world)
        self.time_scale = time_scale
        self.bad_share = bad_share

    def events(self) -> Iterator[SimRecord]:
        """The endless traffic stream in event-time order; each call starts afresh."""
        return _Run(self).stream()


class _Run:
    """The mutable state of one pass over the stream (world state stays untouched)."""

    def __init__(self, sim: Simulator) -> None:
        self.sim = sim
        self.rng = random.Random(f"omnipulse-traffic-{sim.seed}")
        self.bad_rng = random.Random(f"omnipulse-bad-{sim.seed}")
        # Future events: (ts, seq, topic, key, body); seq keeps ties in creation order.
        self.heap: list[tuple[int, int, str, str | None, dict[str, Any]]] = []
        self.seq = self.sessions = self.orders = self.visitors = 0
        # The simulator's own idea of stock, used only to keep its adjustments plausible
        # and to schedule restocks; the engine keeps the authoritative figures.
        self.stock = {k: v.on_hand for k, v in sim.initial.items()}
        self.pending: dict[tuple[int, int], tuple[int, int]] = {}  # restock (at, level)
        self.warehouses = set(sim.wh_idx)
        # Next drop of each limited edition (event time).
        self.drop_at = {s: sim.start_ms + DAY_MS // 2 for s in sorted(sim.limited)}
        # Each customer's open cart, kept across visits as a shop keeps it: customer id
        # -> {sku index: [qty, unit price]}; an order covers the lines it contains.
        self.carts: dict[str, dict[int, list[Any]]] = {}
        # The churn rule: customer id -> (fade start, fade end), event time; own stream.
        self.fades: dict[str, tuple[int, int]] = {}
        self.churn_rng = random.Random(f"omnipulse-churn-traffic-{sim.seed}")

    def push(self, ts: int, topic: str, key: str | None, body: dict[str, Any]) -> None:
        self.seq += 1
        heapq.heappush(self.heap, (ts, self.seq, topic, key, body))

    def emit(
        self, ts: int, topic: str, key: str, kind: str, base: dict[str, Any], **f: Any
    ) -> None:
        self.push(ts, topic, key, {"type": kind, **base, **f})

    def stream(self) -> Iterator[SimRecord]:
        sim, rng, heap = self.sim, self.rng, self.heap
        prefix = f"sim-{sim.seed}-"
        scale_ms = sim.time_scale * 1000.0
        t = sim.start_ms
        self._specials(t)
        n = bad = 0
        while True:
            before = self.seq
            self._drops(t)
            self._arrival(t)
            # Scale the gap by the events just scheduled: time per event stays time_scale.
            t_next = t + int(rng.expovariate(1.0) * scale_ms * (self.seq - before))
            while heap and heap[0][0] < t_next:
                ts, _, topic, key, body = heapq.heappop(heap)
                n += 1
                value = {"event_id": f"{prefix}{n}", "ts": format_ts(ts, n), **body}
                yield SimRecord(topic, key, value)
                if sim.bad_share and self.bad_rng.random() < sim.bad_share:
                    bad += 1
                    yield malform(self.bad_rng, topic, key, value, ts, f"{prefix}bad-{bad}")
            t = t_next

    # --- arrivals --------------------------------------------------------------------

    def _specials(self, t0: int) -> None:
        """Schedule what chance alone would make too rare for a short demo."""
        sim, rng = self.sim, self.rng
        for s in sorted(sim.store_only):  # sold out online within the first hours
            for w in sim.wh_idx:
                self.stock[s, w] = 0
                at = t0 + rng.randint(10, 90) * MIN_MS
                self._stock_event(at, s, w, type="stock_set", on_hand=0, reason="stock_count")
        for c in sim.customers:
            if c.churn_at is not None:  # one good order before going quiet
                at = t0 + int(rng.uniform(0.05, 0.9) * (c.churn_at - t0))
                self._session(at, c, rng.choice(ONLINE_CHANNELS), True, force=True)
            if c.streak_at is not None:  # evening browsing of premium lines, day after day
                for d in range(3 + (rng.random() < 0.5)):
                    at = c.streak_at + d * DAY_MS + 11 * HOUR_MS + rng.randint(0, 120) * MIN_MS
                    self._session(at, c, "app", False, premium=True)

    def _arrival(self, t: int) -> None:
        sim, rng = self.sim, self.rng
        r = rng.random()
        if r < 0.10:
            return self._stock_adjust(t)
        if r < 0.16:
            return self._visitor(t)
        c = sim.pick_customer(rng)
        churned = c.churn_at is not None and t >= c.churn_at
        if churned and rng.random() < 0.7:
            return None  # churners browse far less, so their activity visibly drops
        vigour = self.vigour(c, t)
        if vigour < 1.0:
            crng = self.churn_rng
            if vigour <= 0.0:  # faded out: no more orders, a tenth of the visits
                if crng.random() >= CHURN_GONE_VISITS:
                    return None
                churned = True
            elif crng.random() >= vigour:
                return None  # fading: fewer visits...
            elif crng.random() >= vigour:
                churned = True  # ...and fewer of them end in an order
        in_streak = c.streak_at is not None and c.streak_at - DAY_MS <= t < c.streak_at + 5 * DAY_MS
        channel = c.channel if rng.random() < 0.7 else pick_channel(rng)
        return self._session(t, c, channel, not (churned or in_streak))

    def vigour(self, c: Customer, t: int) -> float:
        """The churn rule's activity factor at event time t: 1 before a fade, 0 after."""
        fade = self.fades.get(c.cid)
        if fade is None or t < fade[0]:
            return 1.0
        start, end = fade
        if t >= end:
            return 0.0
        return 1.0 - (1.0 - CHURN_FADE_FLOOR) * (t - start) / (end - start)

    def _session(
        self, t: int, c: Customer, channel: str, can_order: bool, *, force: bool = False,
        premium: bool = False,
    ) -> None:  # fmt: skip
        if channel == "store":
            return self._pos_sale(t, c) if can_order else None
        if channel in ("marketplace", "phone"):
            return self._direct_order(t, c, channel) if can_order else None
        sim, rng = self.sim, self.rng
        self.sessions += 1
        base = {"channel": channel, "session_id": f"s-{sim.seed}-{self.sessions}"}
        logged_in = premium or force or rng.random() < 0.7
        key = c.cid if logged_in else c.anon_id
        who = {**base, ("customer_id" if logged_in else "anonymous_id"): key}
        self.emit(t, "clicks", key, "page_view", who, page="home")
        viewed: list[int] = []
        cat = rng.choice(CATEGORIES)[0]
        for _ in range(rng.randint(2, 4) if premium else 1 + min(int(rng.expovariate(0.4)), 12)):
            t += rng.randint(4, 90) * 1000
            if premium or (c.big and rng.random() < 0.5):
                s = rng.choice(sim.premium)
            else:
                s = rng.choice(sim.by_category[cat]) if rng.random() < 0.5 else sim.pick_sku(rng)
            sku = sim.skus[s]
            if not premium and rng.random() < 0.2:
                query = rng.choice(QUERIES[sku.category])
                self.emit(t, "clicks", key, "search", who, query=query)
                t += rng.randint(3, 20) * 1000
            extra: dict[str, Any] = {}
            if channel == "app" and rng.random() < 0.3:
                extra = self._near(c.home, 0.05)  # the phone's position
            elif rng.random() < 0.1:
                extra = {"store_id": sim.locations[c.home]["location_id"]}
            self.emit(t, "clicks", key, "product_view", who, sku=sku.sku,
                      category=sku.category, premium=sku.premium, **extra)  # fmt: skip
            viewed.append(s)
        p_cart = 1.0 if force else 0.0 if premium else 0.45 if can_order else 0.1
        if rng.random() >= p_cart:
            return None
        if not logged_in:  # carts need a customer: log in, stitching the anonymous history
            t += rng.randint(5, 40) * 1000
            both = {**base, "customer_id": c.cid, "anonymous_id": c.anon_id}
            self.emit(t, "clicks", c.cid, "page_view", both, page="login")
        who = {**base, "customer_id": c.cid}
        cart = self.carts.setdefault(c.cid, {})  # what earlier visits left in it stays
        earlier = list(cart)
        added: set[int] = set()
        for _ in range(1 + (rng.random() < 0.35) + (rng.random() < 0.12) + 2 * force):
            s = self._pick(c, force) if force or rng.random() < 0.3 else rng.choice(viewed)
            qty = 1 if rng.random() < 0.75 else rng.randint(2, 3)
            price = cart[s][1] if s in cart else self._price(s, channel)
            t += rng.randint(5, 60) * 1000
            up = money(price, rng.random() < 0.3)
            self.emit(
                t, "carts", c.cid, "cart_add", who, sku=sim.skus[s].sku, qty=qty, unit_price=up
            )
            cart.setdefault(s, [0, price])[0] += qty
            added.add(s)
        if not force and rng.random() < 0.12:
            s = rng.choice(list(cart))
            qty, price = cart.pop(s)
            t += rng.randint(5, 60) * 1000
            sku_id, up = sim.skus[s].sku, str(price)
            self.emit(t, "carts", c.cid, "cart_remove", who, sku=sku_id, qty=qty, unit_price=up)
            if not cart:
                return None
        convert = force or (can_order and rng.random() < (0.8 if c.big else 0.55))
        if convert and rng.random() < 0.5:  # tidy up what earlier visits left, then pay
            for s in earlier:
                if s in cart and s not in added:
                    qty, price = cart.pop(s)
                    t += rng.randint(3, 20) * 1000
                    sku_id, up = sim.skus[s].sku, str(price)
                    self.emit(t, "carts", c.cid, "cart_remove", who, sku=sku_id, qty=qty,
                              unit_price=up)  # fmt: skip
        if not cart:
            return None
        if convert or rng.random() < 0.3:
            t += rng.randint(10, 120) * 1000
            self.emit(t, "carts", c.cid, "checkout_start", who)
        if not convert:
            return None  # abandoned: the engine's 1 h timer takes it from here
        t += rng.randint(1, 15) * MIN_MS
        lines = [(s, q, p) for s, (q, p) in cart.items()]  # the whole cart is bought
        if rng.random() < 0.2:
            return self._order(t, c, channel, lines, c.home)
        return self._order(t, c, channel, lines, None)

    def _pos_sale(self, t: int, c: Customer) -> None:
        sim, rng = self.sim, self.rng
        store = c.home if rng.random() < 0.85 else rng.choice(sim.store_idx)
        lines: dict[int, Line] = {}
        for _ in range(1 + (rng.random() < 0.4) + (rng.random() < 0.15) + 2 * c.big):
            for _try in range(4):  # a till sells what is on the shelf
                s = self._pick(c, False)
                if self._level(s, store, t) > 0:
                    break
            lines[s] = (s, 1 if rng.random() < 0.8 else 2, self._price(s, "store"))
        self._order(t, c, "store", list(lines.values()), store, in_store=True)

    def _direct_order(self, t: int, c: Customer, channel: str) -> None:
        lines: dict[int, Line] = {}
        for _ in range(1 + (self.rng.random() < 0.3) + 2 * c.big):
            s = self._pick(c, False)
            lines[s] = (s, 1, self._price(s, channel))
        self._order(t, c, channel, list(lines.values()), None)

    def _visitor(self, t: int) -> None:
        """A visitor who never logs in: anonymous clicks only."""
        sim, rng = self.sim, self.rng
        self.visitors += 1
        self.sessions += 1
        anon = f"anon-v{sim.seed}-{self.visitors}"
        channel = rng.choice((*ONLINE_CHANNELS, "social"))
        who = {
            "channel": channel,
            "anonymous_id": anon,
            "session_id": f"s-{sim.seed}-{self.sessions}",
        }
        self.emit(t, "clicks", anon, "page_view", who, page="promo")
        for _ in range(rng.randint(0, 3)):
            t += rng.randint(4, 60) * 1000
            sku = sim.skus[sim.pick_sku(rng)]
            self.emit(t, "clicks", anon, "product_view", who, sku=sku.sku,
                      category=sku.category, premium=sku.premium)  # fmt: skip

    # --- orders ----------------------------------------------------------------------

    def _order(
        self, t: int, c: Customer, channel: str, lines: list[Line], store: int | None, *,
        in_store: bool = False,
    ) -> None:  # fmt: skip
        sim, rng = self.sim, self.rng
        self.orders += 1
        oid = f"ord-{sim.seed}-{self.orders:08d}"
        as_num = rng.random() < 0.3
        total = money(line_total(lines), as_num)

        def body(kind: str) -> dict[str, Any]:
            return {
                "type": kind,
                "channel": channel,
                "customer_id": c.cid,
                "order_id": oid,
                "lines": [
                    {"sku": sim.skus[s].sku, "qty": q, "unit_price": money(p, as_num)}
                    for s, q, p in lines
                ],
                "total": total,
                "currency": CURRENCY,
            }

        placed = body("order_placed")
        if store is None:
            placed["fulfilment"] = {"mode": "delivery", **self._near(c.home, 0.08)}
        else:
            mode = "in_store" if in_store else "pickup"
            placed["fulfilment"] = {"mode": mode, "store_id": sim.locations[store]["location_id"]}
        self.push(t, "orders", c.cid, placed)
        if c.cid not in self.fades and self.churn_rng.random() < c.churn_risk:
            days = self.churn_rng.uniform(*CHURN_FADE_DAYS)
            self.fades[c.cid] = (t, t + int(days * DAY_MS))
        cart = self.carts.get(c.cid)
        if cart:  # as the engine does: the order covers the cart lines it contains
            for s, _, _ in lines:
                cart.pop(s, None)
        for s, q, _ in lines:
            loc = store
            if loc is None:
                loc = next((j for j in sim.near[c.home] if self._level(s, j, t) >= q), None)
            if loc is not None:
                self._take(s, loc, q, t)
        r = rng.random()
        if not in_store and r < 0.05:
            self.push(t + rng.randint(5, 180) * MIN_MS, "orders", c.cid, body("order_cancelled"))
        elif r < 0.11:
            at = t + rng.randint(2, 20) * DAY_MS + rng.randint(0, 600) * MIN_MS
            self.push(at, "orders", c.cid, body("order_returned"))

    def _pick(self, c: Customer, pricey: bool) -> int:
        """A SKU to buy: big spenders favour premium lines, popularity decides the rest."""
        rng = self.rng
        if c.big and rng.random() < 0.6:
            return rng.choice(self.sim.premium)
        return rng.choice(self.sim.pricey) if pricey else self.sim.pick_sku(rng)

    def _price(self, s: int, channel: str) -> Decimal:
        """List price mostly; small promotions within 5 %; some deep (alert-worthy) cuts."""
        rng, price = self.rng, self.sim.skus[s].price
        deep = 0.10 if channel == "marketplace" else 0.025
        r = rng.random()
        if r < deep:
            factor = 1 - rng.uniform(0.06, 0.25)
        elif r < deep + 0.08:
            factor = 1 - rng.uniform(0.005, 0.04)
        else:
            return price
        return (price * Decimal(f"{factor:.4f}")).quantize(CENT, ROUND_HALF_UP)

    def _near(self, home: int, spread: float) -> dict[str, float]:
        loc, rng = self.sim.locations[home], self.rng
        return {
            "lat": round(loc["lat"] + rng.gauss(0, spread), 5),
            "lon": round(loc["lon"] + rng.gauss(0, spread), 5),
        }

    # --- stock -----------------------------------------------------------------------

    def _stock_event(self, t: int, s: int, loc: int, **fields: Any) -> None:
        sku = self.sim.skus[s].sku
        body = {"sku": sku, "location_id": self.sim.locations[loc]["location_id"], **fields}
        self.push(t, "stock", sku, body)

    def _level(self, s: int, loc: int, t: int) -> int:
        p = self.pending.get((s, loc))
        if p is not None and t >= p[0]:  # the replenishment has arrived
            self.stock[s, loc] = p[1]
            del self.pending[s, loc]
        return self.stock[s, loc]

    def _take(self, s: int, loc: int, qty: int, t: int) -> None:
        self.stock[s, loc] = max(0, self._level(s, loc, t) - qty)
        self._maybe_restock(s, loc, t)

    def _stock_adjust(self, t: int) -> None:
        sim, rng = self.sim, self.rng
        s = sim.pick_sku(rng)
        wh = rng.random() < 0.2
        loc = rng.choice(sim.wh_idx if wh else sim.store_idx)
        if s in sim.limited or (wh and s in sim.store_only):
            return
        level = self._level(s, loc, t)
        if level > 0 and rng.random() < 0.85:
            delta = -min(level, rng.randint(1, 15 if wh else 4))
            reason = rng.choice(("shrinkage", "damaged", "transfer_out", "external_sale"))
        else:
            delta = rng.randint(1, 3)
            reason = rng.choice(("count_correction", "transfer_in", "customer_return"))
        self.stock[s, loc] = level + delta
        self._stock_event(t, s, loc, type="stock_adjust", delta=delta, reason=reason)
        self._maybe_restock(s, loc, t)

    def _drops(self, t: int) -> None:
        """A limited edition comes in a few units at a time, to its one warehouse."""
        rng = self.rng
        for s, at in self.drop_at.items():
            if t < at:
                continue
            w = self.sim.limited_at[s]
            level = max(self._level(s, w, t), rng.randint(2, 5))
            self.stock[s, w] = level
            self._stock_event(t, s, w, type="stock_set", on_hand=level, reason="limited_drop")
            self.drop_at[s] = t + int(rng.uniform(2.0, 7.0) * DAY_MS)

    def _maybe_restock(self, s: int, loc: int, t: int) -> None:
        """(s, S) replenishment after the lead time, as a store's supply chain would do."""
        if (s, loc) in self.pending or s in self.sim.limited:
            return
        if s in self.sim.store_only and loc in self.warehouses:
            return
        init = self.sim.initial[s, loc]
        rp = init.reorder_point if init.reorder_point is not None else max(1, init.on_hand // 4)
        if self.stock[s, loc] > rp:
            return
        at = t + int((init.lead_time_days or 3) * DAY_MS * self.rng.uniform(0.8, 1.3))
        level = init.max_level or init.on_hand
        self.pending[s, loc] = (at, level)
        self._stock_event(at, s, loc, type="stock_set", on_hand=level, reason="replenishment")
