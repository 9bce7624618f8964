"""Wiring of the cloud agent from settings: client, breaker, fallback to the offline policy, per-call routing."""

from __future__ import annotations

from processors.agent.engine import Agent
from processors.agent.fallback import AgentRouter, ResilientAgent
from processors.agent.openai_llm import Endpoint, OpenAIAgent, client_for, is_transient
from processors.agent.settings import AgentSettings
from processors.resilience import EngineGuard, Journal


def cloud_agent(settings: AgentSettings, offline: Agent) -> AgentRouter:
    name = settings.agent_engine
    if name == "azure_openai" and not settings.azure_openai_endpoint:
        raise ValueError("agent_engine=azure_openai needs SWITCHBOARD_AZURE_OPENAI_ENDPOINT")
    endpoint = Endpoint(
        api_key=settings.llm_key(),
        base_url=settings.llm_base_url if name == "openai" else None,
        azure_endpoint=settings.azure_openai_endpoint if name == "azure_openai" else None,
        azure_api_version=settings.azure_openai_api_version,
        azure_entra=settings.azure_openai_entra,
        timeout_s=max(settings.llm_first_sentence_s, settings.llm_next_sentence_s) + 1.0,
    )
    journal = Journal()
    guard = EngineGuard(
        "agent",
        name,
        timeout_s=settings.llm_first_sentence_s,
        fail_max=settings.llm_breaker_failures,
        reset_s=settings.llm_breaker_reset_s,
        retries=settings.llm_retries,
        transient=is_transient,
    )
    llm = OpenAIAgent(
        client_for(endpoint),
        settings.llm_model,
        guard,
        journal,
        name=name,
        clinic=settings.clinic_name,
        max_tokens=settings.llm_max_tokens,
        temperature=settings.llm_temperature,
        budget_tokens=settings.llm_budget_tokens,
    )
    resilient = ResilientAgent(
        llm,
        offline,
        guard,
        journal,
        first_sentence_s=settings.llm_first_sentence_s,
        next_sentence_s=settings.llm_next_sentence_s,
        fallback_phrase=settings.fallback_phrase,
    )
    return AgentRouter({name: resilient, offline.name: offline}, default=name, journal=journal)
