"""Logging for the CLI: plain text or JSON lines, with known secrets redacted.

JSON lines (``--log-format json`` or ``OMNIPULSE_LOG_FORMAT=json``) write one
object per line: ``ts`` (RFC 3339, UTC, milliseconds), ``level``, ``logger``,
``message`` and, for a logged exception, ``exc``. Both formats replace every
secret the settings hold (passwords, SASL credentials, the pseudonym key) by
``***`` wherever it would appear, including exception text.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import TextIO

import orjson

from common.settings import MASK

FORMATS = ("text", "json")
FORMAT_ENV = "OMNIPULSE_LOG_FORMAT"
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

_secrets: set[str] = set()


def redact(secrets: Iterable[str]) -> None:
    """Add values that must never be written by a log handler of this module."""
    _secrets.update(s for s in secrets if s)


def scrub(text: str) -> str:
    """`text` with every registered secret replaced by ``***``."""
    for secret in sorted(_secrets, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, MASK)
    return text


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        return scrub(super().format(record))


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line."""

    def format(self, record: logging.LogRecord) -> str:
        ts = datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")
        obj: dict[str, object] = {
            "ts": ts.replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": scrub(record.getMessage()),
        }
        if record.exc_info:
            obj["exc"] = scrub(self.formatException(record.exc_info))
        elif record.exc_text:
            obj["exc"] = scrub(record.exc_text)
        if record.stack_info:
            obj["stack"] = scrub(record.stack_info)
        return orjson.dumps(obj).decode()


def configure(level: int, fmt: str = "text", stream: TextIO | None = None) -> logging.Handler:
    """Send every log record to `stream` (stderr) in `fmt`; replaces earlier handlers."""
    if fmt not in FORMATS:
        raise ValueError(f"log format must be one of {FORMATS}, got {fmt!r}")
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    logging.captureWarnings(True)
    return handler


def fatal_line(message: str, fmt: str) -> str:
    """The last line a failing command writes to stderr, in the chosen format."""
    if fmt == "json":
        return JsonFormatter().format(
            logging.LogRecord("omnipulse", logging.ERROR, "", 0, message, None, None)
        )
    return f"omnipulse: {scrub(message)}"
