"""Every object in strimzi/ validates: Strimzi custom resources against the Strimzi CRD schemas in
../shared/k8s-schemas/strimzi/, core Kubernetes kinds with kubernetes-validate (strict: unknown
fields fail), and the Prometheus Operator kinds (no schema here) structurally."""

from __future__ import annotations

import copy
import functools
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from deployspec import ALERTS_FILE, CRD_DIR, KUBERNETES_VERSION, containers, kinds, load_yaml, manifests, workloads

STRIMZI_GROUP = "kafka.strimzi.io"
MONITORING_GROUP = "monitoring.coreos.com"


def strict(schema: Any) -> Any:
    """A CRD's structural schema with unknown fields rejected, as `kubectl apply --validate=strict`
    does (objects that declare properties and do not preserve unknown fields)."""
    if isinstance(schema, dict):
        out = {k: strict(v) for k, v in schema.items()}
        if (
            schema.get("type") == "object"
            and "properties" in schema
            and not schema.get("x-kubernetes-preserve-unknown-fields")
            and "additionalProperties" not in schema
        ):
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [strict(v) for v in schema]
    return schema


@functools.cache
def crd_validators() -> dict[tuple[str, str], jsonschema.Validator]:
    """(apiVersion, kind) -> validator of the served versions of every CRD file."""
    out = {}
    for path in sorted(CRD_DIR.glob("*.yaml")):
        crd = yaml.safe_load(path.read_text())
        group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
        for version in crd["spec"]["versions"]:
            if not version.get("served"):
                continue
            schema = strict(copy.deepcopy(version["schema"]["openAPIV3Schema"]))
            schema.setdefault("properties", {})["metadata"] = {
                "type": "object",
                "required": ["name"],
                "properties": {"name": {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"},
                               "namespace": {"type": "string"},
                               "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                               "annotations": {"type": "object", "additionalProperties": {"type": "string"}}},
                "additionalProperties": False,
            }
            schema["required"] = sorted({*schema.get("required", []), "spec"})
            out[(f"{group}/{version['name']}", kind)] = jsonschema.Draft7Validator(schema)
    assert out, f"no CRD schemas in {CRD_DIR}"
    return out


def strimzi_docs() -> list[dict[str, Any]]:
    return [d for _, d in manifests() if d["apiVersion"].startswith(STRIMZI_GROUP)]


def core_docs() -> list[dict[str, Any]]:
    return [d for _, d in manifests()
            if not d["apiVersion"].startswith((STRIMZI_GROUP, MONITORING_GROUP))]


def doc_id(doc: dict[str, Any]) -> str:
    return f"{doc['kind']}/{doc['metadata']['name']}"


def crd_errors(doc: dict[str, Any]) -> list[str]:
    validator = crd_validators().get((doc["apiVersion"], doc["kind"]))
    assert validator is not None, f"{doc_id(doc)}: no served CRD version for {doc['apiVersion']}"
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(doc)]


def test_the_manifests_hold_the_strimzi_resources_the_issue_asks_for() -> None:
    present = {d["kind"] for d in strimzi_docs()}
    assert {"Kafka", "KafkaNodePool", "KafkaTopic", "KafkaUser"} <= present
    assert all(d["apiVersion"] == "kafka.strimzi.io/v1" for d in strimzi_docs())


@pytest.mark.parametrize("doc", strimzi_docs(), ids=doc_id)
def test_strimzi_resource_validates_against_its_crd(doc) -> None:
    assert crd_errors(doc) == []


def test_the_crd_check_rejects_an_unknown_field_and_a_wrong_type() -> None:
    topic = copy.deepcopy(kinds("KafkaTopic")[0])
    topic["spec"]["partition"] = 8  # typo of `partitions`
    assert any("partition" in e for e in crd_errors(topic))
    topic = copy.deepcopy(kinds("KafkaTopic")[0])
    topic["spec"]["partitions"] = "eight"
    assert crd_errors(topic)


@pytest.mark.parametrize("doc", core_docs(), ids=doc_id)
def test_core_kubernetes_object_validates_strictly(doc) -> None:
    kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_kubernetes_validate_rejects_an_unknown_field() -> None:
    deployment = copy.deepcopy(kinds("Deployment")[0])
    deployment["spec"]["replica"] = 3
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)


def test_every_object_lives_in_the_switchboard_namespace() -> None:
    for _, doc in manifests():
        if doc["kind"] == "Namespace":
            continue
        assert doc["metadata"].get("namespace") == "switchboard", doc_id(doc)


def test_prometheus_rule_is_the_alert_rules_file() -> None:
    (rule,) = kinds("PrometheusRule")
    assert rule["apiVersion"] == f"{MONITORING_GROUP}/v1"
    assert rule["spec"] == load_yaml(ALERTS_FILE), "PrometheusRule and deploy/prometheus/alerts.yml diverge"


def test_pod_monitors_select_switchboard_pods_by_named_ports_they_have() -> None:
    monitors = kinds("PodMonitor")
    assert monitors
    ports_by_pod_labels = [
        (w["spec"]["template"]["metadata"]["labels"],
         {p["name"] for c in w["spec"]["template"]["spec"]["containers"] for p in c.get("ports", [])})
        for w in workloads()
    ]
    scraped_pods = 0
    for mon in monitors:
        assert mon["apiVersion"] == f"{MONITORING_GROUP}/v1"
        selector = mon["spec"]["selector"]["matchLabels"]
        ports = {e["port"] for e in mon["spec"]["podMetricsEndpoints"]}
        for labels, pod_ports in ports_by_pod_labels:
            if selector.items() <= labels.items():
                scraped_pods += 1
                assert ports & pod_ports, f"PodMonitor {mon['metadata']['name']} finds no port on {labels}"
    switchboard_pods = [w for w in workloads()
                        if any((c.get("command") or [""])[0] == "switchboard" for c in containers(w))]
    assert scraped_pods >= len(switchboard_pods)
