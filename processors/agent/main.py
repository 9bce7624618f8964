"""Run the agent processor: ``switchboard agent``."""

from __future__ import annotations

import argparse

from processors.agent.engine import Agent
from processors.agent.logic import AgentProcessor
from processors.agent.settings import AgentSettings
from processors.agent.state import ChangelogStore
from switchboard import logs, tracing
from switchboard.runner import serve
from switchboard.settings import load_settings


def create_engine(settings: AgentSettings) -> Agent:
    from processors.agent.policy import ClinicPolicy

    policy = ClinicPolicy(settings.clinic_name, settings.max_fallbacks)
    if settings.agent_engine == "policy":
        return policy
    if settings.agent_engine in ("openai", "azure_openai"):
        from processors.agent.cloud import cloud_agent

        return cloud_agent(settings, policy)
    raise ValueError(f"unknown agent engine {settings.agent_engine!r} (choose: policy, openai, azure_openai)")


def main(argv: list[str] | None = None) -> int:
    argparse.ArgumentParser(
        prog="switchboard agent", description="The agent: transcripts in, reply sentences out."
    ).parse_args(argv)
    settings = load_settings(AgentSettings, "switchboard agent")
    logs.setup("agent", settings.log_level)
    tracing.setup("agent", settings)  # OpenTelemetry spans of each turn, when an OTLP endpoint is set
    agent = AgentProcessor(create_engine(settings), ChangelogStore(settings), speculate=settings.speculative_reply)
    serve(settings, agent)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
