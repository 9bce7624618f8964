"""Every deployable service: its CLI command, the module whose ``main()`` runs
it, and its settings class. ``switchboard up``, the compose file and the
Kubernetes manifests are checked against this list."""

from __future__ import annotations

import importlib
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Service:
    name: str
    module: str  # has main(argv) and a settings class
    settings: str  # "module:Class"
    doc: str
    scales_by_partition: bool = True

    def settings_class(self) -> type:
        mod, cls = self.settings.split(":")
        return getattr(importlib.import_module(mod), cls)


SERVICES: tuple[Service, ...] = (
    Service(
        "ingress",
        "ingress.main",
        "ingress.settings:IngressSettings",
        "websocket edge (Twilio, ACS, JSON, softphone) and egress",
        scales_by_partition=False,
    ),
    Service(
        "turns",
        "processors.turns.main",
        "processors.turns.settings:TurnsSettings",
        "voice activity, end of turn, barge-in",
    ),
    Service("stt", "processors.stt.main", "processors.stt.settings:SttSettings", "speech-to-text"),
    Service("agent", "processors.agent.main", "processors.agent.settings:AgentSettings", "dialog policy / LLM"),
    Service("tts", "processors.tts.main", "processors.tts.settings:TtsSettings", "text-to-speech"),
    Service(
        "enrich",
        "processors.enrich.main",
        "processors.enrich.settings:EnrichSettings",
        "post-call enrichment: summary, sentiment, intent, outcome",
    ),
    Service(
        "sink",
        "sinks.main",
        "sinks.settings:SinkSettings",
        # last: `switchboard up` stops services in this order, and the sink should see everything
        "ClickHouse sink: calls, turns, transcripts, events, engine usage (redacted, exactly once)",
    ),
)

BY_NAME = {s.name: s for s in SERVICES}
