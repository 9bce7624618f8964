"""Typed records of the bus. Each class mirrors one ``schemas/*.avsc`` file.

``switchboard.codec`` checks at import that every field here matches its
schema, so a drift between the two fails loudly, at start-up and in tests.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from enum import StrEnum
from typing import ClassVar


def now_us() -> int:
    return time.time_ns() // 1_000


class CallEventKind(StrEnum):
    CALL_STARTED = "call_started"
    CALL_ENDED = "call_ended"
    PLAYBACK_STARTED = "playback_started"
    PLAYBACK_FINISHED = "playback_finished"
    PLAYBACK_CLEARED = "playback_cleared"
    DTMF = "dtmf"
    ENGINE_FALLBACK = "engine_fallback"
    ENGINE_ERROR = "engine_error"
    SILENCE = "silence"  # the ingress: the caller has said nothing since the agent's reply played (attributes: stage)
    PLAYBACK_PAUSED = "playback_paused"  # caller voice over a reply: held, not yet cut (attributes: reaction_ms)
    PLAYBACK_RESUMED = "playback_resumed"  # the held reply plays on (reason: resume, or grace when no resume came)


class TurnEventKind(StrEnum):
    SPEECH_STARTED = "speech_started"
    END_OF_TURN = "end_of_turn"
    BARGE_IN = "barge_in"


class TranscriptKind(StrEnum):
    PARTIAL = "partial"
    FINAL = "final"
    EARLY = "early"  # the turn so far, decoded at a pause; the agent and the sink ignore it


class ReplyKind(StrEnum):
    SENTENCE = "sentence"
    END = "end"
    CANCEL = "cancel"
    # a sentence of a reply made on the early transcript, before the turn is confirmed: synthesised and held by TTS,
    # never played, never recorded as said; a confirmed one is re-published as SENTENCE (same text, same seq)
    SPECULATIVE = "speculative"
    DISCARD = "discard"  # the turn's speculative reply will not be said: TTS drops what it holds


class AudioOutKind(StrEnum):
    AUDIO = "audio"
    END = "end"
    FILLER = "filler"  # the call's filler phrase, kept by the ingress, played only when a reply is late


# The Twilio mark the ingress sends after the filler's last frame, so a caller (and `switchboard load`) can tell the
# filler from the answer that follows it; not a sentence or reply mark, its echo changes nothing in the ingress.
FILLER_MARK = "filler"


class PlaybackKind(StrEnum):
    CLEAR = "clear"
    PAUSE = "pause"  # caller voice over a reply: stop it, keep what the caller has not heard yet
    RESUME = "resume"  # that voice was no interruption (a backchannel, a cough): play on from where it stopped


@dataclass(slots=True)
class Timings:
    speech_start_us: int | None = None
    speech_end_us: int | None = None
    turn_detected_us: int | None = None
    stt_started_us: int | None = None
    stt_finished_us: int | None = None
    agent_started_us: int | None = None
    agent_first_sentence_us: int | None = None
    tts_started_us: int | None = None
    tts_first_audio_us: int | None = None
    egress_first_audio_us: int | None = None
    pause_detected_us: int | None = None
    early_transcript_us: int | None = None
    end_decision_us: int | None = None
    end_reason: str | None = None
    speculation: str | None = None


@dataclass(slots=True)
class CallEvent:
    SCHEMA: ClassVar[str] = "call_event"
    call_id: str
    session_id: str
    kind: CallEventKind
    ts_us: int
    channel: str
    agent_id: str
    language: str
    ingress_node: str
    reply_partition: int
    caller_number: str | None = None
    turn_seq: int | None = None
    reason: str | None = None
    attributes: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class AudioFrame:
    SCHEMA: ClassVar[str] = "audio_frame"
    call_id: str
    seq: int
    ts_us: int
    sample_rate: int
    pcm: bytes
    reply_partition: int
    agent_turn_seq: int | None = None


@dataclass(slots=True)
class TurnEvent:
    SCHEMA: ClassVar[str] = "turn_event"
    call_id: str
    turn_seq: int
    kind: TurnEventKind
    ts_us: int
    speech_start_us: int
    speech_end_us: int | None = None
    cancelled_turn_seq: int | None = None
    end_reason: str | None = None
    early_audio_ms: int | None = None  # on end_of_turn: the pause the turn ended silent after (its early transcript)
    timings: Timings | None = None  # on end_of_turn: those of the turn's final speech chunk


@dataclass(slots=True)
class SpeechChunk:
    SCHEMA: ClassVar[str] = "speech_chunk"
    call_id: str
    turn_seq: int
    seq: int
    ts_us: int
    sample_rate: int
    pcm: bytes
    final: bool
    language: str
    timings: Timings | None = None
    pause: bool = False
    silent_since_pause: bool = False


@dataclass(slots=True)
class Transcript:
    SCHEMA: ClassVar[str] = "transcript"
    call_id: str
    turn_seq: int
    kind: TranscriptKind
    text: str
    language: str
    audio_ms: int
    engine: str
    ts_us: int
    confidence: float | None = None
    timings: Timings | None = None
    stands_for_turn: bool = False  # early only: the final transcript if the caller says no more (no second decode)


@dataclass(slots=True)
class AgentReply:
    SCHEMA: ClassVar[str] = "agent_reply"
    call_id: str
    turn_seq: int
    seq: int
    kind: ReplyKind
    text: str
    reply_partition: int
    engine: str
    ts_us: int
    intent: str | None = None
    voice: str | None = None
    end_call: bool = False
    timings: Timings | None = None


@dataclass(slots=True)
class AudioOut:
    SCHEMA: ClassVar[str] = "audio_out"
    call_id: str
    turn_seq: int
    seq: int
    kind: AudioOutKind
    ts_us: int
    sample_rate: int
    pcm: bytes
    end_call: bool = False
    timings: Timings | None = None


@dataclass(slots=True)
class PlaybackCommand:
    SCHEMA: ClassVar[str] = "playback_command"
    call_id: str
    kind: PlaybackKind
    through_turn_seq: int
    ts_us: int
    speech_onset_us: int


@dataclass(slots=True)
class TurnLatency:
    SCHEMA: ClassVar[str] = "turn_latency"
    call_id: str
    turn_seq: int
    ts_us: int
    timings: Timings
    response_ms: float | None = None
    processing_ms: float | None = None
    stt_ms: float | None = None
    agent_ms: float | None = None
    tts_ms: float | None = None
    bus_overhead_ms: float | None = None
    turn_detection_ms: float | None = None
    early_ms: float | None = None
    decision_ms: float | None = None


@dataclass(slots=True)
class DeadLetter:
    SCHEMA: ClassVar[str] = "dead_letter"
    source_topic: str
    partition: int
    offset: int
    value: bytes
    error: str
    service: str
    ts_us: int
    key: bytes | None = None


@dataclass(slots=True)
class DialogState:
    SCHEMA: ClassVar[str] = "dialog_state"
    call_id: str
    stage: str
    turns: int
    last_turn_seq: int
    reply_partition: int
    language: str
    ended: bool
    updated_us: int
    intent: str | None = None
    slots: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class EngineUsage:
    SCHEMA: ClassVar[str] = "engine_usage"
    call_id: str
    stage: str
    engine: str
    ts_us: int
    turn_seq: int | None = None
    llm_tokens_in: int = 0
    llm_tokens_out: int = 0
    stt_audio_seconds: float = 0.0
    tts_characters: int = 0
    cost_usd: float = 0.0


@dataclass(slots=True)
class CallSummary:
    """Post-call enrichment of one call (topic summaries), produced after its call_ended event."""

    SCHEMA: ClassVar[str] = "call_summary"
    call_id: str
    ts_us: int
    summary: str
    sentiment: float
    caller_turns: int
    goal_reached: bool
    handed_off: bool
    model: str
    intent: str | None = None
    outcome: str | None = None
    turn_sentiment: dict[str, float] = field(default_factory=dict)


Record = (
    CallEvent
    | AudioFrame
    | TurnEvent
    | SpeechChunk
    | Transcript
    | AgentReply
    | AudioOut
    | PlaybackCommand
    | TurnLatency
    | DeadLetter
    | DialogState
    | EngineUsage
    | CallSummary
)

ALL_RECORDS: tuple[type, ...] = (
    CallEvent,
    AudioFrame,
    TurnEvent,
    SpeechChunk,
    Transcript,
    AgentReply,
    AudioOut,
    PlaybackCommand,
    TurnLatency,
    DeadLetter,
    DialogState,
    EngineUsage,
    CallSummary,
)
