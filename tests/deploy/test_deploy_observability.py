"""Alert rules and the Grafana dashboard: valid, and every metric they query is one the code
exports (or the Kafka Exporter, which the stacks deploy)."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
from deployspec import (
    ALERTS_FILE,
    DATASOURCES_FILE,
    EXPORTER_METRICS,
    PROMETHEUS_FILE,
    dashboards,
    exported_metrics,
    kinds,
    load_yaml,
    promql_metrics,
    tool,
)


def alert_rules() -> list[dict]:
    return [r for g in load_yaml(ALERTS_FILE)["groups"] for r in g["rules"]]


def dashboard_queries() -> list[tuple[str, str]]:
    out = []
    for path, dash in dashboards():
        panels = list(dash["panels"])
        while panels:
            p = panels.pop()
            panels += p.get("panels", [])  # rows
            for t in p.get("targets", []):
                if "expr" in t:
                    out.append((f"{path.name}: {p['title']}", t["expr"]))
    return out


def test_promql_metric_extraction_finds_metrics_and_ignores_the_rest() -> None:
    expr = ('histogram_quantile(0.95, sum by (le, stage) (rate(switchboard_stage_seconds_bucket{stage="stt"}[5m])))'
            ' > 0.5 and on(instance) up offset 1h unless sum without (pod) (kafka_consumergroup_lag) * 60')
    assert promql_metrics(expr) == {"switchboard_stage_seconds_bucket", "up", "kafka_consumergroup_lag"}
    assert promql_metrics("sum(rate(x_total[$__rate_interval])) * 60") == {"x_total"}


def test_promtool_accepts_the_alert_rules() -> None:
    proc = subprocess.run([tool("promtool"), "check", "rules", str(ALERTS_FILE)], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_promtool_accepts_the_prometheus_config(tmp_path) -> None:
    config = load_yaml(PROMETHEUS_FILE)
    shutil.copy(ALERTS_FILE, tmp_path / "alerts.yml")
    config["rule_files"] = [str(tmp_path / "alerts.yml")]
    import yaml

    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    proc = subprocess.run([tool("promtool"), "check", "config", str(tmp_path / "prometheus.yml")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


SEEDS = {
    # alert seed of the issue -> (metric the rule must use, threshold)
    "stt": ('switchboard_stage_seconds_bucket{stage="stt"}', 0.5),
    "tts": ('switchboard_stage_seconds_bucket{stage="tts"}', 1.0),
    "agent": ('switchboard_stage_seconds_bucket{stage="agent"}', 2.5),
    "first voice p95": ("switchboard_response_latency_seconds_bucket", 5.0),
}


@pytest.mark.parametrize("seed", SEEDS)
def test_latency_alert_seeds_are_p95_over_their_threshold(seed) -> None:
    selector, threshold = SEEDS[seed]
    matching = [r for r in alert_rules() if selector in r["expr"]]
    assert len(matching) == 1, f"one alert on {selector}"
    expr = matching[0]["expr"]
    assert "histogram_quantile(0.95" in expr
    assert float(re.search(r">\s*([\d.]+)\s*$", expr.strip()).group(1)) == threshold


@pytest.mark.parametrize("metric", ["switchboard_dead_letters_total", "kafka_consumergroup_lag",
                                    "switchboard_engine_errors_total", "switchboard_active_calls"])
def test_the_other_seeds_have_an_alert(metric) -> None:
    assert any(metric in promql_metrics(r["expr"]) for r in alert_rules())


def test_every_alert_has_a_severity_and_a_summary() -> None:
    for rule in alert_rules():
        assert rule["labels"]["severity"] in {"warning", "critical"}, rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]


def test_every_metric_in_the_alert_rules_is_exported() -> None:
    missing = {(r["alert"], m) for r in alert_rules() for m in promql_metrics(r["expr"])
               if m not in exported_metrics() | EXPORTER_METRICS}
    assert not missing, f"alerts query metrics nothing exports: {sorted(missing)}"


def test_the_dashboard_parses_and_covers_the_issue_panels() -> None:
    ((_, dash),) = dashboards()
    assert dash["uid"] and dash["title"]
    used = {m for _, q in dashboard_queries() for m in promql_metrics(q)}
    for wanted in ("switchboard_active_calls", "switchboard_stage_seconds_bucket", "switchboard_barge_ins_total",
                   "kafka_consumergroup_lag", "switchboard_engine_errors_total", "switchboard_dead_letters_total",
                   "switchboard_response_latency_seconds_bucket"):
        assert wanted in used, f"the dashboard shows {wanted}"
    assert any("fallbacks" in m for m in used), "the dashboard shows fallbacks"
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids)), "panel ids are unique"


def test_every_dashboard_query_names_an_exported_metric() -> None:
    queries = dashboard_queries()
    assert queries
    for where, q in queries:
        names = promql_metrics(q)
        assert names, f"{where}: no metric in {q!r}"
        missing = names - exported_metrics() - EXPORTER_METRICS
        assert not missing, f"{where}: {sorted(missing)} are not exported by the code"


def test_dashboard_panels_use_the_provisioned_data_sources() -> None:
    uids = {d["uid"]: d["type"] for d in load_yaml(DATASOURCES_FILE)["datasources"]}
    assert set(uids.values()) >= {"prometheus", "grafana-clickhouse-datasource"}
    for _, dash in dashboards():
        for p in dash["panels"]:
            assert p["datasource"]["uid"] in uids, p["title"]


def test_the_kafka_exporter_runs_wherever_lag_is_queried() -> None:
    (kafka,) = kinds("Kafka")
    assert re.match(kafka["spec"]["kafkaExporter"]["groupRegex"], "switchboard-stt")
