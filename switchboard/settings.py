"""Settings shared by every service. Each service subclasses ``ServiceSettings``,
builds it once in ``main()`` and passes it down. Every field is an environment
variable ``SWITCHBOARD_<NAME>`` (documented in the README)."""

from __future__ import annotations

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


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
        10, ge=0, description="consumer fetch wait: bounds per-hop latency on brokers that do not wake fetches (tansu)"
    )
    session_timeout_ms: int = Field(6000, description="consumer group session timeout")
    rebalance_timeout_ms: int = Field(3000, description="consumer group rebalance timeout")
    log_level: str = Field("INFO", description="log level of the JSON logs")
    metrics_port: int = Field(0, ge=0, description="port of the /metrics endpoint (0 = off; ingress serves its own)")
    metrics_host: str = Field("127.0.0.1", description="address the /metrics endpoint binds (0.0.0.0 in containers)")
