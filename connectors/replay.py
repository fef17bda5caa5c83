"""Historical events from a file, for ``omnipulse replay FILE``.

:func:`read_events` turns a file into :class:`~connectors.records.SimRecord` items
(logical topic, key, value) that the caller produces to the input topics. It checks
nothing of the event contract itself: the engine does, so a malformed event ends up in
the dead-letter topic with a reason, exactly as if a channel system had sent it.

Formats (chosen by ``fmt``, else by the file name; a ``.gz`` suffix is ignored there):

**JSONL** (``.jsonl``, ``.ndjson``, ``.json``): one JSON object per line, the event as it
would be on the topic (SPEC §3). The topic is the record's ``"topic"`` field (removed
from the value) or else the ``topic`` argument. Blank lines are skipped. A line that is
not a JSON object is yielded anyway, as raw bytes under the ``topic`` argument, so the
engine dead-letters it instead of the reader dropping it silently.

**CSV** (``.csv``): a header row, then one event per row. Each column gives the field of
the same name; ``column_map`` maps event field -> CSV column for files with other
headers, e.g. ``{"customer_id": "user", "ts": "time"}``. A ``topic`` column, if present,
gives the row's topic. Empty cells are left out (CSV has no null). Cells are strings,
except:

- ``qty``, ``on_hand``, ``delta``, ``reorder_point``, ``max_level``,
  ``lead_time_days`` and ``ts`` that look like integers become integers (so ``ts`` may
  be epoch milliseconds or an RFC 3339 string);
- ``lat``, ``lon``, ``ship_cost_per_km``, ``handling_cost`` that look like numbers
  become numbers;
- ``premium`` and ``active``: ``true/false``, ``1/0``, ``yes/no`` become booleans;
- ``lines`` and ``fulfilment`` hold JSON text, e.g.
  ``[{"sku": "SKU-1", "qty": 2, "unit_price": "19.90"}]``;
- money (``unit_price``, ``total``, ``list_price``) stays a decimal string: exact.

A cell that does not convert is passed on as text (the engine then rejects the event,
naming the field); a row with more or fewer cells than the header, or with bytes that
are not UTF-8, is yielded as raw bytes under the ``topic`` argument.

Either format may be gzip-compressed: that is recognised by the file's first bytes.

Keys follow SPEC §2: ``customer_id`` (else ``anonymous_id``) on clicks, carts and
orders, ``sku`` on stock, ``location_id`` on locations; none for raw (bad) lines.
A line whose topic cannot be told, or names no input topic, raises :class:`ReplayError`.
"""

from __future__ import annotations

import csv
import gzip
import io
import re
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import orjson

from connectors.errors import ReplayError
from connectors.records import TOPICS, SimRecord, record_key

FORMATS = ("jsonl", "csv")
_SUFFIXES = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl", ".csv": "csv"}
_INT_FIELDS = frozenset({"qty", "on_hand", "delta", "reorder_point", "max_level",
                         "lead_time_days", "ts"})  # fmt: skip
_FLOAT_FIELDS = frozenset({"lat", "lon", "ship_cost_per_km", "handling_cost"})
_BOOL_FIELDS = frozenset({"premium", "active"})
_JSON_FIELDS = frozenset({"lines", "fulfilment"})
_BOOLS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}
_INT_RE = re.compile(r"[+-]?\d+")
_FLOAT_RE = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


def read_events(
    path: Path,
    *,
    fmt: str | None = None,
    topic: str | None = None,
    column_map: dict[str, str] | None = None,
) -> Iterator[SimRecord]:
    """Records of the events in ``path``, in file order; see the module docstring.

    Bad arguments (unknown format or topic, missing file) raise :class:`ReplayError`
    here, before anything is read; problems inside the file raise it while iterating.
    """
    path = Path(path)
    if topic is not None and topic not in TOPICS:
        raise ReplayError(f"topic {topic!r} is not an input topic; expected one of {TOPICS}")
    fmt = fmt.lower() if fmt else _guess_format(path)
    if fmt not in FORMATS:
        raise ReplayError(f"{path}: format {fmt!r} is not one of {FORMATS}")
    if column_map and fmt != "csv":
        raise ReplayError(f"{path}: a column map applies to CSV files only")
    if not path.is_file():
        raise ReplayError(f"{path}: no such file")
    if fmt == "jsonl":
        return _jsonl(path, topic)
    return _csv(path, topic, column_map or {})


def _guess_format(path: Path) -> str:
    name = path.name.lower().removesuffix(".gz")
    fmt = _SUFFIXES.get(Path(name).suffix)
    if fmt is None:
        raise ReplayError(f"{path}: cannot tell the format from the name; give one of {FORMATS}")
    return fmt


def _open(path: Path) -> IO[bytes]:
    with path.open("rb") as f:
        gzipped = f.read(2) == b"\x1f\x8b"
    return gzip.open(path, "rb") if gzipped else path.open("rb")


def _topic(t: Any, path: Path, line: int) -> str:
    if t is None:
        raise ReplayError(
            f"{path}:{line}: cannot tell the topic: the record has no 'topic' field "
            "and no default topic was given"
        )
    if t not in TOPICS:
        raise ReplayError(f"{path}:{line}: topic {t!r} is not one of {TOPICS}")
    return str(t)


def _record(topic: str, value: dict[str, Any]) -> SimRecord:
    return SimRecord(topic, record_key(topic, value), value)


def _jsonl(path: Path, default: str | None) -> Iterator[SimRecord]:
    try:
        with _open(path) as f:
            for n, raw in enumerate(f, 1):
                line = raw.strip()
                if n == 1:
                    line = line.removeprefix(b"\xef\xbb\xbf")  # a BOM from Windows tools
                if not line:
                    continue
                try:
                    obj = orjson.loads(line)
                except orjson.JSONDecodeError:
                    obj = None
                if isinstance(obj, dict):
                    t = obj.pop("topic", None)
                    yield _record(_topic(default if t is None else t, path, n), obj)
                else:  # the engine dead-letters it with the reason; we must not drop it
                    yield SimRecord(_topic(default, path, n), None, line)
    except (OSError, EOFError) as ex:  # unreadable file, corrupt or truncated gzip
        raise ReplayError(f"{path}: {ex}") from ex


def _csv(path: Path, default: str | None, column_map: dict[str, str]) -> Iterator[SimRecord]:
    try:
        with _open(path) as raw, io.TextIOWrapper(
            raw, encoding="utf-8-sig", errors="surrogateescape", newline=""
        ) as text:  # fmt: skip
            reader = csv.reader(text)
            header = next(reader, None)
            if header is None:
                return
            fields = _fields(path, [h.strip() for h in header], column_map)
            for row in reader:
                n = reader.line_num
                if not any(cell.strip() for cell in row):
                    continue
                if len(row) != len(fields) or not _is_utf8(row):
                    yield SimRecord(_topic(default, path, n), None, _raw_row(row))
                    continue
                value = {f: _convert(f, cell) for f, cell in zip(fields, row, strict=True) if cell}
                t = value.pop("topic", None)
                yield _record(_topic(default if t is None else t, path, n), value)
    except (OSError, EOFError, csv.Error) as ex:
        raise ReplayError(f"{path}: {ex}") from ex


def _fields(path: Path, header: list[str], column_map: dict[str, str]) -> list[str]:
    """The event field of each column, after applying ``column_map``."""
    by_column = {col: field for field, col in column_map.items()}
    missing = sorted(set(by_column) - set(header))
    if missing:
        raise ReplayError(f"{path}: column map names columns {missing} not in the header {header}")
    fields = [by_column.get(col, col) for col in header]
    dupes = sorted({f for f in fields if fields.count(f) > 1})
    if dupes:
        raise ReplayError(f"{path}: several columns give the fields {dupes}; fix the column map")
    return fields


def _convert(field: str, cell: str) -> Any:
    s = cell.strip()
    if field in _JSON_FIELDS:
        try:
            return orjson.loads(s)
        except orjson.JSONDecodeError:
            return cell
    if field in _INT_FIELDS and _INT_RE.fullmatch(s):
        return int(s)
    if field in _FLOAT_FIELDS and _FLOAT_RE.fullmatch(s):
        return float(s)
    if field in _BOOL_FIELDS:
        return _BOOLS.get(s.lower(), cell)
    return cell


def _is_utf8(row: list[str]) -> bool:
    try:
        for cell in row:
            cell.encode("utf-8")
    except UnicodeEncodeError:  # surrogate-escaped bytes that were not UTF-8
        return False
    return True


def _raw_row(row: list[str]) -> bytes:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="").writerow(row)
    return buf.getvalue().encode("utf-8", "surrogateescape")
