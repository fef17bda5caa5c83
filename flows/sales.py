"""Per-channel hourly sales of a batch: after the customers' apply round, one more
pipeline adds what was applied to the hour buckets (see `operators.sales`)."""

from __future__ import annotations

from collections.abc import Sequence

from common import metrics
from flows.worker import Worker
from operators.sales import applied_sessions, order_outcomes, tally
from state.customers import Applied


def record_sales(w: Worker, results: Sequence[Applied]) -> None:
    """Add the orders and sessions that the customers' Lua calls applied (no duplicate)."""
    orders = []
    sessions = []
    for r in results:
        if r.redirect or not r.applied:
            continue  # a visitor's events handed to its customer are applied there
        orders.extend(order_outcomes(r.sent, r.marks, r.old_n, r.old_m))
        sessions.extend(applied_sessions(r.sent, r.dups))
    if not orders and not sessions:
        return
    assert w.sales is not None
    tallies = tally(orders, sessions, w.rules.tz)
    if w.settings.engine.ordered_input:
        # with the batch's commit: a batch read again after a crash counts once
        w.pending_sales.append(tallies)
    else:
        w.sales.add(tallies)
    metrics.count_sales((channel, t.placed, t.gross) for (channel, _), t in tallies.items())
