"""Offline progressive evaluation of the churn model against the seed heuristic.

No Kafka, no Redis: the customer state the engine keeps is rebuilt here in memory
from the events, and the engine's own pure pieces do the rest: the features
(`operators.churn.features`), the heuristic (`heuristic_score`), the delayed labels
(`LabelBook`, 90-day horizon) and the model with its progressive metrics
(`state.model.ChurnModel`: each label is first scored by the model as it stands,
then learned; the heuristic's score of the same vector is measured on the same
labels).

Protocol (what the engine is meant to do, as far as an offline loop can):

- **Scoring points.** A customer is scored right after each of their orders is
  applied, and on a periodic review: every 30 days after their last order while
  it is at most 365 days old (days 30, 60, ..., 360). A score is refused while the
  customer has one pending (LabelBook: one pending score per customer), so after
  an order the reviews that count are those after its label (day 120, 210, ...).
- **Labels.** Retained (0) when the customer orders in (scored_at, scored_at +
  90 d]; churned (1) once event time passes scored_at + 90 d without one. Event
  time is the latest event's timestamp (no lateness allowance: the input is in
  order). Reviews and label deadlines due before an event are processed first, in
  time order.
- **End of data.** CDNOW: event time is moved 100 days past the last transaction
  (the clock event of `bench.churn_data`), so every pending score gets a label.
  Simulator: the stream is cut, not ended, so pending scores stay unlabelled.

State kept per customer, as the engine's profile: order count and spend
(`order_placed` totals; cancellations and returns are not netted here), last
order, first activity, order times, day rings of views (clicks) and cart events,
last activity per channel, tier (`tier_of`, 365-day spend) and RFM segment
(`segment_of`, with the monetary rank among customers with orders). Abandoned
carts are approximated: a cart event not followed by an order of the customer
within one hour counts one. Anonymous clicks are not stitched (ignored). Days
are UTC days.

    python -m bench.churn_eval --data cdnow
    python -m bench.churn_eval --data sim [--events 1000000] [--orders-only]
"""

from __future__ import annotations

import argparse
import heapq
import sys
import time
from bisect import bisect_left, bisect_right, insort
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from itertools import islice
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from river import metrics

from operators.churn import ChurnInputs, Label, LabelBook, features, heuristic_score
from operators.clock import DAY_MS, HOUR_MS
from operators.customer import (
    Facts,
    MonetaryRank,
    SegmentRules,
    TierRules,
    percentile_rank,
    segment_of,
    tier_of,
)
from state.model import ChurnModel

HORIZON_DAYS = 90
REVIEW_EVERY_DAYS = 30
REVIEW_FOR_DAYS = 365
CART_TIMEOUT_MS = HOUR_MS
WINDOW_DAYS = 30
CHECKPOINT = 50_000


@dataclass(slots=True)
class Cust:
    n: int = 0
    m: int = 0  # cents
    last_order: int | None = None
    first_activity: int | None = None
    orders: list[tuple[int, int]] = field(default_factory=list)
    views: dict[int, int] = field(default_factory=dict)
    carts: dict[int, int] = field(default_factory=dict)
    channels: dict[str, int] = field(default_factory=dict)
    cart_open_at: int | None = None
    abandoned: int = 0


class Evaluation:
    def __init__(self, horizon_days: int = HORIZON_DAYS) -> None:
        self.horizon = horizon_days * DAY_MS
        self.book = LabelBook(self.horizon)
        self.model = ChurnModel()
        self.cust: dict[str, Cust] = {}
        self.reviews: list[tuple[int, str, int]] = []  # (at, customer, last order then)
        self.monetary: list[int] = []  # sorted spend of customers with orders
        self.monetary_sum = 0
        self.seg_rules, self.tier_rules = SegmentRules(), TierRules()
        self.kind: dict[str, str] = {}  # customer -> kind of the pending score
        self.by_kind: dict[str, tuple[metrics.ROCAUC, metrics.ROCAUC, list[int]]] = {}
        self.at_checkpoint: dict[str, Any] | None = None
        self.scores = 0

    # -- time --------------------------------------------------------------------------

    def advance(self, t: int) -> None:
        """Everything due strictly before event time t: reviews and churn labels."""
        while self.reviews and self.reviews[0][0] < t:
            at, cid, lo = heapq.heappop(self.reviews)
            self.learn(self.book.advance(at))
            c = self.cust[cid]
            if c.last_order != lo:
                continue  # ordered since: that order scheduled its own reviews
            if self.book.pending(cid) is None:
                self.score(cid, at, "review")
            nxt = at + REVIEW_EVERY_DAYS * DAY_MS
            if nxt <= lo + REVIEW_FOR_DAYS * DAY_MS:
                heapq.heappush(self.reviews, (nxt, cid, lo))
        self.learn(self.book.advance(t))

    # -- events ------------------------------------------------------------------------

    def _touch(self, cid: str, t: int, channel: str | None) -> Cust:
        c = self.cust.get(cid)
        if c is None:
            c = self.cust[cid] = Cust(first_activity=t)
        if c.cart_open_at is not None and t > c.cart_open_at + CART_TIMEOUT_MS:
            c.abandoned += 1
            c.cart_open_at = None
        if channel:
            c.channels[channel] = min(t, c.channels.get(channel, t))  # first use
        return c

    def order(self, cid: str, t: int, cents: int, channel: str | None = None) -> None:
        self.advance(t)
        label = self.book.order(cid, t)
        if label is not None:
            self.learn([label])
        c = self._touch(cid, t, channel)
        if c.n:
            del self.monetary[bisect_left(self.monetary, c.m)]
            self.monetary_sum -= c.m
        c.n += 1
        c.m += cents
        insort(self.monetary, c.m)
        self.monetary_sum += c.m
        c.last_order = t if c.last_order is None else max(c.last_order, t)
        c.orders.append((t, cents))
        c.cart_open_at = None
        self.score(cid, t, "order")
        heapq.heappush(self.reviews, (t + REVIEW_EVERY_DAYS * DAY_MS, cid, c.last_order))

    def interaction(self, cid: str, t: int, cart: bool, channel: str | None = None) -> None:
        self.advance(t)
        c = self._touch(cid, t, channel)
        ring = c.carts if cart else c.views
        day = t // DAY_MS
        ring[day] = ring.get(day, 0) + 1
        if len(ring) > 2 * WINDOW_DAYS + 10:
            for d in [d for d in ring if d <= day - 2 * WINDOW_DAYS]:
                del ring[d]
        if cart:
            c.cart_open_at = t

    # -- scoring and learning ----------------------------------------------------------

    def score(self, cid: str, t: int, kind: str) -> None:
        c = self._touch(cid, t, None)
        cut = t - 400 * DAY_MS  # the engine's order retention
        if c.orders and c.orders[0][0] < cut:
            c.orders = [o for o in c.orders if o[0] >= cut]
        facts = Facts(
            frequency=c.n,
            monetary_cents=c.m,
            first_activity_ms=c.first_activity,
            first_order_ms=c.orders[0][0] if c.orders else None,
            last_order_ms=c.last_order,
            orders=tuple(c.orders),
        )
        total = len(self.monetary)
        below = bisect_left(self.monetary, c.m)
        equal = bisect_right(self.monetary, c.m) - below
        mean = self.monetary_sum / total if total else 0.0
        rank = MonetaryRank(percentile_rank(below, equal, total), mean, total)
        inputs = ChurnInputs(
            frequency=c.n,
            monetary_cents=c.m,
            last_order_ms=c.last_order,
            first_activity_ms=c.first_activity,
            order_times=[ts for ts, _ in c.orders],
            views=list(c.views.items()),
            carts=list(c.carts.items()),
            channels=c.channels,
            segment=segment_of(facts, rank, t, self.seg_rules),
            tier=tier_of(facts, t, self.tier_rules)[0],
            abandoned_carts=c.abandoned,
        )
        x = features(inputs, t, window_days=WINDOW_DAYS)
        if self.book.score(cid, t, x, None, heuristic_score(x)):
            self.kind[cid] = kind
            self.scores += 1

    def learn(self, labels: list[Label]) -> None:
        for lab in labels:
            p = lab.pending
            pred = self.model.learn_one(p.x, lab.y, baseline=p.baseline)
            kind = self.kind.pop(p.customer_id, "order")
            auc, hauc, counts = self.by_kind.setdefault(
                kind, (metrics.ROCAUC(n_thresholds=100), metrics.ROCAUC(n_thresholds=100), [0, 0])
            )
            auc.update(bool(lab.y), pred)
            hauc.update(bool(lab.y), p.baseline)
            counts[lab.y] += 1
            if self.model.n_labels == CHECKPOINT:
                self.at_checkpoint = self.model.metrics()

    def report(self) -> dict[str, Any]:
        m = self.model.metrics()
        out = {
            "labels": m["labels"],
            "churned": m["labels_churned"],
            "retained": m["labels_retained"],
            "churn_share": round(m["labels_churned"] / m["labels"], 4) if m["labels"] else None,
            "roc_auc": m["roc_auc"],
            "heuristic_roc_auc": m["heuristic_roc_auc"],
            "log_loss": m["log_loss"],
            "scores": self.scores,
            "unlabelled": len(self.book),
            "customers": len(self.cust),
        }
        if self.at_checkpoint is not None:
            out["at_50k"] = {
                k: self.at_checkpoint[k] for k in ("roc_auc", "heuristic_roc_auc", "log_loss")
            }
        out["by_scoring_point"] = {
            kind: {
                "labels": sum(cnt),
                "churn_share": round(cnt[1] / sum(cnt), 4),
                "roc_auc": round(auc.get(), 4),
                "heuristic_roc_auc": round(hauc.get(), 4),
            }
            for kind, (auc, hauc, cnt) in sorted(self.by_kind.items())
        }
        return out


# -- data sources -----------------------------------------------------------------------


def run_cdnow(source: str | None, clock_days: int = 100) -> Evaluation:
    from bench.churn_data import cdnow_text, parse_cdnow

    ev = Evaluation()
    txns = sorted(enumerate(parse_cdnow(cdnow_text(source))), key=lambda it: (it[1].date, it[0]))
    last = 0
    for _, t in txns:
        last = t.ts_ms
        ev.order(f"cdnow-{t.customer}", last, int(t.dollars * 100), "web")
    ev.advance(last + clock_days * DAY_MS + 1)
    return ev


def _ts(v: Any) -> int:
    if isinstance(v, int):
        return v
    return int(datetime.fromisoformat(v).timestamp() * 1000)


def run_sim(events: int, customers: int, seed: int, time_scale: float, orders_only: bool):
    from omnipulse.simulator import Simulator

    start = 1_704_067_200_000  # 2024-01-01T00:00:00Z
    sim = Simulator(seed=seed, customers=customers, start_ms=start, time_scale=time_scale)
    ev = Evaluation()
    for r in islice(sim.events(), events):
        v = r.value
        if not isinstance(v, dict):
            continue
        cid = v.get("customer_id")
        if cid is None:
            continue
        if r.topic == "orders":
            if v["type"] == "order_placed":
                cents = int(Decimal(str(v["total"])) * 100)
                ev.order(cid, _ts(v["ts"]), cents, v.get("channel"))
        elif not orders_only and r.topic in ("clicks", "carts"):
            ev.interaction(cid, _ts(v["ts"]), r.topic == "carts", v.get("channel"))
    return ev


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", choices=["cdnow", "sim"], required=True)
    ap.add_argument("--source", help="cdnow: CDNOW_master.txt or a lifetimes wheel")
    ap.add_argument("--events", type=int, default=1_000_000, help="sim: events to generate")
    ap.add_argument("--customers", type=int, default=5000)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--time-scale", type=float, default=30.0, help="sim: seconds per event")
    ap.add_argument("--orders-only", action="store_true", help="sim: ignore clicks and carts")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    if args.data == "cdnow":
        ev = run_cdnow(args.source)
        name = "cdnow"
    else:
        ev = run_sim(args.events, args.customers, args.seed, args.time_scale, args.orders_only)
        name = f"sim{' (orders only)' if args.orders_only else ''}"
    rep = {"data": name, **ev.report(), "seconds": round(time.perf_counter() - t0, 1)}
    if args.json:
        import json

        print(json.dumps(rep, indent=2))
        return 0

    def f(v: Any) -> str:
        return "n/a" if v is None else f"{v:.4f}" if isinstance(v, float) else str(v)

    head = ("data", "labels", "churn", "model AUC", "heur. AUC", "log loss", "seconds")
    row = (name, rep["labels"], rep["churn_share"], rep["roc_auc"], rep["heuristic_roc_auc"],
           rep["log_loss"], rep["seconds"])  # fmt: skip
    print(" | ".join(f"{h:>10}" for h in head))
    print(" | ".join(f"{f(v):>10}" for v in row))
    if "at_50k" in rep:
        a = rep["at_50k"]
        print(f"after {CHECKPOINT:,} labels: model AUC {f(a['roc_auc'])},"
              f" heuristic AUC {f(a['heuristic_roc_auc'])}")  # fmt: skip
    for kind, k in rep["by_scoring_point"].items():
        print(f"  at {kind:6}: {k['labels']:>7} labels, churn {k['churn_share']:.3f},"
              f" model AUC {k['roc_auc']:.4f},"
              f" heuristic AUC {k['heuristic_roc_auc']:.4f}")  # fmt: skip
    print(f"scores {rep['scores']}, unlabelled at the end {rep['unlabelled']},"
          f" customers {rep['customers']}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
