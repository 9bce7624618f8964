from __future__ import annotations

from pydantic import Field

from processors.azure_speech import AzureSpeechSettings
from processors.tts.phrase_cache import CLAUSE_PHRASES, DEFAULT_PHRASES


class TtsSettings(AzureSpeechSettings):
    tts_engine: str = Field(
        "piper",
        description="text-to-speech engine: piper (offline) or azure (Azure Speech, with piper as its fallback)",
    )
    chunk_ms: int = Field(200, ge=20, description="agent audio per audio.out record")
    piper_length_scale: float = Field(1.0, gt=0, description="Piper speaking rate (lower is faster)")
    azure_tts_voice: str = Field(
        "en-US-AvaMultilingualNeural",
        description="default Azure neural voice (a call may ask for another: voice azure:NAME)",
    )
    tts_first_audio_s: float = Field(
        1.0,
        gt=0,
        description="deadline for a sentence's first audio from the cloud "
        "voice (alert threshold: TTS > 1 s); past it the call falls back",
    )
    tts_next_audio_s: float = Field(2.0, gt=0, description="deadline between audio chunks of a sentence")
    tts_breaker_failures: int = Field(3, ge=1, description="failed sentences in a row that open the breaker")
    tts_breaker_reset_s: float = Field(30.0, gt=0, description="seconds the breaker stays open before a trial call")
    phrases: list[str] = Field(
        list(DEFAULT_PHRASES),
        description="phrases synthesised once per voice and reused (greeting, fallbacks, goodbye); JSON list",
    )
    phrase_cache: bool = Field(
        True,
        description="piper: serve the listed phrases from a cache warmed at start, so every fixed sentence "
        "of the offline agent plays at once (with azure the cache is always on)",
    )
    fallback_phrase: str = Field("Sorry, give me a moment.", description="said when the cloud voice fails mid-call")
    tts_first_clause: bool = Field(
        True,
        description="piper: synthesise a sentence's first clause alone and send it at once, the rest while it "
        "plays (cut at the first comma, semicolon, colon or dash within 5 words, else between two words; "
        "sentences of up to 6 words stay whole), so any sentence starts playing within ~150 ms",
    )
    tts_clause_phrases: list[str] = Field(
        list(CLAUSE_PHRASES),
        description="piper, with the first clause on: sentence openers kept in the phrase cache (warmed at start), "
        "so a sentence starting with one plays at once; JSON list",
    )
    tts_hold_s: float = Field(
        10.0,
        gt=0,
        le=300,
        description="speculative reply: how long a call's synthesised but unconfirmed sentences are held before they "
        "are evicted (a turn is confirmed within a second of its early transcript, or never)",
    )
    tts_hold_max_audio_s: float = Field(
        60.0, gt=0, le=600,
        description="speculative reply: audio held per call at most (past it a sentence is made when "
        "confirmed)"
    )
