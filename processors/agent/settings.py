from __future__ import annotations

from pydantic import Field

from switchboard.settings import ServiceSettings


class AgentSettings(ServiceSettings):
    agent_engine: str = Field("policy", description="agent engine: policy (deterministic clinic receptionist)")
    clinic_name: str = Field("Riverside Clinic", description="business name the policy agent answers for")
    max_fallbacks: int = Field(3, ge=1, description="misunderstood turns in a row before handing off to a human")
