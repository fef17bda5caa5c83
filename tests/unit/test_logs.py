"""Log output: JSON lines with the documented fields, secrets never written."""

from __future__ import annotations

import io
import logging

import orjson
import pytest

from omnipulse import logs


@pytest.fixture
def stream():
    out = io.StringIO()
    yield out
    logs.configure(logging.WARNING, "text")


def test_json_lines_have_ts_level_logger_message(stream):
    logs.configure(logging.INFO, "json", stream)
    logging.getLogger("omnipulse.test").info("engine %s", "starting")
    logging.getLogger("omnipulse.test").debug("not at INFO")
    (line,) = stream.getvalue().splitlines()
    rec = orjson.loads(line)
    assert rec["level"] == "INFO"
    assert rec["logger"] == "omnipulse.test"
    assert rec["message"] == "engine starting"
    assert rec["ts"].endswith("Z") and "T" in rec["ts"]


@pytest.mark.parametrize("fmt", logs.FORMATS)
def test_registered_secrets_are_redacted_also_in_exceptions(stream, fmt):
    logs.configure(logging.INFO, fmt, stream)
    logs.redact(["hunter2-Secret-Value"])
    log = logging.getLogger("omnipulse.test")
    log.warning("connecting with password hunter2-Secret-Value")
    try:
        raise RuntimeError("AUTH hunter2-Secret-Value failed")
    except RuntimeError:
        log.exception("boom")
    text = stream.getvalue()
    assert "hunter2-Secret-Value" not in text
    assert "password ***" in text
    assert "AUTH *** failed" in text
    if fmt == "json":
        recs = [orjson.loads(line) for line in text.splitlines()]
        assert len(recs) == 2 and "RuntimeError" in recs[1]["exc"]
    assert "hunter2" not in logs.fatal_line("bad hunter2-Secret-Value", fmt)


def test_unknown_format_is_refused():
    with pytest.raises(ValueError):
        logs.configure(logging.INFO, "xml")
