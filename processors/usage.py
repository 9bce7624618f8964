"""Usage and cost per call: a configurable price table, ``EngineUsage`` records and metrics.

Prices are USD per unit, per engine name: ``llm_tokens_in`` / ``llm_tokens_out``
per token, ``stt_audio_seconds`` per second, ``tts_characters`` per character.
Override the whole table with ``SWITCHBOARD_PRICES`` (JSON), e.g.
``{"openai": {"llm_tokens_in": 1.5e-7, "llm_tokens_out": 6e-7}}``.
"""

from __future__ import annotations

from prometheus_client import Counter
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from processors.resilience import Usage
from switchboard.records import EngineUsage, now_us

# List prices at the time of writing (pay-as-you-go): gpt-4o-mini on OpenAI / Azure OpenAI,
# Azure Speech standard real-time STT ($1/audio hour) and neural TTS ($15 per 1M characters).
DEFAULT_PRICES: dict[str, dict[str, float]] = {
    "openai": {"llm_tokens_in": 0.15e-6, "llm_tokens_out": 0.60e-6},
    "azure": {"stt_audio_seconds": 1.0 / 3600, "tts_characters": 15e-6},
}

COST = Counter("switchboard_engine_cost_usd_total", "engine cost from the price table", ["stage", "engine"])
LLM_TOKENS = Counter("switchboard_llm_tokens_total", "LLM tokens", ["engine", "direction"])
STT_SECONDS = Counter("switchboard_stt_audio_seconds_total", "seconds of caller audio recognised", ["engine"])
TTS_CHARACTERS = Counter("switchboard_tts_characters_total", "characters synthesized", ["engine"])


class PriceSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SWITCHBOARD_", extra="ignore")

    prices: dict[str, dict[str, float]] = Field(
        default_factory=lambda: {k: dict(v) for k, v in DEFAULT_PRICES.items()},
        description="USD per unit per engine: llm_tokens_in, llm_tokens_out, stt_audio_seconds, tts_characters",
    )


class PriceTable:
    def __init__(self, prices: dict[str, dict[str, float]] | None = None) -> None:
        self.prices = PriceSettings().prices if prices is None else prices

    def cost(self, u: Usage) -> float:
        p = self.prices.get(u.engine, {})
        return (u.llm_tokens_in * p.get("llm_tokens_in", 0.0) + u.llm_tokens_out * p.get("llm_tokens_out", 0.0)
                + u.stt_audio_seconds * p.get("stt_audio_seconds", 0.0)
                + u.tts_characters * p.get("tts_characters", 0.0))

    def record(self, call_id: str, u: Usage) -> EngineUsage:
        """The usage record to publish; also counts it in the metrics."""
        cost = self.cost(u)
        COST.labels(u.stage, u.engine).inc(cost)
        if u.llm_tokens_in or u.llm_tokens_out:
            LLM_TOKENS.labels(u.engine, "in").inc(u.llm_tokens_in)
            LLM_TOKENS.labels(u.engine, "out").inc(u.llm_tokens_out)
        if u.stt_audio_seconds:
            STT_SECONDS.labels(u.engine).inc(u.stt_audio_seconds)
        if u.tts_characters:
            TTS_CHARACTERS.labels(u.engine).inc(u.tts_characters)
        return EngineUsage(call_id, u.stage, u.engine, now_us(), turn_seq=u.turn_seq, llm_tokens_in=u.llm_tokens_in,
                           llm_tokens_out=u.llm_tokens_out, stt_audio_seconds=u.stt_audio_seconds,
                           tts_characters=u.tts_characters, cost_usd=round(cost, 9))
