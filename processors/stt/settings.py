from __future__ import annotations

from pydantic import Field

from switchboard.settings import ServiceSettings


class SttSettings(ServiceSettings):
    stt_engine: str = Field("whisper", description="speech-to-text engine: whisper")
    whisper_compute_type: str = Field("int8", description="CTranslate2 compute type for faster-whisper")
    whisper_threads: int = Field(2, ge=1, description="CPU threads for faster-whisper")
    whisper_beam_size: int = Field(1, ge=1, description="beam size (1 = greedy, fastest)")
