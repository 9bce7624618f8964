"""A caller's turn whose processing stalls (turns, stt, agent or tts killed -9 while they speak, then restarted) gets
the filler within
``SWITCHBOARD_FILLER_AFTER_MS`` (default 1.5 s) of the end of their speech, then its answer exactly once. The whole
pipeline, each service its own process, on the real broker, with its default settings; a caller on a Twilio media
stream speaking real speech (``../shared/audio``)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest

from ingress.settings import IngressSettings
from switchboard.records import CallEventKind
from switchboard.stack import Stack
from switchboard.topics import CALLS, LATENCY
from tests.faults.test_idempotent_ends_e2e import BY_NAME, SPINE, bus, first_audio_after, phone_call, spoken
from tests.pipeline import metric, running_stack
from tests.security.lone import all_records

pytestmark = pytest.mark.slow
FILLER_AFTER_S = IngressSettings.model_fields["filler_after_ms"].default / 1000
LATE_S = 0.5  # the cue's end of speech is the last loud message; the bus, playout lead and a busy box add a little


@pytest.fixture(scope="module")
def stack(broker, tmp_path_factory) -> Iterator[Stack]:
    # no silence prompts: a service kept down long on a loaded box would let the caller's silence earn a prompt, a
    # second reply this spec would count as answering twice (the prompts have their own specs)
    with running_stack(broker, tmp_path_factory.mktemp("filler"), only=SPINE,
                       SWITCHBOARD_SILENCE_PROMPT_S="0", SWITCHBOARD_SILENCE_HANGUP_S="0") as s:
        yield s


@pytest.mark.parametrize("victim", ["turns", "stt", "agent", "tts"])
async def test_a_stalled_turn_gets_the_filler_in_time_then_its_answer_exactly_once(stack: Stack, victim: str) -> None:
    url, creds = f"{stack.http_base}/metrics", stack.client_credentials
    async for call_sid, line in phone_call(stack):
        fillers = metric(url, "switchboard_fillers_total", creds, reason="no_agent_audio")
        speech = spoken("librivox-0880.wav")
        saying = asyncio.create_task(line.say(speech))
        await asyncio.sleep(len(speech) / 8000 / 2)
        # killed mid-turn and kept down until the filler has played: nobody could answer in time
        [worker] = [w for w in stack.workers if w.service.name == victim]
        stack.stop_worker(worker, kill=True)
        killed = time.monotonic()
        await saying
        filler = await first_audio_after(line, line.speech_end, 10) - line.speech_end
        stack.spawn(BY_NAME[victim])
        await asyncio.to_thread(stack.wait_ready, 120)
        down = time.monotonic() - killed
        marks = len(line.marks)
        deadline = time.monotonic() + 90
        while not [m for _, m in line.marks[marks:] if _answer_end(m)]:
            assert time.monotonic() < deadline, "the stalled turn was never answered"
            await asyncio.sleep(0.05)
        answered = next(t for t, m in line.marks if _answer_end(m)) - line.speech_end
        await line.quiet(2.0, timeout_s=30)
        await asyncio.sleep(1.0)

        events = await all_records(bus(stack), CALLS, call_sid)
        filler_events = [e for e in events if e.kind is CallEventKind.PLAYBACK_STARTED and e.attributes.get("playback")]
        reply_starts = [e for e in events if e.kind is CallEventKind.PLAYBACK_STARTED and (e.turn_seq or 0) > 0]
        latencies = [r for r in await all_records(bus(stack), LATENCY, call_sid, settle_s=0) if r.turn_seq > 0]
        reply_marks = [m for _, m in line.marks if _answer_end(m)]
        print(f"\n{victim} killed mid-turn, back {down:.1f} s later; filler {filler:.2f} s after the end of speech "
              f"(setting {FILLER_AFTER_S:g} s); the answer {latencies[0].response_ms / 1000:.1f} s after (response "
              f"latency), its end {answered:.1f} s after; reply marks {reply_marks}")
        assert FILLER_AFTER_S - 0.2 < filler < FILLER_AFTER_S + LATE_S, "the filler came at the documented time"
        assert metric(url, "switchboard_fillers_total", creds, reason="no_agent_audio") == fillers + 1
        assert len(filler_events) == 1, "one filler, recorded for analytics"
        assert len(reply_starts) == 1 and len(latencies) == 1 and len(reply_marks) == 1, "answered exactly once"
        assert not line.clears


def _answer_end(mark: str) -> bool:
    """The end mark of a reply other than the greeting (each sentence also has its own mark: ingress/heard.py)."""
    return mark.startswith("reply-") and mark != "reply-0"
