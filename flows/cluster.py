"""Ordered input on one or many workers: the phases of a batch.

Every worker reads the same numbered batches (`connectors.ordered`) and applies
its share: the customers (and visitors) of its timer shards; worker 0 also
applies every stock-touching op, dead letters and location updates. Between
the phases the workers wait for each other (`state.cluster`), so whatever a
phase reads of the others' work is the same as a single worker would read:

    start    every worker committed the previous batch
    model    worker 0 (the learner) learned the labels queued so far
    swept    each worker judged its customers' due reviews (sweep), reading
             ranks, stock and the model as the previous batch left them
    applied  each worker applied its customers' events; worker 0 the stock ops
    (then)   each worker judges its customers against the ranks after the
             whole batch, settles and commits its share with its progress

One worker is the same procedure without the waits. The result does not
depend on the number of workers or processes (issue 5, acceptance 4), except
where the README says ("Scaling out").
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from connectors.events import Event
from connectors.ordered import BatchEnd
from flows.commerce import BOPIS_TYPES, InventoryOutcome, apply_inventory, bopis
from flows.customers import apply_customers, judge, reviews_of
from flows.policy import settle, sync_model
from flows.worker import Worker
from operators.triggers import Trigger
from state.cluster import Cluster
from state.customers import Applied


def owner_subjects(w: Worker, events: Sequence[Event]) -> dict[str, str]:
    """Visitor id -> the subject whose worker applies the visitor's events this batch.

    A visitor already stitched to a customer goes with the customer, as does one
    that an event of this batch stitches: the customer's worker then applies the
    visitor's events and the stitch in batch order, as a single worker would.
    """
    visitors = {e.anonymous_id for e in events if e.anonymous_id is not None}
    if not visitors:
        return {}
    out: dict[str, str] = {}
    if w.cluster is not None and w.cluster.count > 1:
        out.update(w.store.stitched_to(sorted(visitors)))
    for e in events:
        if e.anonymous_id is not None and e.customer_id is not None:
            out.setdefault(e.anonymous_id, e.customer_id)
    return out


class Share:
    """Which events of a batch are this worker's to apply and count."""

    def __init__(self, cluster: Cluster | None, to: dict[str, str]) -> None:
        self.cluster = cluster
        self.to = to
        self.first = cluster is None or cluster.index == 0

    def subject(self, e: Event) -> str | None:
        if e.customer_id is not None:
            return e.customer_id
        if e.anonymous_id is not None:
            return self.to.get(e.anonymous_id, e.anonymous_id)
        return None

    def mine(self, e: Event) -> bool:
        """Its customer's (or visitor's) worker; worker 0 for stock and locations."""
        if self.cluster is None or self.cluster.count <= 1:
            return True
        subject = self.subject(e)
        return self.first if subject is None else self.cluster.owns(subject)


def begin(w: Worker, end: BatchEnd) -> bool:
    """The batch's first phases, up to its sweep; True when the sweep is still to do."""
    cl = w.cluster
    assert cl is not None
    cl.arrive_and_wait(end.seq, "start")
    if cl.index == 0 and w.group_pending and w.committer is not None:
        # every worker has committed these: safe to show them to lag tools
        prefixed = w.settings.kafka.topic
        w.committer.commit({prefixed(k): off for k, off in w.group_pending.items()})
        w.group_pending = {}
    # the pass is done once per batch, also when the batch is read again
    to_sweep = not w.batch or w.store.swept(cl.index) != w.batch
    if cl.index == 0 and to_sweep and not cl.arrived(end.seq, "model"):
        # labels queued up to the previous batch: learned before this batch
        # scores anyone, as a clean run learns them (a sweep already done, by
        # any worker, means they were learned then, and its labels wait)
        sync_model(w)
    cl.arrive_and_wait(end.seq, "model")
    if cl.count > 1:
        if cl.index and w.model is not None and w.model_store is not None:
            w.model.refresh(w.model_store)
        w.refresh_locations(w.location_store.version())
    return to_sweep


def apply_share(
    w: Worker, mine: list[Event], everyone: list[Event], wall: int, end: BatchEnd
) -> list[dict[str, Any]]:
    """Apply this worker's share of a batch, wait for the others, judge and settle."""
    cl = w.cluster
    assert cl is not None
    applied = apply_customers(w, mine, wall) if mine else []
    commerce = apply_inventory(w, everyone) if cl.index == 0 else InventoryOutcome()
    if cl.index == 0 and cl.count > 1 and commerce.stock:
        # stock as worker 0's batch call saw it at each view or cart: the others
        # suggest stores for their customers from the figures a lone worker uses
        cl.publish_peeks(end.seq, commerce.stock)
    cl.arrive_and_wait(end.seq, "applied")
    stock = commerce.stock
    if cl.count > 1:
        w.refresh_locations(w.location_store.version())
        if cl.index and any(e.type in BOPIS_TYPES for e in mine):
            stock = cl.peeks(end.seq)
    return judge_and_settle(w, applied, bopis(w, mine, _finals(applied), stock), commerce)


def judge_and_settle(
    w: Worker, applied: list[Applied], suggestions: list[Trigger], commerce: InventoryOutcome
) -> list[dict[str, Any]]:
    """Judge the customers a batch applied, then settle every trigger it decided."""
    reviews = [v for r in applied for v in reviews_of(r)]
    decided = judge(w, reviews)
    return settle(
        w,
        decided.labels,
        decided.timers,
        [*decided.triggers, *suggestions],
        commerce.triggers,
    )


def _finals(applied: list[Applied]) -> dict[str, dict[str, Any]]:
    return {r.subject: r.final for r in applied}
