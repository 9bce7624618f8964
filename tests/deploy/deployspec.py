"""What the deployment files say and what the code says, read once for the deploy tests.

Everything on the code side is read dynamically (switchboard.services, switchboard.topics, the
settings classes, the Prometheus registry), so services and settings the code adds are checked
without touching these tests.
"""

from __future__ import annotations

import functools
import importlib
import json
import pkgutil
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared"
STRIMZI_DIR = ROOT / "strimzi"
CRD_DIR = SHARED / "k8s-schemas" / "strimzi"
COMPOSE_FILE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"
DOCKERFILE = ROOT / "Dockerfile"
ALERTS_FILE = ROOT / "deploy" / "prometheus" / "alerts.yml"
PROMETHEUS_FILE = ROOT / "deploy" / "prometheus" / "prometheus.yml"
DASHBOARD_DIR = ROOT / "deploy" / "grafana" / "dashboards"
DATASOURCES_FILE = ROOT / "deploy" / "grafana" / "provisioning" / "datasources" / "datasources.yml"
DOCS_FILE = ROOT / "docs" / "deployment.md"

# Kubernetes version the manifests target (pod-index label and preStop sleep need >= 1.30).
KUBERNETES_VERSION = "1.30.0"

# Environment variables that are not settings of the code but may be set on a service: the
# Python runtime's own. Anything else must be a SWITCHBOARD_* field of the service's settings.
NON_APP_ENV = frozenset({"PYTHONUNBUFFERED"})

# Metrics that dashboards and alerts may use although the code does not export them: the
# Kafka Exporter's consumer-group lag (deployed by docker-compose.yml and by the Kafka
# resource's spec.kafkaExporter; both are checked to be there).
EXPORTER_METRICS = frozenset({"kafka_consumergroup_lag"})

# `switchboard topics create` is a CLI command, not a service; it reads the base settings.
TOPICS_COMMAND = ("switchboard", "topics", "create")


def tool(name: str) -> str:
    """The path of a required command-line tool; a missing tool fails the test (never skips it)."""
    path = shutil.which(name)
    if path is None:
        raise AssertionError(
            f"`{name}` is not installed: the deploy tests need it (apt-get install "
            f"{ {'docker-compose': 'docker-compose', 'promtool': 'prometheus'}.get(name, name) })"
        )
    return path


# ---------------------------------------------------------------- the code


@dataclass(frozen=True)
class CodeService:
    name: str
    module: str
    settings_path: str
    scales_by_partition: bool

    @property
    def settings(self) -> type:
        mod, cls = self.settings_path.split(":")
        return getattr(importlib.import_module(mod), cls)

    @property
    def package(self) -> str:
        """The package whose modules make up the service (``processors.stt`` for ``processors.stt.main``)."""
        parent = self.module.rpartition(".")[0]
        return parent or self.module


@functools.cache
def code_services() -> tuple[CodeService, ...]:
    from switchboard.services import SERVICES

    return tuple(CodeService(s.name, s.module, s.settings, s.scales_by_partition) for s in SERVICES)


def service(name: str) -> CodeService:
    for s in code_services():
        if s.name == name:
            return s
    raise KeyError(name)


def settings_env_names(settings_cls: type) -> set[str]:
    """The environment variables a pydantic-settings class reads (prefix + upper-cased field)."""
    prefix = settings_cls.model_config.get("env_prefix", "")
    return {f"{prefix}{name}".upper() for name in settings_cls.model_fields}


def group_settings(settings_cls: type) -> set[str]:
    """Consumer groups a settings class configures (defaults of fields named ``*group_id``)."""
    return {f.default for name, f in settings_cls.model_fields.items() if name.endswith("group_id") and f.default}


def base_settings() -> type:
    from switchboard.settings import ServiceSettings

    return ServiceSettings


def settings_for_command(command: list[str]) -> type:
    """Settings class read by a container running ``command`` (``switchboard <service>`` or topics)."""
    if tuple(command) == TOPICS_COMMAND:
        return base_settings()
    assert command[:1] == ["switchboard"] and len(command) == 2, f"unexpected command {command}"
    return service(command[1]).settings


@functools.cache
def exported_metrics() -> frozenset[str]:
    """Every sample name the code can export: import each service's package and the shared
    metrics, then read the Prometheus registry (``x``, ``x_total``, ``x_bucket``, ...)."""
    from prometheus_client import REGISTRY

    importlib.import_module("switchboard.metrics")
    for s in code_services():
        for mod in modules_of(s.package):
            importlib.import_module(mod)
    return frozenset(REGISTRY._names_to_collectors)


def modules_of(package: str) -> list[str]:
    mod = importlib.import_module(package)
    names = [package]
    if hasattr(mod, "__path__"):
        names += [m.name for m in pkgutil.walk_packages(mod.__path__, prefix=f"{package}.")]
    return names


def module_inputs(package: str) -> set[str]:
    """Topics named by module-level ``INPUTS`` tuples of a service's package (consumers that are
    not runner processors, like the ClickHouse sink)."""
    from switchboard.topics import Topic

    names: set[str] = set()
    for modname in modules_of(package):
        inputs = getattr(importlib.import_module(modname), "INPUTS", None)
        if isinstance(inputs, tuple) and inputs and all(isinstance(t, Topic) for t in inputs):
            names |= {t.name for t in inputs}
    return names


def processor_classes(package: str) -> list[type]:
    """Classes of a service's package that declare the topics they consume (``inputs``) and a
    ``name`` (the runner's consumer group is ``switchboard-<name>``)."""
    from switchboard.topics import Topic

    found = []
    for modname in modules_of(package):
        mod = importlib.import_module(modname)
        for obj in vars(mod).values():
            if (
                isinstance(obj, type)
                and obj.__module__ == modname
                and isinstance(getattr(obj, "inputs", None), tuple)
                and getattr(obj, "inputs", ())
                and all(isinstance(t, Topic) for t in obj.inputs)
                and isinstance(getattr(obj, "name", None), str)
            ):
                found.append(obj)
    return found


# ------------------------------------------------------------- the files


@functools.cache
def compose_config() -> dict[str, Any]:
    """docker-compose.yml as docker-compose resolves it (anchors, merges, .env.example interpolated)."""
    proc = subprocess.run(
        [tool("docker-compose"), "--project-directory", str(ROOT), "-f", str(COMPOSE_FILE),
         "--env-file", str(ENV_EXAMPLE), "config"],
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 0, f"docker-compose config failed:\n{proc.stderr}"
    return yaml.safe_load(proc.stdout)


def compose_switchboard_services() -> dict[str, dict[str, Any]]:
    """Compose services that run Switchboard code (their command starts with ``switchboard``)."""
    return {
        name: svc for name, svc in compose_config()["services"].items()
        if (svc.get("command") or [None])[0] == "switchboard"
    }


@functools.cache
def manifests() -> tuple[tuple[Path, dict[str, Any]], ...]:
    out = []
    for path in sorted(STRIMZI_DIR.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                out.append((path, doc))
    return tuple(out)


def kinds(*names: str) -> list[dict[str, Any]]:
    return [doc for _, doc in manifests() if doc["kind"] in names]


def by_kind_name(kind: str, name: str) -> dict[str, Any]:
    matches = [d for d in kinds(kind) if d["metadata"]["name"] == name]
    assert len(matches) == 1, f"expected one {kind} {name!r}, found {len(matches)}"
    return matches[0]


def workloads() -> list[dict[str, Any]]:
    return kinds("Deployment", "StatefulSet")


def containers(workload: dict[str, Any]) -> list[dict[str, Any]]:
    return workload["spec"]["template"]["spec"]["containers"]


def workload_for(service_name: str) -> dict[str, Any]:
    found = [w for w in workloads() for c in containers(w) if c.get("command") == ["switchboard", service_name]]
    assert len(found) == 1, f"expected one workload running `switchboard {service_name}`, found {len(found)}"
    return found[0]


def env_value(container: dict[str, Any], name: str) -> Any:
    for e in container.get("env", []):
        if e["name"] == name:
            return e.get("value", e.get("valueFrom"))
    return None


def is_switchboard(container: dict[str, Any]) -> bool:
    return (container.get("command") or [None])[0] == "switchboard"


def partition_problems(docs: list[dict[str, Any]], default: int) -> list[str]:
    """Where manifests disagree on the partition count: every Switchboard container must read the
    same SWITCHBOARD_PARTITIONS (unset: ``default``), every KafkaTopic must have that many
    partitions, and no HPA may scale a group past it (a member beyond it would sit idle)."""
    problems = []
    read = {}
    for doc in docs:
        if doc["kind"] in ("Deployment", "StatefulSet"):
            for c in doc["spec"]["template"]["spec"]["containers"]:
                if is_switchboard(c):
                    raw = env_value(c, "SWITCHBOARD_PARTITIONS")
                    read[f"{doc['metadata']['name']}/{c['name']}"] = int(raw) if raw is not None else default
    counts = set(read.values()) or {default}
    if len(counts) > 1:
        problems.append(f"containers read different partition counts: {read}")
    count = max(counts)
    for doc in docs:
        name = doc["metadata"]["name"]
        if doc["kind"] == "KafkaTopic" and doc["spec"]["partitions"] != count:
            problems.append(f"KafkaTopic {name}: {doc['spec']['partitions']} partitions, the services read {count}")
        if doc["kind"] == "HorizontalPodAutoscaler" and doc["spec"]["maxReplicas"] > count:
            problems.append(f"HPA {name}: maxReplicas {doc['spec']['maxReplicas']} > {count} partitions")
    return problems


def partitions_default() -> int:
    return base_settings().model_fields["partitions"].default


def deployed_partitions() -> int:
    """The partition count the manifests deploy (checked consistent by ``partition_problems``)."""
    values = {env_value(c, "SWITCHBOARD_PARTITIONS") for w in workloads() for c in containers(w) if is_switchboard(c)}
    values.discard(None)
    return int(values.pop()) if len(values) == 1 else partitions_default()


def compose_partitions() -> int:
    """SWITCHBOARD_PARTITIONS as the compose file gives it to every Switchboard service (topic creation included)."""
    services = compose_switchboard_services().values()
    values = {svc.get("environment", {}).get("SWITCHBOARD_PARTITIONS") for svc in services}
    assert len(values) == 1, f"compose services read different partition counts: {values}"
    value = values.pop()
    return int(value) if value is not None else partitions_default()


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def dashboards() -> list[tuple[Path, dict[str, Any]]]:
    return [(p, json.loads(p.read_text())) for p in sorted(DASHBOARD_DIR.glob("*.json"))]


# ------------------------------------------------------------------ PromQL

_PROMQL_WORDS = frozenset({
    "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless", "offset",
    "sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values", "bottomk", "topk",
    "quantile", "inf", "nan",
})


def promql_metrics(expr: str) -> set[str]:
    """Metric names used by a PromQL expression (not functions, labels, keywords or durations)."""
    s = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'', '""', expr)  # string literals
    s = re.sub(r"\{[^}]*\}", "", s)  # label matchers
    s = re.sub(r"\[[^\]]*\]", "", s)  # range and subquery selectors
    s = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", s)  # label lists
    s = re.sub(r"\$\w+|\$\{[^}]*\}", "1", s)  # Grafana variables ($__rate_interval)
    names = set()
    for m in re.finditer(r"(?<![\w.:])([a-zA-Z_:][a-zA-Z0-9_:]*)(?![\w.])\s*(\()?", s):
        name, call = m.group(1), m.group(2)
        if call or name.lower() in _PROMQL_WORDS:
            continue
        names.add(name)
    return names
