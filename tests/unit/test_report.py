"""`omnipulse report` options and table, without Redis."""

from __future__ import annotations

from datetime import UTC
from zoneinfo import ZoneInfo

import pytest

from omnipulse.report import Report, ReportError, as_json, as_table, parse_time
from operators.sales import ChannelHour

SHANGHAI = ZoneInfo("Asia/Shanghai")
H = 1_736_150_400_000  # 2025-01-06T08:00:00Z = 16:00 in Shanghai


def test_times_are_rfc_3339_or_local_date_hours():
    assert parse_time("2025-01-06T08:00:00Z", SHANGHAI) == H
    assert parse_time("2025-01-06T16", SHANGHAI) == H  # local: the business time zone
    assert parse_time("2025-01-06 16:00", SHANGHAI) == H
    with pytest.raises(ReportError, match="not a date-time"):
        parse_time("yesterday", SHANGHAI)


def test_table_and_json_show_local_hours_and_per_channel_totals():
    rows = [
        ChannelHour(H, "app", 2, 0, 0, 30_000, 0, 8),
        ChannelHour(H, "store", 1, 0, 0, 4_999, 0, 0),
        ChannelHour(H + 3_600_000, "app", 1, 1, 0, 10_000, 30_000, 4),
    ]
    rep = Report(SHANGHAI, [H, H + 3_600_000], rows, None)
    lines = as_table(rep).splitlines()
    assert lines[2].split() == ["2025-01-06", "16:00", "app", "2", "0", "0", "300.00", "150.00",
                                "8", "25.00"]  # fmt: skip
    assert lines[3].split()[-2:] == ["0", "-"]  # no sessions: no conversion
    assert lines[4].split()[6] == "-200.00"  # a cancellation booked in a later hour
    assert lines[-1].split() == ["all", "hours", "all", "4", "1", "0", "149.99", "112.50", "12",
                                 "33.33"]  # fmt: skip
    doc = as_json(rep)
    assert doc["from"] == "2025-01-06T16:00:00+08:00" and doc["to"] == "2025-01-06T17:00:00+08:00"
    assert doc["hours"][0]["hour"] == "2025-01-06T16:00:00+08:00"
    assert doc["total"]["revenue"] == "149.99" and doc["total"]["net_orders"] == 3


def test_an_empty_store_says_so():
    assert "no sales figures yet" in as_table(Report(UTC, [], [], None))
