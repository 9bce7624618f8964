"""The caller never waits in silence: a caller who spoke and hears no agent audio ``filler_after_ms`` later hears the
call's filler phrase, once per turn, then the reply after it (ingress/filler.py; README "Faults the caller hears").

The real ingress (in this process) on the real broker and a caller on a Twilio media stream (tests/faults/
test_idempotent_ends.py); the test plays TTS, which sends each call its filler at call start and its replies."""

from __future__ import annotations

import asyncio
import time

import numpy as np

from switchboard.audio import BUS_RATE
from switchboard.records import FILLER_MARK, AudioOutKind, CallEventKind
from tests.faults.test_idempotent_ends import Call, call_on, ingress, metric, rms, tone

FILLER_AFTER_S = 0.6
FILLER_AMPLITUDE, REPLY_AMPLITUDE = 2000, 12000  # tell the two apart by loudness at the caller's end
FILLER_FRAMES = 40  # 0.8 s
QUIET, BETWEEN = 300, 5000  # RMS (8 kHz int16) below which a frame is silence; between filler and reply


def caller_speech(seconds: float = 0.6) -> np.ndarray:
    return tone(seconds, 8000, rate=8000, hz=220.0)


def kinds(call: Call, since: float) -> list[str]:
    """What the caller heard after ``since``, frame by frame: filler or reply."""
    return ["reply" if rms(f) > BETWEEN else "filler" for _, f in call.line.heard(since, loud=QUIET)]


async def with_filler(call: Call) -> None:
    await call.audio(-1, 0, tone(FILLER_FRAMES * 0.02, FILLER_AMPLITUDE), kind=AudioOutKind.FILLER)
    await asyncio.sleep(0.3)  # on the node before the caller speaks, as TTS sends it at call start


async def test_a_late_reply_is_preceded_by_one_filler_per_turn_never_overlapping(broker, tmp_path) -> None:
    async with ingress(broker, tmp_path, filler_after_ms=int(FILLER_AFTER_S * 1000)) as ing, call_on(ing) as call:
        played = metric("switchboard_fillers_total", reason="no_agent_audio")
        await with_filler(call)
        await call.line.say(caller_speech())
        spoke = call.line.speech_end
        while not call.line.heard(spoke, loud=QUIET) and time.monotonic() - spoke < 3:
            await asyncio.sleep(0.01)
        waited = call.line.heard(spoke, loud=QUIET)[0][0] - spoke
        print(f"\nfiller heard {waited:.2f} s after the caller's speech ended (setting {FILLER_AFTER_S} s)")
        assert FILLER_AFTER_S - 0.1 < waited < FILLER_AFTER_S + 0.5

        await call.reply(turn=11, chunks=3, amplitude=REPLY_AMPLITUDE)  # the reply comes while the filler plays
        await call.line.quiet(1.5, expect_audio=True)
        heard = kinds(call, spoke)
        assert heard == ["filler"] * FILLER_FRAMES + ["reply"] * 30, "the whole filler, then the whole reply"
        # the filler ends with its own mark, between its last frame and the reply's first: a caller can tell them apart
        loud = call.line.heard(spoke, loud=QUIET)
        filler_end, reply_start = loud[FILLER_FRAMES - 1][0], loud[FILLER_FRAMES][0]
        [filler_mark] = [t for t, name in call.line.marks if name == FILLER_MARK and t >= spoke]
        assert filler_end <= filler_mark <= reply_start
        assert metric("switchboard_fillers_total", reason="no_agent_audio") == played + 1
        fillers = [e for e in await call.events(CallEventKind.PLAYBACK_STARTED) if e.attributes.get("playback")]
        assert len(fillers) == 1 and fillers[0].attributes["playback"] == "filler", "recorded for analytics"
        frames = await call.frames()
        assert not [f for f in frames if f.agent_turn_seq == -1], "the filler is no reply: no barge-in over it"

        # the next turn's reply is late too: its own filler, once, however long the wait
        await call.line.say(caller_speech())
        second = call.line.speech_end
        await asyncio.sleep(FILLER_AFTER_S + FILLER_FRAMES * 0.02 + 1.5)
        assert kinds(call, second) == ["filler"] * FILLER_FRAMES
        assert metric("switchboard_fillers_total", reason="no_agent_audio") == played + 2


async def test_no_filler_once_the_reply_has_started(broker, tmp_path) -> None:
    async with ingress(broker, tmp_path, filler_after_ms=int(FILLER_AFTER_S * 1000)) as ing, call_on(ing) as call:
        played = metric("switchboard_fillers_total", reason="no_agent_audio")
        await with_filler(call)
        await call.line.say(caller_speech())
        spoke = call.line.speech_end
        await asyncio.sleep(0.2)
        # a reply on time, longer than the filler's wait, and a short one that is over before it is due
        await call.reply(turn=11, chunks=5, amplitude=REPLY_AMPLITUDE)
        await asyncio.sleep(FILLER_AFTER_S + 1.5)
        assert kinds(call, spoke) == ["reply"] * 50
        await call.line.say(caller_speech())
        spoke = call.line.speech_end
        await call.reply(turn=12, chunks=1, amplitude=REPLY_AMPLITUDE)
        await asyncio.sleep(FILLER_AFTER_S + 1.0)
        assert kinds(call, spoke) == ["reply"] * 10
        assert metric("switchboard_fillers_total", reason="no_agent_audio") == played


async def test_no_filler_for_a_caller_who_hung_up(broker, tmp_path) -> None:
    async with ingress(broker, tmp_path, filler_after_ms=int(FILLER_AFTER_S * 1000)) as ing, call_on(ing) as call:
        played = metric("switchboard_fillers_total", reason="no_agent_audio")
        await with_filler(call)
        await call.line.say(caller_speech())
        await call.line.ws.close()  # the caller hangs up before the filler is due
        await asyncio.sleep(FILLER_AFTER_S + 0.8)
        assert call.session.ended.is_set()
        assert metric("switchboard_fillers_total", reason="no_agent_audio") == played
        assert not [e for e in await call.events(CallEventKind.PLAYBACK_STARTED) if e.attributes.get("playback")]


async def test_speech_over_agent_audio_and_quiet_lines_get_no_filler(broker, tmp_path) -> None:
    async with ingress(broker, tmp_path, filler_after_ms=int(FILLER_AFTER_S * 1000)) as ing, call_on(ing) as call:
        played = metric("switchboard_fillers_total", reason="no_agent_audio")
        await with_filler(call)
        await call.reply(turn=0, chunks=10, amplitude=REPLY_AMPLITUDE)  # the greeting (2 s)
        await asyncio.sleep(0.2)
        await call.line.say(caller_speech(0.8))  # "mm-hmm" over the greeting: no turn of the caller's waits
        await asyncio.sleep(2.0 + FILLER_AFTER_S)
        await call.line.say(tone(1.0, 30, rate=8000))  # line noise (-61 dBFS) is not speech
        await asyncio.sleep(FILLER_AFTER_S + 0.5)
        assert metric("switchboard_fillers_total", reason="no_agent_audio") == played
        assert not [f for f in kinds(call, 0.0) if f == "filler"]


async def test_a_filler_due_for_a_call_that_holds_none_is_counted_as_unavailable(broker, tmp_path) -> None:
    async with ingress(broker, tmp_path, filler_after_ms=int(FILLER_AFTER_S * 1000)) as ing, call_on(ing) as call:
        unavailable = metric("switchboard_fillers_total", reason="unavailable")
        await call.line.say(caller_speech())  # TTS was down when the call started: no filler was sent
        await asyncio.sleep(FILLER_AFTER_S + 0.5)
        assert metric("switchboard_fillers_total", reason="unavailable") == unavailable + 1
        assert not call.line.heard(0.0, loud=QUIET)


def test_the_speech_cue_costs_microseconds_per_20_ms_frame() -> None:
    """Issue 11 counts ingress CPU per call-second: the cue adds one dot product per caller message."""
    from ingress.filler import PlaybackPolicy, SpeechCue

    cue = SpeechCue(PlaybackPolicy())
    frame = tone(0.02, 8000, rate=BUS_RATE)
    n = 20_000
    start = time.process_time()
    for _ in range(n):
        cue.hear(frame)
    per_frame_us = (time.process_time() - start) / n * 1e6
    print(f"\nspeech cue: {per_frame_us:.1f} µs CPU per 20 ms frame = {per_frame_us * 50 / 1e4:.3f} % of a core "
          "per call")
    assert cue.due_at() is not None, "a loud frame arms it"
