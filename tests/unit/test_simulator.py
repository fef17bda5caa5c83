"""The traffic simulator: determinism, the SPEC §3 contract, and the situations that
every trigger kind needs (checked on one shared run of 200k events)."""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from datetime import datetime
from decimal import Decimal
from itertools import islice
from typing import Any

import orjson
import pytest

from common.errors import ConfigError
from omnipulse.simulator import SimRecord, Simulator, to_json_bytes

START = 1_767_225_600_000  # 2026-01-01T00:00:00Z
DAY = 86_400_000
N = 200_000
SCALE = 60.0  # simulated seconds per event: 200k events cover about four months

TYPES = {
    "clicks": {"page_view", "product_view", "search"},
    "carts": {"cart_add", "cart_remove", "checkout_start"},
    "orders": {"order_placed", "order_cancelled", "order_returned"},
    "stock": {"stock_set", "stock_adjust"},
}
RFC3339 = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)")
CHANNEL = re.compile(r"[a-z][a-z0-9_]*")


def ts_ms(v: dict[str, Any]) -> int:
    ts = v["ts"]
    return ts if isinstance(ts, int) else int(datetime.fromisoformat(ts).timestamp() * 1000)


def dec(x: Any) -> Decimal:
    return Decimal(x if isinstance(x, str) else str(x))


def problems(topic: str, v: dict[str, Any]) -> list[str]:
    """The SPEC §3 required fields and types, written out independently of the engine."""
    bad: list[str] = []

    def need(cond: bool, what: str) -> None:
        if not cond:
            bad.append(what)

    def money_ok(x: Any) -> bool:
        if isinstance(x, bool) or not isinstance(x, str | int | float):
            return False
        try:
            d = dec(x)
        except ArithmeticError:
            return False
        return d.is_finite() and d >= 0 and d == d.quantize(Decimal("0.01"))

    def pos_int(x: Any) -> bool:
        return isinstance(x, int) and not isinstance(x, bool) and x > 0

    eid = v.get("event_id")
    need(isinstance(eid, str) and 0 < len(eid) <= 128, "event_id")
    ts = v.get("ts")
    need(
        (isinstance(ts, int) and not isinstance(ts, bool) and ts > 946_684_800_000)
        or (isinstance(ts, str) and RFC3339.fullmatch(ts) is not None),
        "ts",
    )
    if topic == "locations":
        need(isinstance(v.get("location_id"), str), "location_id")
        need(v.get("kind") in ("store", "warehouse"), "kind")
        need(isinstance(v.get("lat"), float) and -90 <= v["lat"] <= 90, "lat")
        need(isinstance(v.get("lon"), float) and -180 <= v["lon"] <= 180, "lon")
        need(money_ok(v.get("ship_cost_per_km")), "ship_cost_per_km")
        need(money_ok(v.get("handling_cost")), "handling_cost")
        need(isinstance(v.get("active"), bool), "active")
        return bad
    need(v.get("type") in TYPES.get(topic, ()), "type")
    ch = v.get("channel")
    need((topic == "stock" and ch is None) or (isinstance(ch, str) and CHANNEL.fullmatch(ch)), "ch")
    cid, anon = v.get("customer_id"), v.get("anonymous_id")
    if topic in ("carts", "orders"):
        need(isinstance(cid, str) and cid != "", "customer_id")
    if topic == "clicks":
        need(isinstance(cid, str) or isinstance(anon, str), "customer_id or anonymous_id")
        need(isinstance(v.get("session_id"), str), "session_id")
        need(isinstance(v.get("premium", False), bool), "premium")
        if v.get("type") == "product_view":
            need(isinstance(v.get("sku"), str), "sku")
    elif topic == "carts":
        need(isinstance(v.get("session_id", ""), str), "session_id")
        if v.get("type") != "checkout_start":  # a checkout covers the whole cart
            need(isinstance(v.get("sku"), str), "sku")
            need(pos_int(v.get("qty")), "qty")
            need(money_ok(v.get("unit_price")), "unit_price")
    elif topic == "orders":
        need(isinstance(v.get("order_id"), str), "order_id")
        lines = v.get("lines")
        need(isinstance(lines, list) and len(lines) > 0, "lines")
        for line in lines if isinstance(lines, list) else []:
            need(isinstance(line, dict) and isinstance(line.get("sku"), str), "lines.sku")
            need(isinstance(line, dict) and pos_int(line.get("qty")), "lines.qty")
            need(isinstance(line, dict) and money_ok(line.get("unit_price")), "lines.unit_price")
        need(money_ok(v.get("total")), "total")
        need(v.get("currency") == "CNY", "currency")
        if v.get("type") == "order_placed":
            f = v.get("fulfilment") or {}
            mode = f.get("mode")
            if mode == "delivery":
                need(isinstance(f.get("lat"), float) and isinstance(f.get("lon"), float), "ful")
            else:
                need(mode in ("pickup", "in_store") and isinstance(f.get("store_id"), str), "ful")
    elif topic == "stock":
        need(isinstance(v.get("sku"), str), "sku")
        need(isinstance(v.get("location_id"), str), "location_id")
        if v.get("type") == "stock_set":
            need(isinstance(v.get("on_hand"), int) and v["on_hand"] >= 0, "on_hand")
        else:
            need(isinstance(v.get("delta"), int) and v["delta"] != 0, "delta")
    else:
        bad.append(f"unknown topic {topic}")
    return bad


@pytest.fixture(scope="module")
def sim() -> Simulator:
    return Simulator(seed=11, start_ms=START, time_scale=SCALE)


@pytest.fixture(scope="module")
def ref(sim: Simulator) -> list[SimRecord]:
    return sim.reference_data()


@pytest.fixture(scope="module")
def run(sim: Simulator) -> list[tuple[str, dict[str, Any], int]]:
    out = []
    for r in islice(sim.events(), N):
        assert isinstance(r.value, dict)
        out.append((r.topic, r.value, ts_ms(r.value)))
    return out


def of(run: list[tuple[str, dict[str, Any], int]], topic: str, kind: str | None = None):
    return [(v, t) for tp, v, t in run if tp == topic and (kind is None or v["type"] == kind)]


def test_same_seed_gives_the_same_stream() -> None:
    def head(seed: int) -> list[bytes]:
        s = Simulator(seed=seed, customers=300, skus=60, start_ms=START, time_scale=30)
        ref = [to_json_bytes(r.value) for r in s.reference_data()]
        return ref + [r.topic.encode() + to_json_bytes(r.value) for r in islice(s.events(), 3000)]

    assert head(3) == head(3)
    assert head(3) != head(4)
    s = Simulator(seed=3, customers=300, skus=60, start_ms=START)
    assert list(islice(s.events(), 500)) == list(islice(s.events(), 500))  # each call afresh


def test_reference_data_has_locations_then_opening_stock(sim: Simulator, ref) -> None:
    locs = [r for r in ref if r.topic == "locations"]
    assert ref[: len(locs)] == locs and len(locs) == 24 + 3
    assert {r.value["kind"] for r in locs} == {"store", "warehouse"}
    stock = ref[len(locs) :]
    assert all(r.topic == "stock" and r.value["type"] == "stock_set" for r in stock)
    pairs = {(r.value["sku"], r.value["location_id"]) for r in stock}
    assert len(pairs) == len(stock) == 400 * 27
    assert all(r.key == r.value["sku"] and "list_price" in r.value for r in stock)
    with_rp = sum("reorder_point" in r.value for r in stock)
    assert 0.5 * len(stock) < with_rp < 0.9 * len(stock)  # some left to the engine
    assert [p for r in ref for p in problems(r.topic, r.value)] == []


def test_every_event_meets_the_contract(run) -> None:
    found = Counter(p for tp, v, _ in run for p in problems(tp, v))
    assert found == Counter()
    assert len({v["event_id"] for _, v, _ in run}) == N
    times = [t for _, _, t in run]
    assert times == sorted(times)
    spellings = {"int" if isinstance(v["ts"], int) else v["ts"][-6:] for _, v, _ in run[:1000]}
    assert {"int", "+08:00"} < spellings and any(x.endswith("Z") for x in spellings)


def test_keys_follow_the_topic_table(sim: Simulator) -> None:
    for r in islice(sim.events(), 5000):
        assert isinstance(r.value, dict)
        if r.topic == "stock":
            assert r.key == r.value["sku"]
        else:  # customer, or the anonymous id before login
            assert r.key == (r.value.get("customer_id") or r.value["anonymous_id"])


def test_time_advances_at_time_scale(run) -> None:
    covered_s = (run[-1][2] - START) / 1000
    assert 0.75 * N * SCALE < covered_s < 1.1 * N * SCALE


def test_channels_and_fulfilment_modes(run) -> None:
    channels = Counter(v["channel"] for tp, v, _ in run if tp != "stock")
    assert set(channels) == {
        "web",
        "app",
        "mini_program",
        "marketplace",
        "store",
        "phone",
        "social",
    }
    modes = Counter(v["fulfilment"]["mode"] for v, _ in of(run, "orders", "order_placed"))
    assert set(modes) == {"delivery", "pickup", "in_store"}


def test_order_totals_equal_the_sum_of_lines_exactly(run) -> None:
    orders = of(run, "orders")
    assert len(orders) > 5000
    for v, _ in orders:
        total = dec(v["total"])
        assert total == sum((dec(x["unit_price"]) * x["qty"] for x in v["lines"]), Decimal(0))
        assert total == total.quantize(Decimal("0.01"))
    assert {type(v["total"]) for v, _ in orders} == {str, float}  # both spellings


def test_repeat_buyers_and_tiers(run) -> None:
    count: Counter[str] = Counter()
    spend: defaultdict[str, Decimal] = defaultdict(Decimal)
    for v, _ in of(run, "orders"):
        sign = 1 if v["type"] == "order_placed" else -1
        count[v["customer_id"]] += sign > 0
        spend[v["customer_id"]] += sign * dec(v["total"])
    assert sum(c >= 2 for c in count.values()) > 500
    assert sum(c >= 5 for c in count.values()) > 50  # core candidates
    assert sum(m >= 5000 for m in spend.values()) > 50  # gold
    assert sum(m >= 20000 for m in spend.values()) > 5  # platinum


def test_cancellations_and_returns_reference_earlier_orders(run) -> None:
    placed: dict[str, tuple[dict[str, Any], int]] = {}
    seen: Counter[str] = Counter()
    for v, t in of(run, "orders"):
        if v["type"] == "order_placed":
            placed[v["order_id"]] = (v, t)
            continue
        seen[v["type"]] += 1
        original, t0 = placed[v["order_id"]]
        assert t0 <= t and original["customer_id"] == v["customer_id"]
        assert dec(original["total"]) == dec(v["total"]) and original["lines"] == v["lines"]
    assert seen["order_cancelled"] > 50 and seen["order_returned"] > 50


def test_some_carts_are_abandoned_and_others_converted(run) -> None:
    orders_by_customer: defaultdict[str, list[int]] = defaultdict(list)
    for v, t in of(run, "orders", "order_placed"):
        orders_by_customer[v["customer_id"]].append(t)
    sessions: dict[str, tuple[str, int]] = {}
    for v, t in of(run, "carts", "cart_add"):
        sessions.setdefault(v["session_id"], (v["customer_id"], t))
    end = run[-1][2]
    abandoned = converted = 0
    for cid, t in sessions.values():
        if t + 3_600_000 > end:
            continue
        if any(t <= o <= t + 3_600_000 for o in orders_by_customer[cid]):
            converted += 1
        else:
            abandoned += 1
    assert converted > 1000
    assert 0.2 < abandoned / (abandoned + converted) < 0.7


def test_anonymous_visitors_are_stitched_at_login(run) -> None:
    anonymous = set()
    stitched = 0
    for v, _ in of(run, "clicks"):
        if "customer_id" not in v:
            anonymous.add(v["anonymous_id"])
        elif v.get("anonymous_id") in anonymous:
            stitched += 1
    assert stitched > 500


def test_premium_viewed_three_days_running_without_an_order(run) -> None:
    days: defaultdict[str, set[int]] = defaultdict(set)
    order_days: defaultdict[str, set[int]] = defaultdict(set)
    for v, t in of(run, "clicks", "product_view"):
        if v["premium"] and "customer_id" in v:
            days[v["customer_id"]].add(t // DAY)
    for v, t in of(run, "orders", "order_placed"):
        order_days[v["customer_id"]].add(t // DAY)
    streaks = [
        cid
        for cid, ds in days.items()
        if any({d, d + 1, d + 2} <= ds and not {d, d + 1, d + 2} & order_days[cid] for d in ds)
    ]
    assert len(streaks) >= 20


def test_some_order_lines_deviate_from_the_list_price(ref, run) -> None:
    list_price = {r.value["sku"]: dec(r.value["list_price"]) for r in ref if r.topic == "stock"}
    lines = [x for v, _ in of(run, "orders", "order_placed") for x in v["lines"]]
    dev = [abs(dec(x["unit_price"]) / list_price[x["sku"]] - 1) for x in lines]
    alerts = sum(d > Decimal("0.05") for d in dev)
    assert alerts > 100 and alerts < 0.1 * len(lines)
    assert sum(d == 0 for d in dev) > 0.8 * len(lines)


def test_stock_falls_below_reorder_points_and_is_restocked(ref, run) -> None:
    level: dict[tuple[str, str], int] = {}
    rp: dict[tuple[str, str], int] = {}
    for r in ref:
        if r.topic == "stock":
            k = (r.value["sku"], r.value["location_id"])
            level[k] = r.value["on_hand"]
            if "reorder_point" in r.value:
                rp[k] = r.value["reorder_point"]
    crossed = set()
    restocks = 0
    for v, _ in of(run, "stock"):
        k = (v["sku"], v["location_id"])
        if v["type"] == "stock_set":
            level[k] = v["on_hand"]
            restocks += v["on_hand"] > 0
        else:
            level[k] += v["delta"]
            assert level[k] >= 0  # adjustments never invent negative stock
            if k in rp and level[k] <= rp[k]:
                crossed.add(k)
    assert len(crossed) > 50 and restocks > 50


def test_some_skus_sell_out_at_every_warehouse_but_stay_in_stores(ref, run) -> None:
    level = {(r.value["sku"], r.value["location_id"]): r.value["on_hand"] for r in ref[27:]}
    for v, t in of(run, "stock"):
        if t > START + DAY:
            break
        k = (v["sku"], v["location_id"])
        level[k] = v["on_hand"] if v["type"] == "stock_set" else level[k] + v["delta"]
    warehouses = [r.value["location_id"] for r in ref[:27] if r.value["kind"] == "warehouse"]
    skus = {sku for sku, _ in level}
    out_online = [s for s in skus if all(level[s, w] == 0 for w in warehouses)]
    assert len(out_online) >= 2
    assert all(any(level[s, loc] > 0 for (sk, loc) in level if sk == s) for s in out_online)


def test_churners_go_quiet_long_enough_to_become_sleeping(run) -> None:
    last: dict[str, int] = {}
    spend: defaultdict[str, Decimal] = defaultdict(Decimal)
    for v, t in of(run, "orders"):
        if v["type"] == "order_placed":
            last[v["customer_id"]] = t
            spend[v["customer_id"]] += dec(v["total"])
    mean = sum(spend.values()) / len(spend)
    end = run[-1][2]
    sleeping = [c for c, t in last.items() if end - t >= 90 * DAY and spend[c] >= mean]
    assert len(sleeping) >= 20


def test_malformed_records_are_bytes_and_do_not_change_the_good_stream() -> None:
    kw: dict[str, Any] = {"seed": 5, "customers": 500, "skus": 80, "start_ms": START}
    clean = list(islice(Simulator(**kw).events(), 4000))
    noisy = list(islice(Simulator(**kw, bad_share=0.05).events(), 4200))
    bad = [r for r in noisy if isinstance(r.value, bytes)]
    good = [r for r in noisy if isinstance(r.value, dict)]
    assert 100 < len(bad) < 350
    assert good[: len(clean)] == clean[: len(good)]
    last_good = START
    for r in noisy:
        if isinstance(r.value, dict):
            last_good = ts_ms(r.value)
            continue
        assert r.topic in TYPES
        try:
            v = orjson.loads(r.value)
        except orjson.JSONDecodeError:
            continue  # truncated, or not UTF-8
        assert problems(r.topic, v) or _bad_ts(v, last_good), v


def _bad_ts(v: dict[str, Any], now_ms: int) -> bool:
    """Unparseable, or more than a day ahead of the stream (SPEC §3: absurd)."""
    try:
        return ts_ms(v) > now_ms + DAY
    except ValueError:
        return True


@pytest.mark.parametrize(
    "kw",
    [{"time_scale": 0}, {"customers": 0}, {"bad_share": 1.0}, {"stores": 0}, {"skus": 5}],
)
def test_bad_parameters_raise_config_errors(kw: dict[str, Any]) -> None:
    with pytest.raises(ConfigError, match="simulator"):
        Simulator(start_ms=START, **kw)


def test_open_carts_persist_across_visits_and_orders_clear_them(run) -> None:
    """The engine keeps one open cart per customer across sessions; so does the simulator:
    an order buys what earlier visits left (or the shopper removes it first), so the cart
    a customer leaves behind stays small."""
    cart: defaultdict[str, dict[str, str]] = defaultdict(dict)  # customer -> sku -> session
    session: dict[str, str] = {}  # customer -> session of the last cart event
    sizes: list[int] = []
    bought_from_earlier = tidied = 0
    for tp, v, _ in run:
        cid = v.get("customer_id")
        if tp == "carts":
            session[cid] = v["session_id"]
        if tp == "carts" and v["type"] == "cart_add":
            cart[cid].setdefault(v["sku"], v["session_id"])
        elif tp == "carts" and v["type"] == "cart_remove":
            tidied += cart[cid].pop(v["sku"], v["session_id"]) != v["session_id"]
        elif tp == "carts":  # checkout_start: what the customer is about to leave or buy
            sizes.append(len(cart[cid]))
        elif tp == "orders" and v["type"] == "order_placed":
            for line in v["lines"]:
                sid = cart[cid].pop(line["sku"], None)
                bought_from_earlier += sid is not None and sid != session.get(cid)
    assert bought_from_earlier > 300 and tidied > 100
    sizes.sort()
    assert sizes[len(sizes) * 95 // 100] <= 6


def test_limited_editions_come_in_small_drops_to_one_warehouse(ref, run) -> None:
    """A few best sellers are stocked a few units at a time, so carts holding them get
    "only N left" reminders and, between drops, sell out."""
    level: defaultdict[str, dict[str, int]] = defaultdict(dict)
    no_rp: set[str] = set()
    for r in ref:
        if r.topic == "stock":
            level[r.value["sku"]][r.value["location_id"]] = r.value["on_hand"]
            if "reorder_point" not in r.value:
                no_rp.add(r.value["sku"])
    limited = {s for s, by in level.items() if sum(by.values()) <= 5 and s in no_rp}
    assert 1 <= len(limited) <= 4
    home = {s: [loc for loc, n in level[s].items() if n > 0] for s in limited}
    assert all(len(locs) == 1 and locs[0].startswith("wh-") for locs in home.values())
    drops = [v for v, _ in of(run, "stock") if v.get("reason") == "limited_drop"]
    assert {v["sku"] for v in drops} == limited
    assert all(v["location_id"] == home[v["sku"]][0] and 2 <= v["on_hand"] <= 5 for v in drops)
    assert len(drops) >= 10 * len(limited)
    other = [v for v, _ in of(run, "stock") if v["sku"] in limited and v not in drops]
    assert other == []  # no adjustments, no (s, S) replenishment
    carted = sum(v["sku"] in limited for v, _ in of(run, "carts", "cart_add"))
    shipped = sum(
        x["qty"]
        for v, _ in of(run, "orders", "order_placed")
        if v["fulfilment"]["mode"] != "in_store"
        for x in v["lines"]
        if x["sku"] in limited
    )
    assert carted > 200
    assert shipped > sum(v["on_hand"] for v in drops)  # demand outruns the drops


def test_churn_rule_fading_customers_browse_less_then_stop_ordering() -> None:
    from omnipulse.simulator import _Run

    sim = Simulator(seed=3, customers=2000, skus=120, start_ms=START, time_scale=60.0)
    run = _Run(sim)
    placed: defaultdict[str, list[int]] = defaultdict(list)
    activity: defaultdict[str, list[int]] = defaultdict(list)
    end = START
    for r in islice(run.stream(), 300_000):
        assert isinstance(r.value, dict)
        cid, t = r.value.get("customer_id"), ts_ms(r.value)
        end = t
        if cid is None:
            continue
        if r.topic == "orders" and r.value["type"] == "order_placed":
            placed[cid].append(t)
        elif r.topic in ("clicks", "carts"):
            activity[cid].append(t)
    risk = {c.cid: c.churn_risk for c in sim.customers}
    faded = {cid: f for cid, f in run.fades.items() if f[1] + 30 * DAY < end}
    assert len(faded) >= 100
    # the onset is drawn per order from the hidden risk: at-risk customers dominate
    assert sum(risk[c] >= 0.08 for c in faded) >= 0.8 * len(faded)
    # every fade starts at an order of that customer; none orders after it is over
    # (a session begun just before the end may still check out minutes later)
    for cid, (start, stop) in faded.items():
        assert start in placed[cid]
        assert all(t <= stop + DAY for t in placed[cid])

    # activity falls before the stop: per-day rates over all faded customers
    def rate(lo: int, hi: int) -> float:
        n = days = 0
        for cid, (start, stop) in faded.items():
            a, b = start + lo * (stop - start), start + hi * (stop - start)
            n += sum(a <= t < b for t in activity[cid])
            days += (b - a) / DAY
        return n / days

    before = sum(sum(s - 30 * DAY <= t < s for t in activity[c]) for c, (s, _) in faded.items()) / (
        30 * len(faded)
    )
    late = rate(0.66, 1.0)  # the last third of the fade: vigour below about 0.45
    gone = rate(1.0, 1.5)
    assert late < 0.6 * before
    assert gone < 0.25 * before
