"""The metric recording helpers: what a batch's counters and triggers add up to."""

from __future__ import annotations

from prometheus_client import REGISTRY
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from common import metrics


def value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_a_batch_s_counters_land_in_the_labelled_metrics() -> None:
    before = {
        "rej": value("omnipulse_events_rejected_total", reason="bad_value"),
        "emit": value("omnipulse_triggers_emitted_total", kind="reorder"),
        "sup": value("omnipulse_triggers_suppressed_total", kind="win_back"),
        "held": value("omnipulse_triggers_held_total", kind="win_back"),
        "dup": value("omnipulse_events_duplicate_total"),
        "late": value("omnipulse_events_late_total"),
        "churned": value("omnipulse_churn_labels_total", label="churned"),
    }
    metrics.count_batch(
        {
            "rejected:bad_value": 2,
            "emitted:reorder": 3,
            "suppressed:win_back": 1,
            "held:win_back": 4,
            "duplicates": 5,
            "late": 6,
            "churn:labels_churned": 7,
            "events:orders": 100,  # counted from the records themselves, not here
            "uplift:win_back:treated:sent": 1,
        }
    )
    assert value("omnipulse_events_rejected_total", reason="bad_value") == before["rej"] + 2
    assert value("omnipulse_triggers_emitted_total", kind="reorder") == before["emit"] + 3
    assert value("omnipulse_triggers_suppressed_total", kind="win_back") == before["sup"] + 1
    assert value("omnipulse_triggers_held_total", kind="win_back") == before["held"] + 4
    assert value("omnipulse_events_duplicate_total") == before["dup"] + 5
    assert value("omnipulse_events_late_total") == before["late"] + 6
    assert value("omnipulse_churn_labels_total", label="churned") == before["churned"] + 7


def test_trigger_latency_and_timer_lateness() -> None:
    def count(name: str, **labels: str) -> tuple[float, float]:
        return value(f"{name}_count", **labels), value(f"{name}_sum", **labels)

    lat_e = count("omnipulse_trigger_latency_seconds", kind="journey_step", basis="event_time")
    lat_i = count("omnipulse_trigger_latency_seconds", kind="journey_step", basis="ingest")
    late = count("omnipulse_timer_lateness_seconds", kind="journey_step")
    emitted = 1_700_000_010_000
    records = [
        # due 2.5 s before emission
        {"kind": "journey_step", "event_ts": "2023-11-14T22:13:27.500Z"},
        # held by quiet hours: due when they ended, 1 s before emission
        {
            "kind": "journey_step",
            "event_ts": "2023-11-14T12:00:00.000Z",
            "held_until": "2023-11-14T22:13:29.000Z",
        },
    ]
    metrics.observe_triggers(records, emitted, ingest_ms=emitted - 200, timers=True)
    n, s = count("omnipulse_trigger_latency_seconds", kind="journey_step", basis="ingest")
    assert (n - lat_i[0], round(s - lat_i[1], 3)) == (2, 0.4)
    n, s = count("omnipulse_trigger_latency_seconds", kind="journey_step", basis="event_time")
    assert n - lat_e[0] == 2
    assert round(s - lat_e[1], 1) == round(2.5 + (emitted / 1000 - 1699963200), 1)
    n, s = count("omnipulse_timer_lateness_seconds", kind="journey_step")
    assert (n - late[0], round(s - late[1], 3)) == (2, 3.5)

    # no input caused them (the final sweep of a catch-up run): no ingest basis
    metrics.observe_triggers(records[:1], emitted, ingest_ms=None, timers=False)
    n, _ = count("omnipulse_trigger_latency_seconds", kind="journey_step", basis="ingest")
    assert n - lat_i[0] == 2


def test_partition_lag_and_state_gauges_in_the_exposition() -> None:
    metrics.LAG.set("orders", 0, 7)
    metrics.LAG.set("orders", 1, 3)
    assert metrics.LAG.total() == 10
    metrics.STATE.customers = lambda: 42
    metrics.STATE.model = lambda: {
        "roc_auc": 0.81,
        "log_loss": 0.4,
        "heuristic_roc_auc": None,
        "labels_churned": 3,
        "labels_retained": 9,
    }
    try:
        text = generate_latest(REGISTRY).decode()
        samples = {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(text)
            for s in f.samples
        }
        assert samples[("omnipulse_consumer_lag", (("partition", "0"), ("topic", "orders")))] == 7
        assert samples[("omnipulse_customers", ())] == 42
        assert samples[("omnipulse_model_auc", ())] == 0.81
        assert ("omnipulse_model_heuristic_auc", ()) not in samples  # not known yet
        assert samples[("omnipulse_model_labels", (("label", "retained"),))] == 9

        def down() -> int:
            raise ConnectionError("redis is down")

        metrics.STATE.customers = down  # a scrape still answers, without the gauge
        text = generate_latest(REGISTRY).decode()
        assert "omnipulse_customers " not in text
        assert "omnipulse_model_auc 0.81" in text
    finally:
        metrics.reset_sources()
    assert metrics.LAG.total() == 0
    assert "omnipulse_consumer_lag{" not in generate_latest(REGISTRY).decode()


def test_the_engine_exports_every_metric_the_alerts_and_dashboard_use() -> None:
    from test_deploy_files import COUNTERS, GAUGES, HISTOGRAMS

    metrics.STATE.customers = lambda: 1
    metrics.STATE.model = lambda: {"roc_auc": 0.5, "log_loss": 0.7, "heuristic_roc_auc": 0.5}
    try:
        text = generate_latest(REGISTRY).decode()
    finally:
        metrics.reset_sources()
    families = {f.name: f.type for f in text_string_to_metric_families(text)}
    planned = {n for n in COUNTERS | GAUGES if n != "up"}  # `up` is Prometheus's own
    for name in planned:
        if name in COUNTERS:
            assert families.get(name.removesuffix("_total")) == "counter", name
        else:
            assert families.get(name) == "gauge", name
    for name in HISTOGRAMS:
        assert families.get(name) == "histogram", name
    # and nothing the engine exports is missing from the deployment files
    exported = {n for n in families if n.startswith("omnipulse_")}
    known = {n.removesuffix("_total") for n in COUNTERS} | GAUGES | HISTOGRAMS
    assert exported <= known, exported - known
