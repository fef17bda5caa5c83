"""Static checks of the deployment files (compose, Prometheus, Grafana).

They need neither network nor docker and use only the standard library (PyYAML
is not a dependency), so the YAML files are read with a few line-based helpers
that rely on the block style these files are written in. When promtool or
`docker compose` is on PATH, the files are also checked with those tools.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
DEPLOY = ROOT / "deploy"
PROM_CONFIG = DEPLOY / "prometheus" / "prometheus.yml"
ALERTS = DEPLOY / "prometheus" / "alerts.yml"
ALERT_TESTS = DEPLOY / "prometheus" / "alerts.test.yml"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "omnipulse.json"
DATASOURCE = DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml"
DASH_PROVIDER = DEPLOY / "grafana" / "provisioning" / "dashboards" / "omnipulse.yml"

COUNTERS = {
    "omnipulse_events_in_total",
    "omnipulse_events_rejected_total",
    "omnipulse_events_duplicate_total",
    "omnipulse_events_late_total",
    "omnipulse_triggers_emitted_total",
    "omnipulse_triggers_suppressed_total",
    "omnipulse_triggers_held_total",
    "omnipulse_churn_labels_total",
    "omnipulse_redis_retries_total",
    "omnipulse_channel_orders_total",
    "omnipulse_channel_revenue_total",
}
GAUGES = {
    "omnipulse_consumer_lag",
    "omnipulse_customers",
    "omnipulse_model_auc",
    "omnipulse_model_heuristic_auc",
    "omnipulse_model_log_loss",
    "omnipulse_model_labels",
    "omnipulse_redis_up",
    "omnipulse_watermark_lag_seconds",
    "up",
}
HISTOGRAMS = {
    "omnipulse_trigger_latency_seconds",
    "omnipulse_timer_lateness_seconds",
    "omnipulse_redis_call_seconds",
    "omnipulse_redis_pipeline_commands",
    "omnipulse_batch_size",
}
ALLOWED = COUNTERS | GAUGES | {f"{h}_{s}" for h in HISTOGRAMS for s in ("bucket", "sum", "count")}

_PROMQL_WORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "and", "or",
    "unless", "offset", "bool", "inf", "nan",
}  # fmt: skip


def metric_names(expr: str) -> set[str]:
    """Metric names used by a PromQL expression (functions, labels, keywords removed)."""
    s = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # string literals
    s = re.sub(r"\{[^}]*\}", " ", s)  # label matchers
    s = re.sub(r"\[[^\]]*\]", " ", s)  # ranges and subqueries
    s = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", s)
    s = re.sub(r"\$\w+", " ", s)  # Grafana variables
    names = set()
    for m in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", s):
        rest = s[m.end() :].lstrip()
        if rest.startswith("("):  # a function or aggregation
            continue
        if m.group(0).lower() in _PROMQL_WORDS:
            continue
        names.add(m.group(0))
    return names


def yaml_values(text: str, key: str) -> list[str]:
    """Every value of ``key:`` in block-style YAML, plain, quoted or a block scalar."""
    out = []
    lines = text.splitlines()
    for i, line in enumerate(lines):
        m = re.match(rf"^(\s*)(?:- )?{re.escape(key)}:\s*(.*)$", line)
        if not m:
            continue
        indent, value = len(m.group(1)), m.group(2).strip()
        if value in ("|", "|-", ">", ">-", ""):
            block = []
            for nxt in lines[i + 1 :]:
                if nxt.strip() and len(nxt) - len(nxt.lstrip()) <= indent:
                    break
                block.append(nxt.strip())
            joiner = "\n" if value.startswith("|") else " "
            value = joiner.join(b for b in block if b)
        elif value[:1] in "'\"":
            value = value[1:-1]
        out.append(value)
    return out


def compose_services() -> dict[str, str]:
    """Service name -> the text of its block in docker-compose.yml."""
    text = COMPOSE.read_text()
    section = re.search(r"^services:\n(.*?)(?=^\S)", text, re.S | re.M)
    assert section, "no services: section"
    parts = re.split(r"^  ([a-z][\w-]*):\s*$", section.group(1), flags=re.M)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


def depends_on(block: str) -> dict[str, str]:
    m = re.search(r"^    depends_on:\n((?:      .*\n|\s*\n)+)", block, re.M)
    if not m:
        return {}
    pairs = re.findall(r"^      ([\w-]+):\n        condition: (\w+)", m.group(1), re.M)
    return dict(pairs)


def http_port() -> int:
    with (ROOT / "omnipulse" / "omnipulse.toml").open("rb") as f:
        return tomllib.load(f)["engine"]["http_port"]


# -- PromQL name extraction ----------------------------------------------------


def test_metric_name_extraction() -> None:
    expr = (
        "histogram_quantile(0.99, sum by (le, kind) (rate(omnipulse_trigger_latency_seconds_bucket"
        '{basis="ingest"}[5m]))) > 0.5 and on (kind) up{job="x"} == 1'
    )
    assert metric_names(expr) == {"omnipulse_trigger_latency_seconds_bucket", "up"}
    assert metric_names("sum(rate(made_up_total[$__rate_interval]))") == {"made_up_total"}


# -- compose -------------------------------------------------------------------


def test_compose_services_and_dependencies() -> None:
    services = compose_services()
    expected = {"kafka", "redis", "topics", "engine", "simulator", "prometheus", "grafana"}
    assert expected <= set(services)
    assert depends_on(services["topics"]) == {"kafka": "service_healthy"}
    assert depends_on(services["engine"]) == {
        "kafka": "service_healthy",
        "redis": "service_healthy",
        "topics": "service_completed_successfully",
    }
    assert depends_on(services["simulator"]).get("topics") == "service_completed_successfully"
    for name, dep in {"prometheus": "engine", "grafana": "prometheus"}.items():
        assert dep in depends_on(services[name])
    # Every depends_on target with service_healthy has a healthcheck.
    for block in services.values():
        for dep, cond in depends_on(block).items():
            assert dep in services
            if cond == "service_healthy":
                assert re.search(r"^    healthcheck:", services[dep], re.M), dep
    for name in ("kafka", "redis", "engine", "prometheus", "grafana"):
        assert re.search(r"^    healthcheck:", services[name], re.M), name


def test_compose_kafka_kraft_and_redis_persistence() -> None:
    services = compose_services()
    kafka = services["kafka"]
    assert re.search(r"image: apache/kafka:\d", kafka)
    assert "KAFKA_PROCESS_ROLES: broker,controller" in kafka
    assert "PLAINTEXT://kafka:9092" in kafka
    assert "--appendonly yes" in services["redis"]
    assert "redis-data:/data" in services["redis"]
    assert 'profiles: ["demo"]' in services["simulator"]
    assert '"simulate"' in services["simulator"]
    assert '["topics", "create"]' in services["topics"]


def test_compose_engine_environment_and_port() -> None:
    text = COMPOSE.read_text()
    for var in ("KAFKA_BOOTSTRAP_SERVERS", "REDIS_URL", "OMNIPULSE_CONFIG"):
        assert re.search(rf"^    {var}: ", text, re.M), var
    assert "KAFKA_BOOTSTRAP_SERVERS: kafka:9092" in text
    port = http_port()
    engine = compose_services()["engine"]
    assert f'"127.0.0.1:{port}:{port}"' in engine
    assert f"http://127.0.0.1:{port}/healthz" in engine
    assert re.search(rf"^EXPOSE {port}$", (ROOT / "Dockerfile").read_text(), re.M)


def test_compose_commits_no_secret() -> None:
    text = COMPOSE.read_text()
    assert re.search(r"GF_SECURITY_ADMIN_PASSWORD: \$\{GRAFANA_ADMIN_PASSWORD:\?", text)
    # No literal password anywhere: every password/secret value is interpolated.
    for line in text.splitlines():
        m = re.match(r"^\s*([\w.-]*(?:PASSWORD|SECRET|TOKEN)[\w.-]*):\s*(.+)$", line, re.I)
        if m:
            assert m.group(2).lstrip("\"'").startswith("${"), line
    # Host ports are bound to loopback only.
    for port in re.findall(r'^\s*- "([^"]+)"$', text, re.M):
        if re.fullmatch(r"[\d.]*:?\d+:\d+", port):
            assert port.startswith("127.0.0.1:"), port


def test_compose_mounts_exist() -> None:
    text = COMPOSE.read_text()
    mounts = re.findall(r"^\s*- \./([^:]+):", text, re.M)
    assert mounts
    for m in mounts:
        assert (ROOT / m).exists(), m


# -- Prometheus ----------------------------------------------------------------


def test_prometheus_scrapes_the_engine() -> None:
    text = PROM_CONFIG.read_text()
    assert f'"engine:{http_port()}"' in text
    assert yaml_values(text, "metrics_path") == ["/metrics"]
    assert "job_name: omnipulse" in text
    assert "- alerts.yml" in text


def test_alert_rules_are_complete_and_use_known_metrics() -> None:
    text = ALERTS.read_text()
    names = yaml_values(text, "alert")
    exprs = yaml_values(text, "expr")
    fors = yaml_values(text, "for")
    summaries = yaml_values(text, "summary")
    descriptions = yaml_values(text, "description")
    assert len(names) == len(set(names)) >= 7
    for lst in (exprs, fors, summaries, descriptions):
        assert len(lst) == len(names)
    for name, expr in zip(names, exprs, strict=True):
        used = metric_names(expr)
        assert used, name
        assert used <= ALLOWED, (name, used - ALLOWED)
    for f in fors:
        assert re.fullmatch(r"\d+[smh]", f), f
    assert all(len(d) > 40 for d in descriptions)
    joined = "\n".join(exprs)
    for needle in (
        'up{job="omnipulse"} == 0',
        "omnipulse_consumer_lag",
        'omnipulse_trigger_latency_seconds_bucket{basis="ingest"}',
        "> 0.5",
        "omnipulse_events_rejected_total",
        "omnipulse_watermark_lag_seconds",
        "omnipulse_timer_lateness_seconds_bucket",
    ):
        assert needle in joined, needle


# -- Grafana -------------------------------------------------------------------


def dashboard_exprs(dash: dict) -> list[tuple[str, str]]:
    out = []
    for panel in dash["panels"]:
        for target in panel.get("targets", []):
            out.append((panel["title"], target["expr"]))
    return out


def test_dashboard_uses_known_metrics_and_covers_the_panels() -> None:
    dash = json.loads(DASHBOARD.read_text())
    assert dash["uid"] == "omnipulse"
    exprs = dashboard_exprs(dash)
    assert exprs
    for title, expr in exprs:
        used = metric_names(expr)
        assert used and used <= ALLOWED, (title, used - ALLOWED)
    used_all = set().union(*(metric_names(e) for _, e in exprs))
    # Every metric the engine exports appears on the dashboard.
    for m in COUNTERS | GAUGES:
        assert m in used_all, m
    for h in HISTOGRAMS:
        assert used_all & {f"{h}_bucket", f"{h}_sum"}, h
    text = " ".join(e for _, e in exprs)
    for q in ("0.5", "0.95", "0.99"):
        assert f"histogram_quantile({q}, sum by (le) (rate(omnipulse_trigger_latency" in text
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dash["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "prometheus", panel["title"]


def test_grafana_provisioning_matches_compose() -> None:
    ds = DATASOURCE.read_text()
    assert yaml_values(ds, "uid") == ["prometheus"]
    assert yaml_values(ds, "url") == ["http://prometheus:9090"]
    assert yaml_values(DASH_PROVIDER.read_text(), "path") == ["/var/lib/grafana/dashboards"]
    compose = COMPOSE.read_text()
    assert "./deploy/grafana/dashboards:/var/lib/grafana/dashboards:ro" in compose
    assert "./deploy/grafana/provisioning:/etc/grafana/provisioning:ro" in compose


# -- the real tools, when installed ---------------------------------------------


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed")
def test_promtool_accepts_config_and_rules() -> None:
    for args in (
        ["check", "config", PROM_CONFIG.name],
        ["check", "rules", ALERTS.name],
        ["test", "rules", ALERT_TESTS.name],
    ):
        r = subprocess.run(
            ["promtool", *args], cwd=PROM_CONFIG.parent, capture_output=True, text=True
        )
        assert r.returncode == 0, r.stdout + r.stderr


def _compose_v2() -> list[str] | None:
    for cmd in (["docker", "compose"], ["docker-compose"]):
        if shutil.which(cmd[0]) is None:
            continue
        r = subprocess.run([*cmd, "version"], capture_output=True, text=True)
        if r.returncode == 0 and re.search(r"v2\.\d+", r.stdout):
            return cmd
    return None


@pytest.mark.skipif(_compose_v2() is None, reason="docker compose v2 not installed")
def test_docker_compose_config() -> None:
    cmd = _compose_v2()
    assert cmd
    env = {**os.environ, "GRAFANA_ADMIN_PASSWORD": "x"}
    r = subprocess.run(
        [*cmd, "-f", str(COMPOSE), "--profile", "demo", "config", "--services"],
        capture_output=True, text=True, env=env, cwd=ROOT,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert set(r.stdout.split()) == set(compose_services())
