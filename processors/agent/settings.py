from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr

from switchboard.settings import ServiceSettings


class AgentSettings(ServiceSettings):
    agent_engine: str = Field(
        "policy",
        description="agent engine: policy (deterministic clinic receptionist, offline), openai "
        "(OpenAI or any OpenAI-compatible endpoint, see llm_base_url) or azure_openai",
    )
    clinic_name: str = Field("Riverside Clinic", description="business name the agent answers for")
    max_fallbacks: int = Field(3, ge=1, description="misunderstood turns in a row before handing off to a human")
    llm_model: str = Field("gpt-4o-mini", description="model name (Azure OpenAI: the deployment name)")
    llm_base_url: str | None = Field(
        None, description="OpenAI-compatible endpoint, e.g. http://127.0.0.1:8000/v1 (unset: api.openai.com)"
    )
    llm_api_key: SecretStr | None = Field(None, description="API key of the LLM endpoint (never logged)")
    llm_api_key_file: Path | None = Field(None, description="file holding the API key (e.g. a mounted secret)")
    azure_openai_endpoint: str | None = Field(None, description="Azure OpenAI resource, https://NAME.openai.azure.com")
    azure_openai_api_version: str = Field("2024-10-21", description="Azure OpenAI REST API version")
    azure_openai_entra: bool = Field(
        False,
        description="authenticate to Azure OpenAI with Entra ID "
        "(DefaultAzureCredential, needs azure-identity) instead of a key",
    )
    llm_first_sentence_s: float = Field(
        2.5,
        gt=0,
        description="deadline for the reply's first sentence "
        "(alert threshold: agent > 2.5 s); past it the call falls back",
    )
    llm_next_sentence_s: float = Field(2.5, gt=0, description="deadline between later sentences of a reply")
    llm_retries: int = Field(
        1,
        ge=0,
        description="retries of a request that failed before any token (429, 5xx, "
        "connection), with jittered exponential backoff, within the first-sentence deadline",
    )
    llm_breaker_failures: int = Field(3, ge=1, description="failed replies in a row that open the circuit breaker")
    llm_breaker_reset_s: float = Field(30.0, gt=0, description="seconds the breaker stays open before a trial call")
    llm_max_tokens: int = Field(200, ge=16, description="completion tokens per model call")
    llm_temperature: float = Field(0.3, ge=0, le=2, description="sampling temperature")
    llm_budget_tokens: int = Field(
        1500, ge=100, description="conversation history kept verbatim; older turns are folded into a summary"
    )
    fallback_phrase: str = Field(
        "Sorry, give me a moment.",
        description="said when the cloud agent fails mid-call (pre-synthesised in the TTS phrase cache)",
    )
    speculative_reply: Literal["off", "offline", "always"] = Field(
        "offline",
        description="answer the early transcript (made at each pause of the caller) before the turn is confirmed; "
        "played only once the final transcript has the same words, else thrown away unheard: offline (only with "
        "the offline policy engine, where it is free), always (cloud LLMs too: a discarded speculation costs tokens, "
        "counted in switchboard_speculation_discarded_tokens_total) or off",
    )

    def llm_key(self) -> str | None:
        """The API key, from the environment or the key file; never logged."""
        if self.llm_api_key is not None:
            return self.llm_api_key.get_secret_value()
        if self.llm_api_key_file is not None:
            return self.llm_api_key_file.read_text().strip()
        return None
