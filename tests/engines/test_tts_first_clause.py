"""First agent audio sooner: a sentence's first clause is synthesised and sent alone, the rest while it plays.

With the real offline voice (Piper, joe-medium, at the fixed gain the TTS service uses), through the TTS
processor's logic. The order of events is asserted, not time: what was published before what was synthesised.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import numpy as np
import pytest
from prometheus_client import REGISTRY

from processors.tts.first_clause import SILENCE, FirstClauseTts
from processors.tts.logic import Synthesizer
from processors.tts.phrase_cache import CLAUSE_PHRASES, DEFAULT_PHRASES, CachedTts, PhraseCache
from processors.tts.piper import FIXED_GAIN, PiperEngine
from switchboard.audio import BUS_RATE, pcm16_to_array
from switchboard.bus import Correlation
from switchboard.records import AgentReply, AudioOut, AudioOutKind, CallEvent, CallEventKind, ReplyKind, Timings, now_us
from switchboard.runner import Incoming
from switchboard.topics import REPLIES

CONFIRM = "Just to confirm, I'll book you in for Monday at 3:30 PM."
CONFIRM_REST = "I'll book you in for Monday at 3:30 PM."
BOOKED = "You're booked for Thursday at 10 AM."


@pytest.fixture(scope="module")
def voice() -> PiperEngine:
    return PiperEngine(gain=FIXED_GAIN)


class Recorded:
    """The real voice, noting when each synthesis starts and ends (and running a hook as one starts)."""

    name = "piper"

    def __init__(self, engine: PiperEngine, events: list, on_start: Callable[[str], None] | None = None) -> None:
        self.engine, self.events, self.on_start = engine, events, on_start

    async def synthesize(self, text: str, voice: str | None) -> AsyncIterator[np.ndarray]:
        self.events.append(("synthesis started", text, now_us()))
        if self.on_start:
            self.on_start(text)
        async for audio in self.engine.synthesize(text, voice):
            yield audio
        self.events.append(("synthesis done", text, now_us()))


def reply(text: str, call_id: str = "CA1", turn: int = 3, kind: ReplyKind = ReplyKind.SENTENCE) -> Incoming:
    r = AgentReply(call_id, turn, 0, kind, text, 4, "policy", 0, timings=Timings(agent_first_sentence_us=1))
    return Incoming(r, Correlation(call_id=call_id), REPLIES, 0, 0, 0)


def hang_up(call_id: str = "CA1") -> CallEvent:
    return CallEvent(call_id, "s", CallEventKind.CALL_ENDED, now_us(), "twilio", "clinic", "en-US", "node-a", 4)


async def speak(tts: Synthesizer, msg: Incoming, events: list, on_audio: Callable[[], object] | None = None) -> list:
    """The AudioOut records the processor publishes, each noted in ``events`` as it is yielded."""
    audio = []
    async for out in tts.handle(msg):
        if isinstance(out.record, AudioOut) and out.record.kind is AudioOutKind.AUDIO:
            events.append(("published", out.record.seq, now_us()))
            audio.append(out.record)
            if on_audio is not None and len(audio) == 1:
                await on_audio()
    return audio


def samples(records: list[AudioOut]) -> np.ndarray:
    return np.concatenate([np.zeros(0, np.int16), *(pcm16_to_array(r.pcm) for r in records)])


def seconds(records: list[AudioOut]) -> float:
    return len(samples(records)) / BUS_RATE


def sample_count(name: str, labels: dict[str, str] | None = None) -> float:
    return REGISTRY.get_sample_value(name, labels or {}) or 0.0


async def test_the_first_clause_is_published_before_the_rest_is_synthesised(voice):
    events: list = []
    tts = Synthesizer(FirstClauseTts(Recorded(voice, events)), chunk_ms=200)
    audio = await speak(tts, reply(CONFIRM), events)

    steps = [e[:2] for e in events]
    rest_started = steps.index(("synthesis started", CONFIRM_REST))
    rest_done = steps.index(("synthesis done", CONFIRM_REST))
    assert steps[0] == ("synthesis started", "Just to confirm,")
    assert steps.index(("synthesis done", "Just to confirm,")) < steps.index(("published", 0)) < rest_started
    # the first part (~1 s) is all published before the rest is asked for; the rest follows once made
    early = [s[1] for s in steps[:rest_started] if s[0] == "published"]
    late = [s[1] for s in steps[rest_done:] if s[0] == "published"]
    assert early == list(range(len(early))) and late == list(range(len(early), len(audio)))
    assert 0.8 <= seconds(audio[: len(early)]) <= 1.5 and seconds(audio) >= 3.0


async def test_first_audio_is_stamped_on_the_first_chunk_of_the_first_part(voice):
    events: list = []
    tts = Synthesizer(FirstClauseTts(Recorded(voice, events)))
    audio = await speak(tts, reply(CONFIRM), events)

    stamped = [r for r in audio if r.timings is not None]
    assert stamped == [audio[0]]
    rest_started_us = next(e[2] for e in events if e[:2] == ("synthesis started", CONFIRM_REST))
    t = audio[0].timings
    assert t.tts_started_us <= t.tts_first_audio_us <= rest_started_us


def _silent_runs(audio: np.ndarray, window_ms: int = 10) -> list[tuple[int, int]]:
    """(start, length) in ms of the runs of 10 ms windows under −40 dBFS."""
    w = BUS_RATE * window_ms // 1000
    quiet = np.abs(audio[: len(audio) // w * w].astype(np.int32)).reshape(-1, w).max(axis=1) <= SILENCE
    runs, start = [], None
    for i, q in enumerate([*quiet, False]):
        if q and start is None:
            start = i
        elif not q and start is not None:
            runs.append((start * window_ms, (i - start) * window_ms))
            start = None
    return runs


def _pause_around(audio: np.ndarray, at_ms: int) -> int:
    return next(length for start, length in _silent_runs(audio) if start <= at_ms <= start + length)


def _level_db(audio: np.ndarray) -> float:
    return 20 * np.log10(np.sqrt(np.mean(audio.astype(np.float64) ** 2)) / 32768)


# at a comma: the voice's own pause; between two words: a word gap (and the voice draws out the last word of a
# part a little, so the whole is up to ~13 % longer than the sentence made in one piece)
@pytest.mark.parametrize(("text", "pause_ms", "longer"), [(CONFIRM, (150, 400), 0.10), (BOOKED, (20, 120), 0.20)])
async def test_the_join_neither_clicks_nor_gaps(voice, text, pause_ms, longer):
    parts = [a async for a in FirstClauseTts(voice).synthesize(text, None)]
    whole = np.concatenate([a async for a in voice.synthesize(text, None)])
    assert len(parts) == 2
    joined, seam = np.concatenate(parts), len(parts[0])

    # no discontinuity: both sides of the seam are quiet (faded), so nothing can click
    edge = BUS_RATE * 8 // 1000
    assert np.abs(joined[seam - edge : seam + edge].astype(np.int32)).max() <= SILENCE
    assert abs(int(parts[0][-1])) < 50 and abs(int(parts[1][0])) < 50

    # the pause at the seam: the voice's own pause at a comma, a word gap between two words
    pause = _pause_around(joined, seam * 1000 // BUS_RATE)
    assert pause_ms[0] <= pause <= pause_ms[1]
    if text == CONFIRM:  # close to the pause the voice makes at that comma in the whole sentence
        whole_pause = max(length for start, length in _silent_runs(whole) if 500 < start < 1500)
        assert abs(pause - whole_pause) <= 150

    # as long and as loud as the sentence made whole
    assert len(joined) == pytest.approx(len(whole), rel=longer)
    assert _level_db(joined) == pytest.approx(_level_db(whole), abs=2.0)


async def test_a_cancel_between_the_parts_stops_the_rest_being_made(voice):
    events: list = []
    tts = Synthesizer(FirstClauseTts(Recorded(voice, events)))
    before = sample_count("switchboard_tts_barge_in_cuts_total")
    cancel = reply("", kind=ReplyKind.CANCEL).record

    audio = await speak(tts, reply(CONFIRM), events, on_audio=lambda: tts.on_watched(cancel))  # the watcher's CANCEL

    assert [e[1] for e in events if e[0] == "synthesis started"] == ["Just to confirm,"]
    assert seconds(audio) <= 1.5  # the first part only (~1.0 s; the whole sentence is ~3.6 s)
    assert sample_count("switchboard_tts_barge_in_cuts_total") == before + 1
    # the rest of the cancelled reply is skipped too; the next turn is spoken
    assert await speak(tts, reply("And one more thing for you to know today, it is quick."), events) == []
    assert await speak(tts, reply("Goodbye!", turn=4), events)


async def test_a_hang_up_between_the_parts_stops_the_rest_being_made(voice):
    events: list = []
    tts = Synthesizer(FirstClauseTts(Recorded(voice, events)))
    before = sample_count("switchboard_ended_call_work_skipped_total", {"service": "tts", "what": "synthesis_cut"})

    audio = await speak(tts, reply(CONFIRM, call_id="CA2"), events, on_audio=lambda: tts.on_watched(hang_up("CA2")))

    assert [e[1] for e in events if e[0] == "synthesis started"] == ["Just to confirm,"]
    assert seconds(audio) <= 1.5
    labels = {"service": "tts", "what": "synthesis_cut"}
    assert sample_count("switchboard_ended_call_work_skipped_total", labels) == before + 1


async def test_a_cancel_while_the_rest_is_being_made_drops_it(voice):
    events: list = []
    tts = Synthesizer(FirstClauseTts(Recorded(voice, events)))
    cancel = reply("", call_id="CA3", kind=ReplyKind.CANCEL).record

    def barge_in(text: str) -> None:
        if text != "Just to confirm,":  # the rest has started: the watcher's CANCEL arrives now
            asyncio.get_running_loop().call_soon(lambda: asyncio.ensure_future(tts.on_watched(cancel)))

    tts.engine = FirstClauseTts(Recorded(voice, events, on_start=barge_in))
    audio = await speak(tts, reply(CONFIRM, call_id="CA3"), events)

    assert seconds(audio) <= 1.5  # the rest was being made when the CANCEL came: none of it is published
    assert ("synthesis done", CONFIRM_REST) not in [e[:2] for e in events]


async def test_a_cached_opener_plays_from_the_cache_and_a_listed_sentence_is_never_cut(voice):
    events: list = []
    cache = PhraseCache([*DEFAULT_PHRASES, *CLAUSE_PHRASES])
    await cache.warm(voice, None)
    tts = Synthesizer(FirstClauseTts(CachedTts(Recorded(voice, events), cache)))

    audio = await speak(tts, reply("Sure, I can help with that."), events)
    assert [e[1] for e in events if e[0] == "synthesis started"] == ["I can help with that."]
    assert len(audio) >= 2 and audio[0].timings is not None

    events.clear()
    listed = "I can book, reschedule or cancel an appointment, or tell you our opening hours."
    audio = await speak(tts, reply(listed, turn=4), events)
    assert [e for e in events if e[0] != "published"] == []  # whole, from the cache: nothing synthesised
    cached = cache.get("piper", None, listed)
    assert cached is not None and np.array_equal(samples(audio), cached)


def test_the_setting_picks_the_first_clause_voice(voice, monkeypatch):
    from processors.tts.main import create_engine
    from processors.tts.settings import TtsSettings

    made: list[dict] = []
    monkeypatch.setattr("processors.tts.piper.PiperEngine", lambda *a, **k: made.append(k) or voice)
    on = create_engine(TtsSettings(tts_engine="piper", phrase_cache=False))
    off = create_engine(TtsSettings(tts_engine="piper", phrase_cache=False, tts_first_clause=False))
    assert TtsSettings().tts_first_clause and isinstance(on, FirstClauseTts) and on.engine is voice
    assert off is voice
    assert made == [{"gain": FIXED_GAIN}, {"gain": None}]  # one fixed gain, so the parts match in level


async def test_on_the_broker_a_barge_in_cancel_reaches_a_sentence_being_made_through_the_watcher(voice, bus_settings):
    from aiokafka import AIOKafkaProducer

    from switchboard.bus import Publisher
    from switchboard.runner import Runner
    from switchboard.topics import AUDIO_OUT
    from tests.spine.test_runner import read_topic, wait_until

    events: list = []
    tts = Synthesizer(FirstClauseTts(Recorded(voice, events)))
    runner = Runner(bus_settings, tts)
    task = asyncio.create_task(runner.run())
    producer = AIOKafkaProducer(bootstrap_servers=bus_settings.kafka_bootstrap, linger_ms=0)
    await producer.start()

    async def audio_of(call_id: str) -> list[AudioOut]:
        records = await read_topic(bus_settings, AUDIO_OUT)
        return [r for r in records if isinstance(r, AudioOut) and r.call_id == call_id]

    try:
        publisher = Publisher(bus_settings, producer, "test")
        await (await publisher.send(reply("Goodbye!", call_id="CAwarm").record, Correlation(call_id="CAwarm")))
        await wait_until(lambda: audio_of("CAwarm"), 60, "the worker to be up")
        # a long sentence, and right behind it in the same partition the CANCEL of a barge-in: handled in order,
        # the CANCEL would wait for the whole sentence; the watcher sees it while the sentence is being made
        long = ("Just to confirm, I'll book you in for Monday at 3:30 PM with Doctor Jones, who will see you in room "
                "four on the second floor; please bring your insurance card, a list of your medicines and any "
                "letters from other doctors, and arrive ten minutes early so that we can update your details.")
        await publisher.send(reply(long, call_id="CAbarge").record, Correlation(call_id="CAbarge"))
        await (await publisher.send(reply("", call_id="CAbarge", kind=ReplyKind.CANCEL).record,
                                    Correlation(call_id="CAbarge")))
        await wait_until(lambda: asyncio.sleep(0, "CAbarge" in tts.cancelled), 60, "the cancel to reach tts")
        await wait_until(lambda: asyncio.sleep(0, runner.inflight.count == 0), 60, "nothing left in flight")

        # at most the first clause (none if the CANCEL came while it was being made); the ~17 s sentence was cut
        assert seconds(await audio_of("CAbarge")) <= 1.5
        assert [e[1] for e in events if e[0] == "synthesis done"] in (["Goodbye!"], ["Goodbye!", "Just to confirm,"])
    finally:
        await producer.stop()
        runner.stop()
        await task
