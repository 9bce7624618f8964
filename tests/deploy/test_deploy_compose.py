"""docker-compose.yml: the demo stack is valid, complete, starts in order and holds no secret."""

from __future__ import annotations

import re
import subprocess

import pytest
from deployspec import (
    COMPOSE_FILE,
    ENV_EXAMPLE,
    PROMETHEUS_FILE,
    ROOT,
    TOPICS_COMMAND,
    code_services,
    compose_config,
    compose_partitions,
    compose_switchboard_services,
    load_yaml,
    tool,
)


def bind_mounts(svc: dict) -> dict[str, str]:
    """target -> source of a compose service's bind mounts (short or long syntax)."""
    out = {}
    for v in svc.get("volumes", []):
        if isinstance(v, str):
            source, target = v.split(":")[:2]
            if source.startswith(("/", ".")):
                out[target] = source
        elif v.get("type") == "bind":
            out[v["target"]] = v["source"]
    return out


def compose(*args: str, env_file: str = str(ENV_EXAMPLE)) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [tool("docker-compose"), "--project-directory", str(ROOT), "-f", str(COMPOSE_FILE),
         "--env-file", env_file, *args],
        capture_output=True, text=True, timeout=60,
    )


def test_docker_compose_config_accepts_the_file_with_the_example_env() -> None:
    proc = compose("config", "-q")
    assert proc.returncode == 0, proc.stderr


def test_compose_refuses_to_start_without_the_secrets(tmp_path) -> None:
    empty = tmp_path / "empty.env"
    empty.write_text("")
    proc = compose("config", "-q", env_file=str(empty))
    assert proc.returncode != 0
    assert "CLICKHOUSE_PASSWORD" in proc.stderr


def test_kafka_is_apache_kafka_in_kraft_mode() -> None:
    services = compose_config()["services"]
    assert not [n for n, s in services.items() if "zookeeper" in s.get("image", "")], "KRaft needs no ZooKeeper"
    kafka = services["kafka"]
    assert kafka["image"].startswith("apache/kafka:"), "the official Apache Kafka image"
    roles = set(kafka["environment"]["KAFKA_PROCESS_ROLES"].split(","))
    assert roles == {"broker", "controller"}
    assert kafka["environment"]["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false", "topics come from the catalog only"
    assert "healthcheck" in kafka


def test_clickhouse_server_is_in_the_stack_and_the_sinks_use_it() -> None:
    services = compose_config()["services"]
    assert services["clickhouse"]["image"].startswith("clickhouse/clickhouse-server:")
    dsn_users = [n for n, s in compose_switchboard_services().items()
                 if "SWITCHBOARD_CLICKHOUSE_DSN" in (s.get("environment") or {})]
    assert dsn_users, "some service writes to ClickHouse"
    for name in dsn_users:
        env = compose_switchboard_services()[name]["environment"]
        assert env["SWITCHBOARD_CLICKHOUSE_DSN"].startswith("http://"), "the ClickHouse server, not embedded chDB"
        assert "@clickhouse:8123" in env["SWITCHBOARD_CLICKHOUSE_DSN"]
        assert compose_config()["services"][name]["depends_on"]["clickhouse"]["condition"] == "service_healthy"


@pytest.mark.parametrize("svc", code_services(), ids=lambda s: s.name)
def test_every_service_of_the_code_runs_in_compose(svc) -> None:
    running = {tuple(s["command"]) for s in compose_switchboard_services().values()}
    assert ("switchboard", svc.name) in running, f"no compose service runs `switchboard {svc.name}`"


def test_every_switchboard_compose_service_is_a_service_of_the_code_or_topic_creation() -> None:
    known = {("switchboard", s.name) for s in code_services()} | {TOPICS_COMMAND}
    for name, svc in compose_switchboard_services().items():
        assert tuple(svc["command"]) in known, f"compose service {name} runs an unknown command {svc['command']}"


def test_the_ingress_listens_on_8080() -> None:
    ingress = next(s for s in compose_switchboard_services().values() if s["command"] == ["switchboard", "ingress"])
    published = {(int(p["published"]), int(p["target"])) for p in ingress["ports"]}
    assert (8080, 8080) in published
    assert ingress["environment"]["SWITCHBOARD_HOST"] == "0.0.0.0", "reachable from outside its container"


def test_processors_that_scale_by_partition_have_replicas_within_the_partition_count() -> None:
    replicas = {}
    for svc in code_services():
        if not svc.scales_by_partition:
            continue
        compose_svc = next(s for s in compose_switchboard_services().values()
                           if s["command"] == ["switchboard", svc.name])
        n = compose_svc.get("deploy", {}).get("replicas")
        assert n is not None, f"{svc.name} scales by partition: set deploy.replicas"
        partitions = compose_partitions()
        assert 1 <= n <= partitions, f"{svc.name}: {n} replicas, but a group has {partitions} partitions"
        replicas[svc.name] = n
    assert max(replicas.values()) > 1, "the demo shows scaling by partition on at least one processor"


def test_topics_are_created_once_before_any_service_starts() -> None:
    services = compose_config()["services"]
    creators = [n for n, s in services.items() if tuple(s.get("command") or ()) == TOPICS_COMMAND]
    assert len(creators) == 1
    topics = services[creators[0]]
    assert topics["depends_on"]["kafka"]["condition"] == "service_healthy"
    assert topics.get("restart") == "no", "a one-shot job"
    for name, svc in compose_switchboard_services().items():
        if name == creators[0]:
            continue
        deps = svc.get("depends_on", {})
        assert deps.get(creators[0], {}).get("condition") == "service_completed_successfully", name
        assert deps.get("kafka", {}).get("condition") == "service_healthy", name


def test_health_conditions_only_wait_for_services_that_have_a_health_check() -> None:
    services = compose_config()["services"]
    dockerfile_has_healthcheck = "HEALTHCHECK" in (ROOT / "Dockerfile").read_text()
    for name, svc in services.items():
        for dep, cond in (svc.get("depends_on") or {}).items():
            if cond.get("condition") != "service_healthy":
                continue
            target = services[dep]
            has_check = "healthcheck" in target or ("build" in target and dockerfile_has_healthcheck)
            assert has_check, f"{name} waits for {dep} to be healthy, but {dep} has no health check"


def test_processor_metrics_are_served_on_all_interfaces_for_prometheus() -> None:
    for name, svc in compose_switchboard_services().items():
        if svc["command"] in (["switchboard", "ingress"], list(TOPICS_COMMAND)):
            continue
        env = svc["environment"]
        assert int(env["SWITCHBOARD_METRICS_PORT"]) > 0, f"{name} exposes /metrics"
        assert env.get("SWITCHBOARD_METRICS_HOST") == "0.0.0.0", f"{name}: Prometheus scrapes from another container"


def test_prometheus_scrapes_every_long_running_switchboard_service_on_its_metrics_port() -> None:
    scraped: dict[str, set[int]] = {}
    for job in load_yaml(PROMETHEUS_FILE)["scrape_configs"]:
        for sd in job.get("dns_sd_configs", []):
            for host in sd["names"]:
                scraped.setdefault(host, set()).add(int(sd["port"]))
        for sc in job.get("static_configs", []):
            for target in sc["targets"]:
                host, _, port = target.partition(":")
                scraped.setdefault(host, set()).add(int(port))
    for name, svc in compose_switchboard_services().items():
        if tuple(svc["command"]) == TOPICS_COMMAND:
            continue
        env = svc["environment"]
        port = int(env.get("SWITCHBOARD_METRICS_PORT") or 0) or int(env.get("SWITCHBOARD_PORT") or 8080)
        assert port in scraped.get(name, set()), f"Prometheus does not scrape {name}:{port}"
    assert "kafka-exporter" in scraped, "consumer lag comes from the Kafka exporter"
    assert "kafka-exporter" in compose_config()["services"]


def test_grafana_is_provisioned_with_prometheus_clickhouse_and_the_dashboards() -> None:
    grafana = compose_config()["services"]["grafana"]
    mounts = bind_mounts(grafana)
    assert mounts["/etc/grafana/provisioning"].endswith("deploy/grafana/provisioning")
    provider = load_yaml(ROOT / "deploy/grafana/provisioning/dashboards/dashboards.yml")["providers"][0]
    dash_mount = provider["options"]["path"]
    assert mounts[dash_mount].endswith("deploy/grafana/dashboards")
    assert "grafana-clickhouse-datasource" in grafana["environment"]["GF_INSTALL_PLUGINS"]
    assert grafana["depends_on"]["prometheus"]["condition"] == "service_healthy"


def test_prometheus_loads_the_alert_rules() -> None:
    prom = compose_config()["services"]["prometheus"]
    mounts = bind_mounts(prom)
    rule_files = load_yaml(PROMETHEUS_FILE)["rule_files"]
    assert rule_files, "alert rules are loaded"
    for rf in rule_files:
        assert mounts[rf].endswith("deploy/prometheus/alerts.yml")


SECRETISH = re.compile(r"PASSWORD|SECRET|TOKEN|API_KEY|SALT|CREDENTIAL", re.I)


def raw_environment() -> dict[str, dict[str, str]]:
    """Environment blocks as written in docker-compose.yml (before interpolation), anchors resolved."""
    raw = load_yaml(COMPOSE_FILE)
    return {n: (s.get("environment") or {}) for n, s in raw["services"].items()}


def test_no_secret_is_written_in_the_compose_file() -> None:
    for name, env in raw_environment().items():
        for key, value in env.items():
            value = str(value)
            if SECRETISH.search(key):
                assert re.fullmatch(r"\$\{[A-Z0-9_]+(:?[-?][^}]*)?\}", value), (
                    f"{name}: {key} must come from .env (${{VAR}}), not be written in the file"
                )
            for m in re.finditer(r"://([^:/@\s]+):([^@\s]+)@", value):
                assert m.group(2).startswith("${"), f"{name}: {key} embeds a literal password in a URL"


def test_env_example_lists_exactly_the_variables_compose_interpolates() -> None:
    used = set(re.findall(r"\$\{([A-Z0-9_]+)", COMPOSE_FILE.read_text()))
    listed = {line.split("=", 1)[0] for line in ENV_EXAMPLE.read_text().splitlines()
              if line.strip() and not line.lstrip().startswith("#")}
    assert used == listed, f"only in compose: {sorted(used - listed)}; only in .env.example: {sorted(listed - used)}"


def test_secret_variables_have_no_default_in_compose() -> None:
    text = COMPOSE_FILE.read_text()
    for var in re.findall(r"\$\{([A-Z0-9_]+)", text):
        if SECRETISH.search(var):
            for m in re.finditer(r"\$\{" + var + r"(:?[-?])?", text):
                assert m.group(1) in (":?", "?"), f"${{{var}}} must be required (:?), never defaulted"
