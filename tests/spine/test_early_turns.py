"""Ending a turn by meaning, without Kafka: the turn detector and STT wired back to back in-process.

Real engines throughout: Piper speaks the caller (through the phone path), Silero hears voice,
Smart Turn judges prosody, Moonshine makes the early and final transcripts. Records are 20 ms so a
turn's end can be read off in frames: the silence a turn waited is the time from its last voiced
frame (``speech_end_us``) to the frame whose handling ended it.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import numpy as np
import pytest

from processors.stt.logic import Transcriber
from processors.stt.moonshine import MoonshineEngine
from processors.turns import vad
from processors.turns.logic import TurnDetector
from processors.turns.profiles import ENGLISH
from processors.turns.settings import TurnsSettings
from processors.turns.smart_turn import SmartTurn
from switchboard.audio import array_to_pcm16, read_wav, resample
from switchboard.bus import Correlation
from switchboard.records import (
    AudioFrame,
    SpeechChunk,
    Timings,
    Transcript,
    TranscriptKind,
    TurnEvent,
    TurnEventKind,
)
from switchboard.runner import Incoming
from switchboard.topics import AUDIO_IN, SPEECH, TRANSCRIPTS
from tests.conftest import SHARED_AUDIO
from tests.spine.pauses import HESITATIONS, RATE, hesitating, phone, spoken

FRAME = RATE // 50  # 20 ms
T0 = 1_000_000


@pytest.fixture(scope="module")
def piper():
    from processors.tts.piper import PiperEngine

    return PiperEngine()


@pytest.fixture(scope="module")
def smart_turn() -> SmartTurn:
    return SmartTurn()


@pytest.fixture(scope="module")
def moonshine() -> MoonshineEngine:
    return MoonshineEngine()


def _call(*parts: np.ndarray) -> np.ndarray:
    """1 s of silence, the caller's audio over the phone, 1.5 s of silence: whole 20 ms frames."""
    audio = np.concatenate([np.zeros(RATE, np.int16), *[phone(p) for p in parts], np.zeros(RATE * 3 // 2, np.int16)])
    return audio[: len(audio) // FRAME * FRAME]


@dataclass
class Trace:
    """What came out, and the index of the 20 ms frame being handled (or just handled) when it did."""

    outs: list[tuple[int, object]] = field(default_factory=list)
    early: list[Transcript] = field(default_factory=list)
    finals: list[Transcript] = field(default_factory=list)

    def records(self, kind: type) -> list:
        return [r for _, r in self.outs if isinstance(r, kind)]

    def ends(self) -> list[tuple[int, TurnEvent]]:
        return [(k, r) for k, r in self.outs if isinstance(r, TurnEvent) and r.kind is TurnEventKind.END_OF_TURN]

    def silence_waited_ms(self) -> list[int]:
        """Per ended turn: the caller's audio time from its last voiced frame to the frame that ended it."""
        return [(T0 + k * 20_000 - e.speech_end_us) // 1000 for k, e in self.ends()]


async def _converse(
    detector: TurnDetector, audio: np.ndarray, stt: Transcriber | None = None, delay_frames: int = 0
) -> Trace:
    """Frames into the detector, its chunks into STT, STT's early transcripts back ``delay_frames`` later.

    Smart Turn is awaited after each frame, so it is always ready within the frame of its pause and
    a run decides the same every time; the early transcript's delay is what a test varies."""
    trace = Trace()
    due: list[tuple[int, Transcript]] = []
    corr = Correlation(call_id="CA1")

    async def to_stt(k: int, chunk: SpeechChunk) -> None:
        if stt is None:
            return
        async for out in stt.handle(Incoming(chunk, corr.child(chunk.turn_seq), SPEECH, 0, k, 0)):
            r = out.record
            if isinstance(r, Transcript) and r.kind is TranscriptKind.EARLY:
                trace.early.append(r)
                due.append((k + delay_frames, r))
            elif isinstance(r, Transcript) and r.kind is TranscriptKind.FINAL:
                trace.finals.append(r)

    async def collect(k: int, msg: Incoming) -> None:
        async for out in detector.handle(msg):
            trace.outs.append((k, out.record))
            if isinstance(out.record, SpeechChunk):
                await to_stt(k, out.record)

    for k in range(len(audio) // FRAME):
        frame = AudioFrame("CA1", k, T0 + k * 20_000, RATE, array_to_pcm16(audio[k * FRAME : (k + 1) * FRAME]), 3)
        await collect(k, Incoming(frame, corr, AUDIO_IN, 0, k, 0))
        call = detector.calls.get("CA1")
        if call is not None and call.pause is not None and call.pause.smart is not None:
            await asyncio.wait({call.pause.smart})
        for when, transcript in [d for d in due if d[0] <= k]:
            due.remove((when, transcript))
            await collect(k, Incoming(transcript, corr, TRANSCRIPTS, 0, k, 0))
    return trace


def _at(ms: int) -> int:
    """The silence at the first 20 ms frame that reaches ``ms`` (silence is counted in whole frames)."""
    return -(-ms // 20) * 20


def _detector(smart_turn: SmartTurn | None, **settings) -> TurnDetector:
    s = TurnsSettings(**settings)
    return TurnDetector(s, vad.factory(s), smart_turn)


async def test_a_pause_in_speech_sends_the_turn_so_far_to_stt_as_a_pause_chunk(piper, smart_turn):
    trace = await _converse(_detector(smart_turn), _call(hesitating(piper, HESITATIONS[1])))
    chunks = trace.records(SpeechChunk)
    pauses = [c for c in chunks if c.pause]
    assert pauses, "no pause chunk"
    assert all(not c.final for c in pauses) and chunks[-1].final
    assert [c.seq for c in chunks] == list(range(len(chunks)))  # one turn, chunks in order
    # the first pause chunk ends 200 ms into the hesitation: the audio so far, the silence included
    sent = sum(len(c.pcm) for c in chunks[: chunks.index(pauses[0]) + 1]) // 2
    assert 1.0 < sent / RATE < 2.5


async def test_a_complete_sentence_ends_at_complete_end_ms_once_its_early_transcript_agrees(
    piper, smart_turn, moonshine
):
    trace = await _converse(_detector(smart_turn), _call(spoken(piper, "Yes, that's right.")), Transcriber(moonshine))
    [(_, end)] = trace.ends()
    assert end.end_reason == "complete"
    assert trace.silence_waited_ms() == [_at(ENGLISH.complete_end_ms)]  # 250 ms of the caller's silence, not 700
    [final] = trace.finals
    assert "right" in final.text.lower()
    # nothing was voiced after the last pause: the final is that pause's early transcript, not a second decode
    assert final.text == trace.early[-1].text and final.timings.early_transcript_us is not None
    assert final.timings.end_reason == "complete" and final.timings.end_decision_us is not None
    # ...and the end-of-turn event says so itself: it names that pause, whose early transcript stands for the turn,
    # so the agent can say its speculative reply a hop before the final arrives (processors/agent/speculation.py)
    assert trace.early[-1].stands_for_turn and end.early_audio_ms == trace.early[-1].audio_ms
    [last] = [c for c in trace.records(SpeechChunk) if c.final]
    assert end.timings == last.timings and end.timings.turn_detected_us == end.ts_us


async def test_an_early_transcript_after_the_threshold_ends_the_turn_at_the_next_frame(piper, smart_turn, moonshine):
    # the decode came back 400 ms after the pause (600 ms into the silence): the turn ends at the next frame, not at
    # 700 ms; not on the transcript itself, which may arrive before frames that hold more speech
    trace = await _converse(
        _detector(smart_turn), _call(spoken(piper, "Yes, that's right.")), Transcriber(moonshine), delay_frames=20
    )
    [(_, end)] = trace.ends()
    assert end.end_reason == "complete"
    assert trace.silence_waited_ms() == [200 + 400 + 20]


async def test_an_early_transcript_left_hanging_keeps_listening_until_incomplete_end_ms(piper, smart_turn, moonshine):
    trace = await _converse(_detector(smart_turn), _call(spoken(piper, "My name is")), Transcriber(moonshine))
    [(_, end)] = trace.ends()
    assert end.end_reason == "dangling:is", trace.early
    assert trace.silence_waited_ms() == [_at(ENGLISH.incomplete_end_ms)]


async def test_whole_words_in_an_unfinished_voice_end_the_turn_at_uncertain_end_ms(smart_turn, moonshine):
    # A real reader stops at "...young man," with the pitch of a sentence going on (Smart Turn < 0.2): the voice says
    # unfinished, and until the words come that holds the turn for the longest silence; the words make a whole
    # sentence, so once they come the turn ends at the profile's middle silence, neither 250 ms nor 1.1 s.
    speech, rate = read_wav(SHARED_AUDIO / "librivox-0880.wav")
    audio = _call(resample(speech, rate, RATE))
    trace = await _converse(_detector(smart_turn), audio, Transcriber(moonshine))
    [(_, end)] = trace.ends()
    assert end.end_reason == "prosody", trace.early
    assert trace.silence_waited_ms() == [_at(ENGLISH.uncertain_end_ms)]
    assert ENGLISH.complete_end_ms < ENGLISH.uncertain_end_ms < ENGLISH.incomplete_end_ms
    # with no transcript at all, the same voice alone holds the turn for the longest silence
    trace = await _converse(_detector(smart_turn), audio)
    assert [e.end_reason for _, e in trace.ends()] == ["prosody"]
    assert trace.silence_waited_ms() == [_at(ENGLISH.incomplete_end_ms)]


async def test_voice_after_a_pause_voids_its_judgement_and_the_sentence_stays_one_turn(piper, smart_turn, moonshine):
    hesitation = HESITATIONS[1]  # "Can I come in on … Tuesday morning?"
    trace = await _converse(_detector(smart_turn), _call(hesitating(piper, hesitation)), Transcriber(moonshine))
    assert len(trace.ends()) == 1
    assert len([c for c in trace.records(SpeechChunk) if c.pause]) >= 2  # at the hesitation, and at the end
    assert len(trace.early) >= 2 and "tuesday" not in trace.early[0].text.lower()
    [final] = trace.finals
    assert all(word in final.text.lower() for word in hesitation.heard), final.text
    assert final.text != trace.early[0].text  # the stale early result of the hesitation is not the turn's
    [(_, end)] = trace.ends()
    assert end.early_audio_ms == trace.early[-1].audio_ms != trace.early[0].audio_ms  # the last pause, not the first


async def test_the_final_is_decoded_whole_when_the_caller_spoke_after_the_last_pause(piper, moonshine):
    """STT alone: the hesitation's early result is dropped when the final says voice came after it."""
    h = HESITATIONS[0]
    first, second = phone(spoken(piper, h.first)), phone(spoken(piper, h.second))
    pause = np.concatenate([first, np.zeros(RATE // 5, np.int16)])
    chunks = [
        SpeechChunk("CA1", 5, 0, 0, RATE, array_to_pcm16(pause), False, "en-US", pause=True),
        SpeechChunk("CA1", 5, 1, 0, RATE, array_to_pcm16(second), False, "en-US"),
        SpeechChunk("CA1", 5, 2, 0, RATE, b"", True, "en-US", silent_since_pause=False),
    ]
    stt = Transcriber(moonshine)
    outs = []
    for k, chunk in enumerate(chunks):
        outs += [o.record async for o in stt.handle(Incoming(chunk, Correlation(call_id="CA1"), SPEECH, 0, k, 0))]
    [early] = [r for r in outs if isinstance(r, Transcript) and r.kind is TranscriptKind.EARLY]
    [final] = [r for r in outs if isinstance(r, Transcript) and r.kind is TranscriptKind.FINAL]
    assert early.audio_ms == len(pause) * 1000 // RATE  # names its pause by the audio up to it
    assert "friday" not in early.text.lower() and all(w in final.text.lower() for w in h.heard), final.text
    assert final.timings.early_transcript_us is None  # decoded, not reused


async def test_a_backchannel_turn_closes_its_stt_stream_without_a_transcript(piper, moonshine):
    """"Uh-huh" over the agent takes no turn (processors/turns): its final chunk says so, and STT lets the turn go, so
    nothing reaches the agent and the partition's commit floor moves past the turn."""
    pcm = array_to_pcm16(phone(spoken(piper, "Uh-huh.")))
    chunks = [
        SpeechChunk("CA1", 7, 0, 0, RATE, pcm, False, "en-US", pause=True),
        SpeechChunk("CA1", 7, 1, 0, RATE, b"", True, "en-US", Timings(end_reason="backchannel"),
                    silent_since_pause=True),
    ]
    stt = Transcriber(moonshine)
    outs = []
    for k, chunk in enumerate(chunks):
        outs += [o.record async for o in stt.handle(Incoming(chunk, Correlation(call_id="CA1"), SPEECH, 0, 40 + k, 0))]
        if k == 0:
            assert stt.commit_floor(SPEECH, 0) == 40  # the open turn holds its first chunk's offset
    assert [r.kind for r in outs if isinstance(r, Transcript)] == [TranscriptKind.EARLY]  # no final for the agent
    assert stt.commit_floor(SPEECH, 0) is None


async def test_with_no_early_transcript_prosody_or_the_fixed_timeout_decides(piper, smart_turn):
    finished, unfinished = "My name is", "I was wondering if you could,"
    samples = {text: _call(spoken(piper, text)) for text in (finished, unfinished)}
    assert smart_turn.probability(samples[finished][: -RATE * 3 // 2 + RATE // 5]) >= ENGLISH.smart_turn_threshold
    assert smart_turn.probability(samples[unfinished][: -RATE * 3 // 2 + RATE // 5]) < ENGLISH.smart_turn_threshold
    # heard as finished, but no transcript came to confirm it: the old fixed silence
    trace = await _converse(_detector(smart_turn), samples[finished])
    assert [e.end_reason for _, e in trace.ends()] == ["timeout"]
    assert trace.silence_waited_ms() == [_at(TurnsSettings().end_of_turn_ms)]
    # heard as unfinished: Smart Turn alone holds the turn open for the longer silence
    trace = await _converse(_detector(smart_turn), samples[unfinished])
    assert [e.end_reason for _, e in trace.ends()] == ["prosody"]
    assert trace.silence_waited_ms() == [_at(ENGLISH.incomplete_end_ms)]
    # without Smart Turn at all: the fixed silence, as before
    trace = await _converse(_detector(None), samples[unfinished])
    assert [e.end_reason for _, e in trace.ends()] == ["timeout"]


async def test_replaying_the_same_frames_and_transcripts_gives_the_same_turns_and_decisions(
    piper, smart_turn, moonshine
):
    audio = _call(hesitating(piper, HESITATIONS[0]), np.zeros(RATE, np.int16), spoken(piper, "Yes, that's right."))

    def summary(trace: Trace) -> list:
        events = [(e.kind, e.turn_seq, e.speech_start_us, e.speech_end_us, e.end_reason)
                  for e in trace.records(TurnEvent)]
        chunks = [(c.turn_seq, c.seq, c.pause, c.final, c.silent_since_pause, c.pcm)
                  for c in trace.records(SpeechChunk)]
        return [events, chunks, trace.silence_waited_ms(), [t.text for t in trace.finals]]

    runs = [await _converse(_detector(smart_turn), audio, Transcriber(moonshine), delay_frames=5) for _ in range(2)]
    assert len(runs[0].ends()) == 2
    assert summary(runs[0]) == summary(runs[1])


def test_readers_of_other_schema_versions_read_the_new_records():
    """Schema evolution. Readers without the new fields skip them. An enum symbol a reader does not know takes
    the *reader's* default (Avro's rule): this version's TranscriptKind has one (partial), so its readers will
    read a later kind as partial; a reader of the previous version (no default) must take this schema before
    early transcripts flow, as every Switchboard service does."""
    import io
    import json

    import fastavro

    from switchboard import codec
    from switchboard.records import Timings

    def edited(name: str, symbols: list[str] | None = None) -> dict:
        schema = json.loads(json.dumps(codec.schema_json(name)))
        new_timings = {"pause_detected_us", "early_transcript_us", "end_decision_us", "end_reason"}

        def walk(node):
            if isinstance(node, dict):
                if node.get("name") == "Timings" and node.get("type") == "record" and symbols is None:
                    node["fields"] = [f for f in node["fields"] if f["name"] not in new_timings]
                if node.get("name") == "TranscriptKind" and symbols is not None:
                    node["symbols"] = symbols
                for v in node.values():
                    walk(v)
            elif isinstance(node, list):
                for v in node:
                    walk(v)

        walk(schema)
        if symbols is None:
            schema["fields"] = [f for f in schema["fields"] if f["name"] not in ("pause", "silent_since_pause")]
        return fastavro.parse_schema(schema)

    def read(value: bytes, writer, reader) -> dict:
        return fastavro.schemaless_reader(io.BytesIO(value), writer, reader)

    early = Transcript("CA1", 5, TranscriptKind.EARLY, "I'd like to", "en-US", 1400, "moonshine", 1,
                       timings=Timings(speech_end_us=1, end_reason="complete"))
    old = read(codec.encode(early), codec.parsed_schema("transcript"), edited("transcript"))
    assert old["kind"] == "early" and old["timings"]["speech_end_us"] == 1 and "end_reason" not in old["timings"]
    chunk = SpeechChunk("CA1", 5, 3, 0, RATE, b"\x00\x00", False, "en-US", pause=True)
    old = read(codec.encode(chunk), codec.parsed_schema("speech_chunk"), edited("speech_chunk"))
    assert old["seq"] == 3 and "pause" not in old
    # a later release adds a kind: this release's readers take it as partial
    later = edited("transcript", ["partial", "final", "early", "revised"])
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, later, {**codec._to_avro(early), "kind": "revised"})
    assert read(buf.getvalue(), later, codec.parsed_schema("transcript"))["kind"] == "partial"
