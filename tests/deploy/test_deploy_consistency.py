"""The deployment files agree with the code: topics, services, settings, consumer groups, the
ingress's partition ownership and drain, autoscaling bounds."""

from __future__ import annotations

import re
from typing import Any

import pytest
from deployspec import (
    ALERTS_FILE,
    DOCS_FILE,
    NON_APP_ENV,
    by_kind_name,
    code_services,
    compose_switchboard_services,
    containers,
    deployed_partitions,
    env_value,
    group_settings,
    is_switchboard,
    kinds,
    load_yaml,
    manifests,
    module_inputs,
    partition_problems,
    partitions_default,
    processor_classes,
    service,
    settings_env_names,
    settings_for_command,
    workload_for,
    workloads,
)

from switchboard.topics import AUDIO_OUT, CATALOG, DEADLETTER, PLAYBACK, Topic

# ------------------------------------------------------------------ topics


def kafka_topics() -> dict[str, dict[str, Any]]:
    return {t["spec"].get("topicName", t["metadata"]["name"]): t for t in kinds("KafkaTopic")}


def test_every_catalog_topic_has_a_kafka_topic_and_no_other_exists() -> None:
    assert set(kafka_topics()) == {t.name for t in CATALOG}


@pytest.mark.parametrize("topic", CATALOG, ids=lambda t: t.name)
def test_kafka_topic_has_the_catalog_partitions_and_retention(topic: Topic) -> None:
    spec = kafka_topics()[topic.name]["spec"]
    assert spec["partitions"] == deployed_partitions() == topic.partitions
    config = {k: str(v) for k, v in spec.get("config", {}).items()}
    for key, value in topic.configs.items():
        assert config.get(key) == value, f"{topic.name}: {key} is {config.get(key)!r}, the catalog says {value!r}"
    if topic.compacted:
        assert "retention.ms" not in config, f"{topic.name} is compacted: no time retention"


def test_topics_services_and_autoscalers_agree_on_the_partition_count() -> None:
    docs = [doc for _, doc in manifests()]
    assert partition_problems(docs, partitions_default()) == []


def test_a_partition_count_mismatch_in_the_manifests_is_caught() -> None:
    import copy

    docs = copy.deepcopy([doc for _, doc in manifests()])
    next(d for d in docs if d["kind"] == "KafkaTopic")["spec"]["partitions"] = 8
    next(d for d in docs if d["kind"] == "HorizontalPodAutoscaler")["spec"]["maxReplicas"] = 64
    container = next(c for d in docs if d["kind"] == "Deployment" for c in containers(d) if is_switchboard(c))
    container["env"] = [e for e in container.get("env", []) if e["name"] != "SWITCHBOARD_PARTITIONS"]
    container["env"].append({"name": "SWITCHBOARD_PARTITIONS", "value": "16"})
    problems = " ".join(partition_problems(docs, partitions_default()))
    assert "KafkaTopic" in problems and "maxReplicas 64" in problems and "different partition counts" in problems


def test_topic_replication_fits_the_brokers() -> None:
    brokers = sum(p["spec"]["replicas"] for p in kinds("KafkaNodePool") if "broker" in p["spec"]["roles"])
    for name, t in kafka_topics().items():
        replicas = t["spec"]["replicas"]
        assert replicas <= brokers, f"{name}: {replicas} replicas on {brokers} brokers"
        min_isr = int(t["spec"].get("config", {}).get("min.insync.replicas", 1))
        assert min_isr < replicas, f"{name}: min.insync.replicas {min_isr} leaves no broker to lose"


def test_kafka_cluster_is_kraft_with_controllers_and_brokers() -> None:
    roles = {r for p in kinds("KafkaNodePool") for r in p["spec"]["roles"]}
    assert roles == {"controller", "broker"}
    controllers = sum(p["spec"]["replicas"] for p in kinds("KafkaNodePool") if "controller" in p["spec"]["roles"])
    assert controllers % 2 == 1, "a KRaft quorum needs an odd number of controllers"
    (kafka,) = kinds("Kafka")
    for pool in kinds("KafkaNodePool"):
        assert pool["metadata"]["labels"]["strimzi.io/cluster"] == kafka["metadata"]["name"]
    for obj in kinds("KafkaTopic", "KafkaUser"):
        assert obj["metadata"]["labels"]["strimzi.io/cluster"] == kafka["metadata"]["name"]
    assert kafka["spec"]["kafka"]["config"]["auto.create.topics.enable"] is False
    assert "kafkaExporter" in kafka["spec"], "consumer lag for the autoscalers and the lag alert"


# ---------------------------------------------------------------- services


@pytest.mark.parametrize("svc", code_services(), ids=lambda s: s.name)
def test_every_service_of_the_code_has_a_workload(svc) -> None:
    w = workload_for(svc.name)
    expected = "Deployment" if svc.scales_by_partition else "StatefulSet"
    assert w["kind"] == expected, f"{svc.name} runs as a {w['kind']}"


def test_every_workload_running_switchboard_is_a_service_of_the_code() -> None:
    known = {s.name for s in code_services()}
    for w in workloads():
        for c in containers(w):
            if (c.get("command") or [""])[0] == "switchboard":
                assert len(c["command"]) == 2 and c["command"][1] in known, f"{w['metadata']['name']}: {c['command']}"


def k8s_env_sets() -> list[tuple[str, list[str], list[dict[str, Any]]]]:
    return [(w["metadata"]["name"], c["command"], c) for w in workloads() for c in containers(w)
            if (c.get("command") or [""])[0] == "switchboard"]


def compose_env_sets() -> list[tuple[str, list[str], dict[str, str]]]:
    return [(name, s["command"], s.get("environment") or {}) for name, s in compose_switchboard_services().items()]


def test_every_environment_variable_in_compose_is_a_setting_the_code_reads() -> None:
    unknown = []
    for name, command, env in compose_env_sets():
        allowed = settings_env_names(settings_for_command(command)) | NON_APP_ENV
        unknown += [f"compose {name}: {k}" for k in env if k not in allowed]
    assert not unknown, "not read by the service's settings class:\n" + "\n".join(unknown)


def test_every_environment_variable_in_the_manifests_is_a_setting_the_code_reads() -> None:
    unknown = []
    for name, command, container in k8s_env_sets():
        assert "envFrom" not in container, f"{name}: list variables explicitly so they can be checked"
        allowed = settings_env_names(settings_for_command(command)) | NON_APP_ENV
        unknown += [f"{name}: {e['name']}" for e in container.get("env", []) if e["name"] not in allowed]
    assert not unknown, "not read by the service's settings class:\n" + "\n".join(unknown)


def placeholder(value_from: dict[str, Any]) -> str:
    """A stand-in for a value Kubernetes fills in at run time (pod ordinal, pod name, a secret)."""
    if "pod-index" in str(value_from):
        return "0"
    return "placeholder"


def test_the_settings_classes_accept_the_values_compose_and_the_manifests_set() -> None:
    sets = [(f"compose {n}", c, dict(env)) for n, c, env in compose_env_sets()]
    sets += [(n, c, {e["name"]: e.get("value", placeholder(e.get("valueFrom", {}))) for e in cont.get("env", [])})
             for n, c, cont in k8s_env_sets()]
    for where, command, env in sets:
        cls = settings_for_command(command)
        prefix = cls.model_config.get("env_prefix", "")
        fields = {k[len(prefix):].lower(): v for k, v in env.items() if k.startswith(prefix)}
        fields = {k: v for k, v in fields.items() if k in cls.model_fields}
        try:
            cls(**fields)
        except Exception as exc:  # pydantic.ValidationError, with the field that failed
            raise AssertionError(f"{where}: {cls.__name__} rejects its environment: {exc}") from exc


# ---------------------------------------------------- Kafka users and ACLs


def acls(user: dict[str, Any]) -> list[tuple[str, str, str]]:
    out = []
    for a in user["spec"]["authorization"]["acls"]:
        if a.get("type", "allow") != "allow":
            continue
        for op in a["operations"]:
            out.append((a["resource"]["type"], a["resource"]["name"], op))
    return out


def kafka_user_of(svc_name: str) -> dict[str, Any]:
    container = containers(workload_for(svc_name))[0]
    username = env_value(container, "SWITCHBOARD_KAFKA_SASL_USERNAME")
    assert username, f"{svc_name} authenticates to Kafka"
    return by_kind_name("KafkaUser", username)


@pytest.mark.parametrize("svc", code_services(), ids=lambda s: s.name)
def test_every_service_has_a_kafka_user_whose_secret_it_reads(svc) -> None:
    user = kafka_user_of(svc.name)
    container = containers(workload_for(svc.name))[0]
    password = env_value(container, "SWITCHBOARD_KAFKA_SASL_PASSWORD")
    assert password == {"secretKeyRef": {"name": user["metadata"]["name"], "key": "password"}}
    assert user["spec"]["authentication"]["type"] == "scram-sha-512"
    listener_auth = {lst["authentication"]["type"] for lst in kinds("Kafka")[0]["spec"]["kafka"]["listeners"]}
    assert listener_auth == {"scram-sha-512"}, "every listener authenticates, so the ACLs apply"


@pytest.mark.parametrize("svc", code_services(), ids=lambda s: s.name)
def test_kafka_user_acls_let_the_service_consume_its_inputs_and_dead_letter(svc) -> None:
    granted = set(acls(kafka_user_of(svc.name)))
    catalog = {t.name for t in CATALOG}
    for kind, name, _ in granted:
        if kind == "topic":
            assert name in catalog, f"ACL on {name!r}, which is not in the topic catalog"
    assert ("topic", DEADLETTER.name, "Write") in granted, "every service may dead-letter a poison record"
    for proc in processor_classes(svc.package):
        for topic in proc.inputs:
            assert ("topic", topic.name, "Read") in granted, f"{svc.name} consumes {topic.name}"
        assert ("group", f"switchboard-{proc.name}", "Read") in granted, "its consumer group (switchboard/runner.py)"
    for name in module_inputs(svc.package):
        assert ("topic", name, "Read") in granted, f"{svc.name} consumes {name}"
    for group in group_settings(svc.settings):
        assert ("group", group, "Read") in granted, f"{svc.name}'s consumer group from its settings"


def test_the_ingress_user_reads_its_egress_partitions() -> None:
    granted = set(acls(kafka_user_of("ingress")))
    assert {("topic", AUDIO_OUT.name, "Read"), ("topic", PLAYBACK.name, "Read")} <= granted


def test_no_service_may_create_or_delete_topics() -> None:
    for user in kinds("KafkaUser"):
        for kind, _, op in acls(user):
            assert op not in {"Create", "Delete", "All", "Alter"}, f"{user['metadata']['name']}: {kind} {op}"


# ----------------------------------------------------------------- ingress


def ingress_container() -> dict[str, Any]:
    return containers(workload_for("ingress"))[0]


def int_env(container: dict[str, Any], name: str, settings_cls: type) -> int | float:
    raw = env_value(container, name)
    field = name.removeprefix("SWITCHBOARD_").lower()
    default = settings_cls.model_fields[field].default
    return type(default)(raw) if raw is not None else default


def test_the_ingress_node_index_is_the_pod_ordinal() -> None:
    sts = workload_for("ingress")
    assert sts["kind"] == "StatefulSet"
    index = env_value(ingress_container(), "SWITCHBOARD_INGRESS_NODE_INDEX")
    assert index == {"fieldRef": {"fieldPath": "metadata.labels['apps.kubernetes.io/pod-index']"}}


def test_every_ingress_node_owns_a_reply_partition_at_any_scale() -> None:
    settings = service("ingress").settings
    count = int_env(ingress_container(), "SWITCHBOARD_INGRESS_NODE_COUNT", settings)
    hpa = by_kind_name("HorizontalPodAutoscaler", workload_for("ingress")["metadata"]["name"])
    assert hpa["spec"]["scaleTargetRef"]["kind"] == "StatefulSet"
    assert hpa["spec"]["maxReplicas"] == count, "node count is fixed at the most nodes that can run"
    assert workload_for("ingress")["spec"]["replicas"] <= count
    for index in range(count):  # the ingress's rule: p % count == index
        assert [p for p in range(deployed_partitions()) if p % count == index], f"node {index} owns no partition"


def test_the_ingress_pods_outlive_their_drain() -> None:
    settings = service("ingress").settings
    drain_s = int_env(ingress_container(), "SWITCHBOARD_DRAIN_TIMEOUT_S", settings)
    pod = workload_for("ingress")["spec"]["template"]["spec"]
    pre_stop = ingress_container().get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
    grace = pod["terminationGracePeriodSeconds"]
    assert grace >= pre_stop + drain_s + 5, f"grace {grace}s < preStop {pre_stop}s + drain {drain_s}s + 5s"
    compose_ingress = next(s for s in compose_switchboard_services().values()
                           if s["command"] == ["switchboard", "ingress"])
    compose_drain = float(compose_ingress["environment"].get("SWITCHBOARD_DRAIN_TIMEOUT_S",
                                                             settings.model_fields["drain_timeout_s"].default))
    stop_grace = compose_ingress["stop_grace_period"]
    assert stop_grace.endswith("s") and float(stop_grace[:-1]) > compose_drain


def test_the_ingress_probes_use_health_and_ready() -> None:
    c = ingress_container()
    assert c["livenessProbe"]["httpGet"]["path"] == "/health"
    assert c["readinessProbe"]["httpGet"]["path"] == "/ready"
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports[c["readinessProbe"]["httpGet"]["port"]] == int_env(c, "SWITCHBOARD_PORT", service("ingress").settings)
    assert env_value(c, "SWITCHBOARD_HOST") == "0.0.0.0"


def test_the_ingress_service_keeps_a_client_on_one_node() -> None:
    svc = by_kind_name("Service", "ingress")
    assert svc["spec"]["sessionAffinity"] == "ClientIP"
    assert svc["spec"]["sessionAffinityConfig"]["clientIP"]["timeoutSeconds"] >= 3600, "as long as a call"
    (ing,) = kinds("Ingress")
    assert ing["metadata"]["annotations"]["nginx.ingress.kubernetes.io/affinity"] == "cookie"
    assert int(ing["metadata"]["annotations"]["nginx.ingress.kubernetes.io/proxy-read-timeout"]) >= 3600


def test_ingress_scales_on_active_calls_below_its_admission_limit() -> None:
    settings = service("ingress").settings
    max_calls = int_env(ingress_container(), "SWITCHBOARD_MAX_CALLS", settings)
    hpa = by_kind_name("HorizontalPodAutoscaler", workload_for("ingress")["metadata"]["name"])
    (metric,) = hpa["spec"]["metrics"]
    assert metric["pods"]["metric"]["name"] == "switchboard_active_calls"
    assert 0 < float(metric["pods"]["target"]["averageValue"]) < max_calls


def test_the_admission_alert_matches_the_configured_limit() -> None:
    settings = service("ingress").settings
    limits = {int_env(ingress_container(), "SWITCHBOARD_MAX_CALLS", settings)}
    for _, command, env in compose_env_sets():
        if command == ["switchboard", "ingress"]:
            limits.add(int(env.get("SWITCHBOARD_MAX_CALLS", settings.model_fields["max_calls"].default)))
    assert len(limits) == 1, f"compose and Kubernetes disagree on the admission limit: {limits}"
    rules = [r for g in load_yaml(ALERTS_FILE)["groups"] for r in g["rules"]]
    (rule,) = [r for r in rules if "switchboard_active_calls" in r["expr"]]
    threshold = float(re.search(r">\s*([\d.]+)\s*$", rule["expr"].strip()).group(1))
    assert threshold == pytest.approx(0.8 * limits.pop()), "alert at 80 % of SWITCHBOARD_MAX_CALLS"


# -------------------------------------------------------------- processors


@pytest.mark.parametrize("svc", [s for s in code_services() if s.scales_by_partition], ids=lambda s: s.name)
def test_processor_autoscales_on_its_consumer_group_lag_within_the_partitions(svc) -> None:
    deployment = workload_for(svc.name)
    hpa = by_kind_name("HorizontalPodAutoscaler", deployment["metadata"]["name"])
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                             "name": deployment["metadata"]["name"]}
    (metric,) = hpa["spec"]["metrics"]
    assert metric["type"] == "External"
    assert metric["external"]["metric"]["name"] == "kafka_consumergroup_lag"
    group = metric["external"]["metric"]["selector"]["matchLabels"]["consumergroup"]
    procs = processor_classes(svc.package)
    expected_groups = {f"switchboard-{p.name}" for p in procs}
    expected_groups |= group_settings(svc.settings)
    if not expected_groups:
        expected_groups = {f"switchboard-{svc.name}"}
    assert group in expected_groups
    assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"] <= deployed_partitions()
    pdb = by_kind_name("PodDisruptionBudget", deployment["metadata"]["name"])
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()


def test_autoscaler_metrics_are_served_by_the_adapter_config() -> None:
    (cm,) = [c for c in kinds("ConfigMap") if c["metadata"]["name"].startswith("prometheus-adapter")]
    import yaml

    cfg = yaml.safe_load(cm["data"]["config.yaml"])
    pods = {r["name"]["as"] for r in cfg.get("rules", [])}
    external = {r["name"]["as"] for r in cfg.get("externalRules", [])}
    for hpa in kinds("HorizontalPodAutoscaler"):
        for m in hpa["spec"]["metrics"]:
            if m["type"] == "Pods":
                assert m["pods"]["metric"]["name"] in pods
            elif m["type"] == "External":
                assert m["external"]["metric"]["name"] in external


# ---------------------------------------------------------------- resources


def quantity(q: str) -> float:
    units = {"m": 1e-3, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30}
    for suffix, factor in units.items():
        if q.endswith(suffix):
            return float(q[: -len(suffix)]) * factor
    return float(q)


def test_every_switchboard_container_requests_cpu_and_memory_within_its_limit() -> None:
    for w in workloads():
        for c in containers(w):
            res = c.get("resources", {})
            requests, limits = res.get("requests", {}), res.get("limits", {})
            assert {"cpu", "memory"} <= requests.keys(), f"{w['metadata']['name']}: requests"
            assert "memory" in limits, f"{w['metadata']['name']}: a memory limit"
            assert quantity(requests["memory"]) <= quantity(limits["memory"])


def test_the_resource_requests_are_the_documented_ones() -> None:
    """docs/deployment.md carries a table `| service | cpu request | memory request | memory limit | ...`."""
    text = DOCS_FILE.read_text()
    rows = {}
    for line in text.splitlines():
        cells = [c.strip().strip("`") for c in line.strip().strip("|").split("|")]
        if len(cells) >= 4:
            rows[cells[0]] = cells[1:4]
    for svc in code_services():
        res = containers(workload_for(svc.name))[0]["resources"]
        documented = rows.get(svc.name)
        assert documented, f"docs/deployment.md has no resource row for {svc.name}"
        assert documented == [res["requests"]["cpu"], res["requests"]["memory"], res["limits"]["memory"]], svc.name


# ------------------------------------------------------------------ metrics


def test_every_metrics_server_binds_the_metrics_host_setting() -> None:
    """Containers set SWITCHBOARD_METRICS_HOST=0.0.0.0 so Prometheus can scrape them from another
    container or pod; a /metrics server bound to a fixed address ignores it."""
    import importlib
    from pathlib import Path

    from deployspec import modules_of

    offenders = []
    sources = {}
    for name in ["switchboard.runner"] + [m for svc in code_services() for m in modules_of(svc.package)]:
        file = getattr(importlib.import_module(name), "__file__", None)
        if file:
            sources[name] = Path(file).read_text()
    for name, source in sources.items():
        for call in re.findall(r"start_http_server\(([^)]*)\)", source):
            if "metrics_host" not in call:
                offenders.append(f"{name}: start_http_server({call})")
    assert not offenders, "binds a fixed address instead of settings.metrics_host:\n" + "\n".join(offenders)
