"""Settings shared by every service. Each service subclasses ``ServiceSettings``,
builds it once in ``main()`` and passes it down. Every field is an environment
variable ``SWITCHBOARD_<NAME>`` (documented in the README)."""

from __future__ import annotations

import sys
from typing import TypeVar

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# Partitions of every call-scoped topic unless SWITCHBOARD_PARTITIONS says otherwise. At least
# 32 so a stage can grow to 32 workers; Kafka cannot shrink a topic, and growing one re-maps
# keys (live calls lose their order), so it is set before the topics are first created.
DEFAULT_PARTITIONS = 32


class ServiceSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SWITCHBOARD_", extra="ignore")

    kafka_bootstrap: str = Field("127.0.0.1:9092", description="Kafka bootstrap servers (host:port,...)")
    topic_prefix: str = Field("", description="prefix added to every topic name (one cluster, many pipelines)")
    kafka_security_protocol: str = Field("PLAINTEXT", description="PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL")
    kafka_sasl_mechanism: str = Field("SCRAM-SHA-512", description="SASL mechanism (Strimzi KafkaUser: SCRAM-SHA-512)")
    kafka_sasl_username: str = Field("", description="SASL user (Strimzi: the KafkaUser's name)")
    kafka_sasl_password: SecretStr = Field(SecretStr(""), description="SASL password (the KafkaUser's Secret)")
    kafka_ssl_cafile: str = Field("", description="CA file of the brokers' certificates (empty: system CAs)")
    fetch_max_wait_ms: int = Field(
        10,
        ge=0,
        description="consumer fetch wait while records flow: bounds per-hop latency on brokers that do not wake "
        "fetches (tansu)",
    )
    fetch_idle_wait_ms: int = Field(
        1000,
        ge=0,
        description="fetch wait once no record came for fetch_idle_after_ms: grows (doubling per empty fetch) from "
        "fetch_max_wait_ms up to this cap, so an idle stack does not spin; the first record after a quiet spell "
        "waits up to this long",
    )
    fetch_idle_after_ms: int = Field(
        10_000, ge=0, description="quiet time (no record fetched) after which a consumer's fetch wait starts to grow"
    )
    partitions: int = Field(
        DEFAULT_PARTITIONS,
        ge=1,
        description="partitions of every call-scoped topic: topic creation, the manifests, autoscalers' "
        "maxReplicas and the ingress reply partitions follow it; the most workers a stage can use",
    )
    max_in_flight: int = Field(
        256,
        ge=1,
        description="records a worker handles at once across its calls (one call's records stay in order); "
        "past it the worker pauses its partitions and resumes at half",
    )
    drain_in_flight_s: float = Field(
        2.0,
        ge=0,
        description="on rebalance or stop, how long records in flight may finish before being abandoned (replayed "
        "by the next owner); keep it below the rebalance timeout",
    )
    inference_threads: int = Field(
        0, ge=0, description="model calls run at once off the event loop, per worker (0 = one per CPU core)"
    )
    # Short, so a crashed worker's partitions move on quickly: tansu answers a join about half a session
    # timeout after the group's last change (6 s: 3 s, 3 s: 1.5-2 s; bench/takeover.py).
    session_timeout_ms: int = Field(
        3000, ge=1000,
        description="consumer group session timeout: a worker that stops heartbeating (killed, hung) loses its "
        "partitions after this long; heartbeats go every sixth of it",
    )
    rebalance_timeout_ms: int = Field(3000, description="consumer group rebalance timeout")
    group_instance_id: str = Field(
        "",
        description="this worker's stable name within its stage (`switchboard up`: SERVICE-INDEX; Kubernetes: the "
        "pod name, HOSTNAME): a restarted worker with the same name takes its predecessor's place at once (see "
        "static_membership and member_dir)",
    )
    static_membership: bool = Field(
        False,
        description="join the group as static member group_instance_id (KIP-345: the broker keeps a restarted "
        "worker's partitions for session_timeout_ms, no rebalance); on for Apache Kafka (compose, Strimzi); tansu "
        "does not honour it (a restart then costs two rebalances), so off by default",
    )
    member_dir: str = Field(
        "",
        description="folder where a worker with a group_instance_id keeps its group member ID; on restart it asks "
        "the broker to drop that dead member before joining, instead of waiting out its session (empty: off; "
        "`switchboard up` sets .switchboard/members)",
    )
    producer_idempotence: bool = Field(
        False,
        description="idempotent producers (no duplicate on a retried send); needs a broker that answers "
        "InitProducerId: Apache Kafka yes (on in compose and strimzi/), tansu 0.6 no (UnknownError), so off by "
        "default; acks=all either way",
    )
    embedded_partitions: int = Field(
        8,
        ge=1,
        description="a stack on its own one-box tansu (`switchboard up` without SWITCHBOARD_KAFKA_BOOTSTRAP, the "
        "demo, the load-test stack): the partition count of its topics unless SWITCHBOARD_PARTITIONS is set. Each "
        "of its stages runs on one box, and tansu polls every partition of a fetched topic on every fetch: 8 "
        "instead of 32 took the broker from 75-79 % to 52-57 % of a core with 20 talking callers (README, Load "
        "testing)",
    )
    broker_storage: str = Field(
        "memory://tansu/",
        description="`switchboard up` only: storage of the embedded tansu broker. memory:// keeps nothing across "
        "a broker restart (the services re-create topics and restart their positions on their own); this tansu "
        "build also takes s3://bucket/ (an S3-compatible store, AWS_* variables); postgres, sqlite, turso and "
        "slatedb are not compiled in",
    )
    service_nice: dict[str, int] = Field(
        {"stt": -10},
        description="the embedded stack only (`switchboard up`, the demo, the load-test stack): CPU niceness per "
        "service, as JSON (-20 to 19, lower runs first; {} for none). On a busy box, STT's burst of decodes when "
        "many turns end at once otherwise waits for a core behind the steady per-frame work of the broker, turns "
        "and ingress (README, Load testing: 20 talking callers answered in 1.2 s instead of 2.7 s at the median). "
        "Below 0 needs root or CAP_SYS_NICE: a worker not allowed runs at 0 and logs it once",
    )
    broker_check_s: float = Field(
        1.0, gt=0,
        description="how often a worker checks its Kafka clients after the broker came back: topics lost with a "
        "restarted in-memory broker are re-created, and a fetch position past the end of a lost or truncated log "
        "moves to its start",
    )
    log_level: str = Field("INFO", description="log level of the JSON logs")
    metrics_port: int = Field(0, ge=0, description="port of the /metrics endpoint (0 = off; ingress serves its own)")
    metrics_host: str = Field("127.0.0.1", description="address the /metrics endpoint binds (0.0.0.0 in containers)")
    otlp_endpoint: str = Field(
        "",
        description="OpenTelemetry: base URL of an OTLP/HTTP collector (e.g. http://jaeger:4318); each turn's spans "
        "go to <url>/v1/traces. Empty: the standard OTEL_EXPORTER_OTLP_ENDPOINT (or _TRACES_ENDPOINT) if set, else "
        "tracing is off",
    )

    @field_validator("service_nice")
    @classmethod
    def _nice_range(cls, value: dict[str, int]) -> dict[str, int]:
        from switchboard.services import SERVICES  # names only; services.py imports no settings at import time

        unknown = sorted(set(value) - {service.name for service in SERVICES})
        if unknown:
            raise ValueError(f"no such service: {', '.join(unknown)} (services: "
                             f"{', '.join(service.name for service in SERVICES)})")
        wrong = {name: n for name, n in value.items() if not -20 <= n <= 19}
        if wrong:
            raise ValueError(f"niceness runs from -20 to 19, got {wrong}")
        return value


S = TypeVar("S", bound=BaseSettings)


def load_settings(cls: type[S], prog: str) -> S:
    """A service's settings from its environment; a setting out of range or of the wrong type ends the process with
    exit code 2 and one line per bad setting, naming its variable, not a traceback."""
    try:
        return cls()
    except ValidationError as exc:
        prefix = cls.model_config.get("env_prefix", "")
        lines = [
            f"  {prefix.upper()}{'.'.join(str(p) for p in e['loc']).upper()}: {e['msg']} (got {e.get('input')!r})"
            if e["loc"] else f"  {e['msg'].removeprefix('Value error, ')}"  # a rule between settings names them itself
            for e in exc.errors()
        ]
        print(f"{prog}: invalid settings:\n" + "\n".join(lines), file=sys.stderr)
        raise SystemExit(2) from None
