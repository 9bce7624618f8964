"""What the turn detector keeps per call: the caller's frames around the open turn, the turn so far, the pause being
judged, and where the agent's reply stands (the false-interruption guard, README "Interruptions")."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from processors.turns.pause import Pause
from processors.turns.profiles import ENGLISH, TurnProfile
from processors.turns.vad import VoiceActivity
from switchboard.records import CallEvent

SMART_TURN_RATE = 16_000
SMART_TURN_BYTES = SMART_TURN_RATE * 8 * 2  # Smart Turn hears the last 8 s of the turn (PCM16)


@dataclass(slots=True)
class Frame:
    """One 20 ms frame of a call's stream: its number in the call, capture time and the record holding it."""

    pcm: bytes
    seq: int
    ts_us: int
    offset: int


@dataclass(slots=True)
class CallState:
    """One call as the turn detector follows it (owned by ``TurnDetector.calls``)."""

    vad: VoiceActivity
    partition: int
    call_id: str
    preroll: deque[Frame]  # bounded: max(preroll_ms, speech_start_ms) of frames before onset
    language: str = "en-US"
    started: CallEvent | None = None
    turn_seq: int = 0
    in_speech: bool = False
    onset_run: int = 0  # consecutive voiced frames before onset
    voiced_ms: int = 0  # in the current turn
    silence_ms: int = 0
    turn_ms: int = 0
    speech_start_us: int = 0
    last_voiced_us: int = 0
    last_frame_us: int = 0
    chunk_seq: int = 0
    barged: bool = False
    floor: int = 0  # first audio.in offset this call still needs
    pending: bytearray = field(default_factory=bytearray)  # the turn's audio not yet sent as a chunk
    carry: Frame | None = None  # a partial frame left by a record that was not a whole number of frames
    profile: TurnProfile = ENGLISH
    rate: int = SMART_TURN_RATE
    sent_bytes: int = 0  # the turn's audio sent to STT so far: names a pause (its early transcript's audio_ms)
    window: bytearray = field(default_factory=bytearray)  # the turn's audio, the last 8-16 s (Smart Turn's input)
    pause: Pause | None = None  # the current pause's judgement; None in speech
    last_offset: int = 0  # audio.in offset of the last record handled
    # the false-interruption guard (README "Interruptions"): the reply the caller hears now, from which frame on
    agent_now: int | None = None  # the newest frame's agent_turn_seq: the reply playing (or held) at the ingress
    reply_turn: int | None = None
    reply_partition: int = 0  # where this call's playback commands go (the caller's ingress node reads it)
    reply_first_seq: int = 0
    over: int | None = None  # the reply this caller turn was spoken over; None: the agent was silent
    guarded: bool = False  # began near the reply's start: no pause, only a real interruption stops it
    held: int | None = None  # the reply this turn paused (a pause command went out), until resumed or cleared
    resumed: bool = False  # the pause was judged no interruption and resume went out
    backchannel: bool = False  # this turn takes no turn: its end reason says so, and STT makes no transcript of it
