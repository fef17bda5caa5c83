"""CDNOW transactions as omnipulse `orders` events, for the churn benchmark.

The CDNOW master file (69,659 transactions of 23,570 customers who first bought
in Q1 1997, 1997-01-01..1998-06-30; columns: customer id, yyyymmdd, CDs, dollars)
ships inside the `lifetimes` package (`pip install .[bench]`) as
`lifetimes/datasets/CDNOW_master.txt`. It is read as a plain file; `lifetimes`
itself (and with it pandas) is never imported. A path to the text file, or to a
downloaded `lifetimes` wheel (read with zipfile), can be given instead.

Conversion, one `order_placed` per transaction, in time order (file order within
a day):

- `ts`: noon UTC of the transaction's date, RFC 3339; `channel` "web";
- `customer_id` `cdnow-<id>` (the id as in the file, zero-padded);
- `order_id` `cdnow-<id>-<yyyymmdd>-<k>`, k counting the customer's rows of that
  day from 1; `event_id` `<order_id>-placed`;
- `lines`: `{sku: "CD", qty: CDs, unit_price}`; `total` is the dollar amount,
  exact. When the amount does not split into whole cents per CD, the CDs go on
  two lines of the same SKU (qty - 1 at the lower cent price, 1 at the rest) so
  that the lines still add up to the total exactly. The 80 rows of 0 dollars
  are kept (unit price "0.00");
- `currency` "USD", no `fulfilment`.

Every line carries `"topic": "orders"` so that `omnipulse replay FILE` routes it.
The last line is a `clicks` page view of an anonymous "clock" visitor 100 days
after the last transaction: it moves the engine's event-time watermark past the
90-day horizon of the last scores, so that they get their (churned) labels.

The dates are before the engine's default `engine.min_event_time` (2000-01-01):
replay into an engine configured with an earlier one, e.g.
`min_event_time = "1996-01-01T00:00:00Z"` in its `[engine]` section.

    python -m bench.churn_data cdnow.jsonl [--source FILE]
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson

CDNOW_MEMBER = "lifetimes/datasets/CDNOW_master.txt"
DAY_MS = 86_400_000
CLOCK_DAYS = 100
CENT = Decimal("0.01")
SIM_START_MS = 1_704_067_200_000  # 2024-01-01T00:00:00Z, as bench.churn_eval


@dataclass(frozen=True, slots=True)
class Txn:
    """One CDNOW row: customer id (as in the file), yyyymmdd, CDs, dollars."""

    customer: str
    date: str
    cds: int
    dollars: Decimal

    @property
    def ts_ms(self) -> int:
        """Noon UTC of the transaction's date, epoch ms."""
        d = datetime.strptime(self.date, "%Y%m%d").replace(hour=12, tzinfo=UTC)
        return int(d.timestamp()) * 1000


def cdnow_text(source: str | Path | None = None) -> str:
    """The CDNOW master file's text: from `source` (text file or wheel), else the installed
    `lifetimes` package (located without importing it)."""
    if source is not None:
        path = Path(source)
        if path.suffix == ".whl" or zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as z:
                return z.read(CDNOW_MEMBER).decode("ascii")
        return path.read_text(encoding="ascii")
    spec = importlib.util.find_spec("lifetimes")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(
            "CDNOW data: install the bench extra (pip install '.[bench]', i.e. lifetimes"
            " 0.11.3) or pass --source with the text file or a lifetimes wheel"
        )
    base = Path(next(iter(spec.submodule_search_locations)))
    return (base / "datasets" / "CDNOW_master.txt").read_text(encoding="ascii")


def parse_cdnow(text: str) -> list[Txn]:
    """Rows of the whitespace-separated file; a header line (non-numeric id) is skipped."""
    out: list[Txn] = []
    for line in text.splitlines():
        parts = line.split()
        if not parts or not parts[0].isdigit():
            continue
        cid, date, cds, dollars = parts
        out.append(Txn(cid, date, int(cds), Decimal(dollars)))
    return out


def order_lines(cds: int, dollars: Decimal) -> list[dict[str, Any]]:
    """CD lines whose `qty * unit_price` add up to `dollars` exactly."""
    cents = int((dollars / CENT).to_integral_exact())
    qty = max(1, cds)  # a row of 0 CDs (none in the file) still needs a positive qty
    unit, rest = divmod(cents, qty)
    if rest == 0:
        return [{"sku": "CD", "qty": qty, "unit_price": _money(unit)}]
    # qty - 1 at `unit`, one at `unit + rest`: sum = qty * unit + rest = cents
    return [
        {"sku": "CD", "qty": qty - 1, "unit_price": _money(unit)},
        {"sku": "CD", "qty": 1, "unit_price": _money(unit + rest)},
    ]


def _money(cents: int) -> str:
    return str((Decimal(cents) * CENT).quantize(CENT))


def rfc3339(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def to_events(txns: Iterable[Txn], clock_days: int = CLOCK_DAYS) -> Iterator[dict[str, Any]]:
    """The replay lines (with `topic`): orders in time order, then the clock click."""
    rows = sorted(enumerate(txns), key=lambda it: (it[1].date, it[0]))
    seen: dict[tuple[str, str], int] = {}
    last = None
    for _, t in rows:
        k = seen[t.customer, t.date] = seen.get((t.customer, t.date), 0) + 1
        oid = f"cdnow-{t.customer}-{t.date}-{k}"
        last = t.ts_ms
        yield {
            "topic": "orders",
            "event_id": f"{oid}-placed",
            "type": "order_placed",
            "ts": rfc3339(last),
            "channel": "web",
            "customer_id": f"cdnow-{t.customer}",
            "order_id": oid,
            "lines": order_lines(t.cds, t.dollars),
            "total": str(t.dollars.quantize(CENT)),
            "currency": "USD",
        }
    if last is not None:
        yield {
            "topic": "clicks",
            "event_id": "cdnow-clock",
            "type": "page_view",
            "ts": rfc3339(last + clock_days * DAY_MS),
            "channel": "web",
            "anonymous_id": "cdnow-clock",
            "session_id": "cdnow-clock",
            "page": "clock",
        }


def write_jsonl(events: Iterable[dict[str, Any]], path: Path) -> int:
    n = 0
    with path.open("wb") as f:
        for e in events:
            f.write(orjson.dumps(e) + b"\n")
            n += 1
    return n


def sim_events(
    events: int, customers: int, seed: int, time_scale: float
) -> Iterator[dict[str, Any]]:
    """The simulator's traffic as replay lines, as `bench.churn_eval --data sim` reads it.

    No clock event: like the offline evaluation, the stream is cut, not ended,
    so the scores still pending at its end stay unlabelled.
    """
    from itertools import islice

    from omnipulse.simulator import Simulator

    sim = Simulator(seed=seed, customers=customers, start_ms=SIM_START_MS, time_scale=time_scale)
    for r in islice(sim.events(), events):
        if isinstance(r.value, dict):
            yield {"topic": r.topic, **r.value}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="CDNOW (or simulated traffic) -> replay JSONL")
    ap.add_argument("out", type=Path, help="JSONL file to write")
    ap.add_argument("--source", help="CDNOW_master.txt or a lifetimes wheel")
    ap.add_argument("--sim", action="store_true", help="simulated traffic instead of CDNOW")
    ap.add_argument("--events", type=int, default=100_000, help="sim: events")
    ap.add_argument("--customers", type=int, default=1000, help="sim: customers")
    ap.add_argument("--seed", type=int, default=7, help="sim: seed")
    ap.add_argument("--time-scale", type=float, default=150.0, help="sim: seconds per event")
    args = ap.parse_args(argv)
    if args.sim:
        lines = sim_events(args.events, args.customers, args.seed, args.time_scale)
    else:
        lines = to_events(parse_cdnow(cdnow_text(args.source)))
    n = write_jsonl(lines, args.out)
    print(orjson.dumps({"written": n, "file": str(args.out)}).decode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
