from __future__ import annotations

from pydantic import Field

from processors.azure_speech import AzureSpeechSettings


class SttSettings(AzureSpeechSettings):
    stt_engine: str = Field("moonshine", description="speech-to-text engine: moonshine (offline, Moonshine base-en), "
                            "whisper (offline, faster-whisper tiny.en) or azure (Azure Speech, with moonshine as its "
                            "fallback)")
    models_dir: str = Field("", description="where scripts/setup.sh puts the converted Moonshine model (empty: "
                            "<repo>/.switchboard/models)")
    moonshine_threads: int = Field(1, ge=1, description="CPU threads per Moonshine session (1 is fastest under load: "
                                   "parallel turns come from the inference pool)")
    moonshine_batch: int = Field(8, ge=1, description="most turns Moonshine decodes together: turns that end while "
                                 "the inference threads are busy share the decoder's passes (8 turns cost about "
                                 "what 3 cost one by one); 1 decodes every turn alone")
    whisper_compute_type: str = Field("int8", description="CTranslate2 compute type for faster-whisper")
    whisper_threads: int = Field(2, ge=1, description="CPU threads for faster-whisper")
    whisper_beam_size: int = Field(1, ge=1, description="beam size (1 = greedy, fastest)")
    azure_stt_languages: list[str] = Field([], description="languages for Azure automatic language identification, "
                                           "e.g. [\"en-US\",\"es-ES\"] (JSON); empty: the call's language")
    azure_stt_chunk_ms: int = Field(250, ge=20, description="audio written to the Azure push stream per write")
    stt_final_s: float = Field(1.5, gt=0, description="deadline for a turn's final transcript from the cloud "
                               "(alert threshold: STT > 500 ms); past it the turn is replayed offline")
    stt_breaker_failures: int = Field(3, ge=1, description="failed turns in a row that open the breaker")
    stt_breaker_reset_s: float = Field(30.0, gt=0, description="seconds the breaker stays open before a trial turn")
    redact_transcripts: bool = Field(False, description="mask card, SSN, phone, e-mail and birth-date mentions in "
                                     "partial and final transcripts before they are published (the agent then "
                                     "hears [CARD] etc.; on in strimzi/)")
