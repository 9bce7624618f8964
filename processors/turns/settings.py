from __future__ import annotations

from pydantic import Field

from switchboard.settings import ServiceSettings


class TurnsSettings(ServiceSettings):
    vad_engine: str = Field("webrtc", description="voice activity engine: webrtc")
    vad_aggressiveness: int = Field(2, ge=0, le=3, description="webrtcvad mode, 0 (least) to 3 (most aggressive)")
    speech_start_ms: int = Field(60, description="voiced audio needed to start a turn")
    end_of_turn_ms: int = Field(700, description="silence that ends the caller's turn")
    barge_in_ms: int = Field(200, description="voiced audio while the agent speaks that interrupts it")
    preroll_ms: int = Field(300, description="audio kept from before speech onset and sent to STT")
    max_turn_ms: int = Field(30_000, description="a turn longer than this is cut and sent to STT")
    call_idle_timeout_ms: int = Field(
        15_000, description="a call with no audio for this long and no call_ended is ended as ingress_lost"
    )
