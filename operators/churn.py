"""Churn features, the seed heuristic and delayed-label bookkeeping (SPEC §5.8).

Pure code over plain inputs and an injected `now` (event time, epoch ms); no I/O.

- `features` turns a customer's state into the model's feature vector. The same
  function is used when a customer is scored and when the label for that score
  is learned: the vector kept with a pending score *is* what the model learns.
- `heuristic` is the seed rule (gap >= +30 % over the average inter-purchase
  interval AND interactions in the last 30 days down >= 50 % against the 30
  days before); `heuristic_score` grades it into [0, 1] so that its ROC AUC can
  be compared with the model's on the same labels.
- `LabelBook` / `label_on_order` / `label_at_watermark` turn scores into
  delayed labels: retained (0) if the customer orders within the horizon after
  the score, churned (1) once the watermark has passed the horizon without one.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from operators.clock import DAY_MS
from operators.customer import SEGMENTS, TIERS

# The average interval a customer with fewer than two known orders is given:
# neither short nor long against the 30-day activity window. `has_interval`
# (0.0 for such customers) lets the model tell this stand-in from a real one,
# and the heuristic never holds without a real interval.
NEUTRAL_INTERVAL_DAYS = 30.0
# Intervals are floored at one hour before dividing (two orders in the same
# minute must not make the gap ratio explode) and the ratio is capped so that
# one long-lost customer does not dominate the scaler's variance.
MIN_INTERVAL_DAYS = 1.0 / 24.0
GAP_RATIO_CAP = 20.0

NUMERIC_FEATURES = (
    "recency_days",
    "frequency",
    "monetary",
    "avg_interval_days",
    "has_interval",
    "gap_ratio",
    "interactions_last_30",
    "interactions_prev_30",
    "activity_ratio",
    "channels_used",
    "cart_abandonments",
)
FEATURE_NAMES = (
    *NUMERIC_FEATURES,
    *(f"tier_{t}" for t in TIERS),
    *(f"segment_{s}" for s in SEGMENTS),
)

# A feature vector: FEATURE_NAMES -> value. A plain dict, as river expects.
ChurnFeatures = dict[str, float]


@dataclass(frozen=True, slots=True)
class ChurnInputs:
    """What the features are built from, as plain values (all from the profile state).

    `views` / `carts` are the profile's day rings (`vd` / `cd`): [day, count]
    pairs, day numbers as the engine computes them (local days). `channels` maps
    a channel to its first activity in ms (the profile's `chs` map).
    `order_times` are the timestamps of the counted orders still retained.
    """

    frequency: int
    monetary_cents: int
    last_order_ms: int | None
    first_activity_ms: int | None = None
    order_times: Sequence[int] = ()
    views: Sequence[Sequence[int]] = ()
    carts: Sequence[Sequence[int]] = ()
    channels: Mapping[str, int] = field(default_factory=dict)
    segment: str | None = None
    tier: str | None = None
    abandoned_carts: int = 0

    @classmethod
    def from_profile(
        cls,
        state: Mapping[str, Any],
        orders: Iterable[tuple[int, int]],
        abandoned_carts: int = 0,
    ) -> ChurnInputs:
        """From a decoded profile hash (`vd`/`cd`/`chs` as JSON text or decoded) and its orders."""
        import json  # only here: the rest of the module never parses

        def ring(v: Any) -> list[list[int]]:
            if isinstance(v, str | bytes):
                v = json.loads(v)
            # cjson encodes an empty Lua table as {}: read that as an empty ring
            return [[int(d), int(c)] for d, c in v] if isinstance(v, list) else []

        def opt(v: Any) -> int | None:
            return None if v is None else int(v)

        chs = state.get("chs")
        if isinstance(chs, str | bytes):
            chs = json.loads(chs)
        channels = {str(k): int(v) for k, v in chs.items()} if isinstance(chs, dict) else {}
        return cls(
            frequency=int(state.get("n") or 0),
            monetary_cents=int(state.get("m") or 0),
            last_order_ms=opt(state.get("lo")),
            first_activity_ms=opt(state.get("fa")),
            order_times=tuple(ts for ts, _ in orders),
            views=ring(state.get("vd")),
            carts=ring(state.get("cd")),
            channels=channels,
            segment=state.get("s"),
            tier=state.get("t"),
            abandoned_carts=abandoned_carts,
        )


def avg_interval_ms(order_times: Sequence[int]) -> float | None:
    """Mean gap between consecutive orders; None with fewer than two orders."""
    if len(order_times) < 2:
        return None
    return (max(order_times) - min(order_times)) / (len(order_times) - 1)


def interactions(
    rings: Iterable[Sequence[Sequence[int]]], today: int, window_days: int
) -> tuple[int, int]:
    """(last window, window before) of views + carts, by day number relative to `today`.

    The last window is days `today - window_days + 1 .. today`; a day after
    `today` is not counted (in a catch-up batch the rings already hold events
    from after the moment being scored). The window before is the
    `window_days` days preceding it; older days are not counted.
    """
    last = prev = 0
    for ring in rings:
        for day, count in ring:
            age = today - int(day)
            if age < 0:
                continue
            if age < window_days:
                last += int(count)
            elif age < 2 * window_days:
                prev += int(count)
    return last, prev


def features(
    inp: ChurnInputs,
    now: int,
    *,
    today: int | None = None,
    window_days: int = 30,
) -> ChurnFeatures:
    """The feature vector of one customer at event time `now` (ms).

    `today` is the day number of `now` as the rings count days (the engine's
    local day); by default the UTC day `now // DAY_MS`. Recency is measured
    from the last order, or from first activity for a customer without orders
    (as the RFM segments do). Monetary is in currency units.
    """
    if today is None:
        today = now // DAY_MS
    basis = inp.last_order_ms if inp.frequency >= 1 else inp.first_activity_ms
    gap_ms = 0 if basis is None else max(0, now - basis)
    recency_days = gap_ms / DAY_MS

    interval = avg_interval_ms(inp.order_times) if inp.frequency >= 2 else None
    avg_days = NEUTRAL_INTERVAL_DAYS if interval is None else interval / DAY_MS
    gap_ratio = min(GAP_RATIO_CAP, recency_days / max(avg_days, MIN_INTERVAL_DAYS))

    last, prev = interactions((inp.views, inp.carts), today, window_days)
    # Channels used so far, by first use. Not "active in the last 30 days": a
    # channel's last activity is overwritten by later events, so a state read
    # after them cannot say whether it was active before `now`.
    used = sum(1 for ts in inp.channels.values() if ts <= now)

    x: ChurnFeatures = {
        "recency_days": recency_days,
        "frequency": float(inp.frequency),
        "monetary": inp.monetary_cents / 100,
        "avg_interval_days": avg_days,
        "has_interval": 0.0 if interval is None else 1.0,
        "gap_ratio": gap_ratio,
        "interactions_last_30": float(last),
        "interactions_prev_30": float(prev),
        # smoothed so that "no activity in either window" is 1.0 (no change)
        "activity_ratio": (last + 1) / (prev + 1),
        "channels_used": float(used),
        "cart_abandonments": float(inp.abandoned_carts),
    }
    for t in TIERS:
        x[f"tier_{t}"] = 1.0 if inp.tier == t else 0.0
    for s in SEGMENTS:
        x[f"segment_{s}"] = 1.0 if inp.segment == s else 0.0
    return x


# -- seed heuristic ------------------------------------------------------------------


def _activity_drop(x: Mapping[str, float]) -> float:
    """Relative fall of interactions: 0 when there was nothing before to fall from."""
    prev = x["interactions_prev_30"]
    if prev <= 0:
        return 0.0
    return max(0.0, 1.0 - x["interactions_last_30"] / prev)


def heuristic(
    x: Mapping[str, float], interval_increase: float = 0.30, activity_drop: float = 0.50
) -> bool:
    """The seed rule: gap >= (1 + increase) x average interval AND interactions down >= drop.

    Needs a real average interval (two orders or more) and interactions in the
    30 days before the last 30 (a fall from nothing is no fall).
    """
    if x["has_interval"] < 1.0 or x["interactions_prev_30"] <= 0:
        return False
    return (
        x["gap_ratio"] >= 1.0 + interval_increase
        and x["interactions_last_30"] <= (1.0 - activity_drop) * x["interactions_prev_30"]
    )


def heuristic_score(
    x: Mapping[str, float], interval_increase: float = 0.30, activity_drop: float = 0.50
) -> float:
    """The heuristic as a score in [0, 1], for ROC AUC against the model.

    1.0 exactly when `heuristic` holds. Otherwise the mean of how far each of
    its two conditions has got towards its threshold, each clamped to [0, 1]:
    interval part `(gap_ratio - 1) / interval_increase` (0 without a real
    interval), activity part `drop / activity_drop`; capped at 0.99 so it stays
    below any customer for whom the rule holds.
    """
    if heuristic(x, interval_increase, activity_drop):
        return 1.0
    if x["has_interval"] >= 1.0 and interval_increase > 0:
        gap_part = min(1.0, max(0.0, (x["gap_ratio"] - 1.0) / interval_increase))
    else:
        gap_part = 0.0
    drop_part = min(1.0, _activity_drop(x) / activity_drop)
    return min(0.99, (gap_part + drop_part) / 2)


# -- delayed labels ------------------------------------------------------------------

RETAINED = 0
CHURNED = 1


@dataclass(frozen=True, slots=True)
class Pending:
    """A score waiting for its label: the features it was made on, kept for learning."""

    customer_id: str
    scored_at: int  # event time of the score, ms
    x: ChurnFeatures
    score: float | None = None  # the model's score at the time, if any
    baseline: float | None = None  # the heuristic's score at the time


@dataclass(frozen=True, slots=True)
class Label:
    pending: Pending
    y: int  # RETAINED (0) or CHURNED (1)
    decided_at: int  # the order time (0) or the watermark (1) that decided it


def label_on_order(p: Pending, order_ts: int, horizon_ms: int) -> int | None:
    """RETAINED if an order at `order_ts` falls in (scored_at, scored_at + horizon], else None.

    An order at or before the score (a late one) says nothing about the future;
    one beyond the horizon does not decide either: an in-window order may still
    be in flight, so churn is left to the watermark.
    """
    if p.scored_at < order_ts <= p.scored_at + horizon_ms:
        return RETAINED
    return None


def label_at_watermark(p: Pending, watermark: int, horizon_ms: int) -> int | None:
    """CHURNED once the watermark has passed scored_at + horizon, else None.

    "Passed" is strict: an order exactly at the horizon still counts as a return,
    and such an event is on time while the watermark is at that instant.
    """
    if watermark > p.scored_at + horizon_ms:
        return CHURNED
    return None


class LabelBook:
    """Pending scores and their delayed labels, one pending score per customer.

    Rule: a customer has at most one pending score. A new score for a customer
    whose score is still pending is refused (`score` returns False) and the old
    one keeps waiting; once it is labelled the customer can be scored again.
    Each pending score yields exactly one label: the first of (an order in its
    window -> 0, the watermark passing its horizon -> 1) removes it.

    In memory; the engine keeps the same facts in Redis and uses the pure
    `label_on_order` / `label_at_watermark` to decide.
    """

    def __init__(self, horizon_ms: int) -> None:
        if horizon_ms <= 0:
            raise ValueError("horizon must be positive")
        self.horizon_ms = horizon_ms
        self._pending: dict[str, Pending] = {}
        self._due: list[tuple[int, str, int]] = []  # (deadline, customer, scored_at)

    def __len__(self) -> int:
        return len(self._pending)

    def pending(self, customer_id: str) -> Pending | None:
        return self._pending.get(customer_id)

    def score(
        self,
        customer_id: str,
        scored_at: int,
        x: ChurnFeatures,
        score: float | None = None,
        baseline: float | None = None,
    ) -> bool:
        """Keep a score as pending; False (and nothing kept) if one is already pending."""
        if customer_id in self._pending:
            return False
        self._pending[customer_id] = Pending(customer_id, scored_at, x, score, baseline)
        heapq.heappush(self._due, (scored_at + self.horizon_ms, customer_id, scored_at))
        return True

    def order(self, customer_id: str, order_ts: int) -> Label | None:
        """An order of the customer: the retained label, if it falls in the pending window."""
        p = self._pending.get(customer_id)
        if p is None or label_on_order(p, order_ts, self.horizon_ms) is None:
            return None
        del self._pending[customer_id]
        return Label(p, RETAINED, order_ts)

    def advance(self, watermark: int) -> list[Label]:
        """The churned labels of every pending score whose horizon the watermark has passed."""
        out: list[Label] = []
        while self._due and self._due[0][0] < watermark:
            _, cid, scored_at = heapq.heappop(self._due)
            p = self._pending.get(cid)
            # a heap entry of a score already labelled (retained) is stale: skip it
            if p is None or p.scored_at != scored_at:
                continue
            del self._pending[cid]
            out.append(Label(p, CHURNED, watermark))
        return out
