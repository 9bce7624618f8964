from __future__ import annotations

from pydantic import Field

from switchboard.settings import ServiceSettings


class TtsSettings(ServiceSettings):
    tts_engine: str = Field("piper", description="text-to-speech engine: piper")
    chunk_ms: int = Field(200, ge=20, description="agent audio per audio.out record")
    piper_length_scale: float = Field(1.0, gt=0, description="Piper speaking rate (lower is faster)")
