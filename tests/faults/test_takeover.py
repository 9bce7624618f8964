"""A processor killed with kill -9 during a caller's turn: the supervisor starts it again at once, the new worker
takes its partitions back (its dead predecessor dropped from the group, no wait for its session), and the turn
that was interrupted is answered, once (README "Operations": fast takeover)."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections import Counter

import pytest

from switchboard.audio import BUS_RATE, read_wav, resample
from switchboard.caller import Utterance
from switchboard.records import AgentReply, ReplyKind
from switchboard.topics import REPLIES
from tests.conftest import SHARED_AUDIO
from tests.faults.support import TimedCall, read_all
from tests.pipeline import running_stack

pytestmark = pytest.mark.slow

SERVICES = ("ingress", "turns", "stt", "agent", "tts")
CLIP = "librivox-0890"  # 5.3 s, one sentence: the worker dies 1.5 s into it


@pytest.fixture(scope="module")
def stack(broker, tmp_path_factory):
    with running_stack(broker, tmp_path_factory.mktemp("takeover"), only=SERVICES) as s:
        yield s


async def supervise(stack) -> None:
    """What `switchboard up` does between its rounds."""
    while True:
        stack.supervise()
        await asyncio.sleep(0.1)


@pytest.mark.parametrize("victim", ["turns", "stt"])
async def test_a_worker_killed_mid_turn_is_back_at_once_and_the_turn_is_answered_once(stack, victim):
    samples, rate = read_wav(SHARED_AUDIO / f"{CLIP}.wav")
    words = (SHARED_AUDIO / f"{CLIP}.txt").read_text().split()
    settings = stack.settings.model_copy(update={"kafka_bootstrap": stack.bootstrap})
    call = TimedCall(f"ws://127.0.0.1:{stack.ingress_port}/twilio/media", settings, stack.client_credentials)
    supervisor = asyncio.create_task(supervise(stack))
    try:
        running = asyncio.create_task(call.run([Utterance(resample(samples, rate, BUS_RATE), CLIP)], timeout_s=40))
        while "reply-0" not in call.result.marks:  # the greeting has played: the caller speaks next
            assert not running.done(), "the call ended before its greeting"
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.6 + 1.5)  # the caller's 0.6 s pause, then 1.5 s into the sentence

        old = next(w for w in stack.workers if w.service.name == victim)
        os.kill(old.process.pid, signal.SIGKILL)
        killed, killed_wall = time.monotonic(), time.time()
        while True:  # the supervisor's replacement, once it holds partitions
            new = next((w for w in stack.workers if w.service.name == victim and w is not old), None)
            if new is not None and await asyncio.to_thread(stack.worker_ready, new):
                break
            # generous: most of it is the new process loading its models on a shared, loaded 2-core machine
            assert time.monotonic() - killed < 120, f"{victim} was not back within 120 s"
            await asyncio.sleep(0.05)
        ready = time.monotonic()

        result = await running
        assert new.index == old.index  # the same name (group_instance_id), so it took its predecessor's place
        heard = " ".join(result.transcripts.values()).lower()
        assert sum(w in heard for w in words) >= 0.8 * len(words), heard  # the whole turn, not what came after
        ends = Counter(r.turn_seq for r in await read_all(settings, REPLIES, AgentReply)
                       if r.call_id == call.caller.call_id and r.kind is ReplyKind.END and r.turn_seq > 0)
        assert len(ends) == 1 and set(ends.values()) == {1}, f"turns answered: {dict(ends)}"
        (turn,) = ends
        latency = result.latencies.get(turn)  # written by the ingress when the answer's first audio reached the caller
        assert latency is not None, "the answer's first audio never reached the caller"
        answered = (latency.timings.egress_first_audio_us or latency.ts_us) / 1e6 - killed_wall
        print(f"\n{victim} kill -9 -> replacement ready {ready - killed:.2f} s (index {new.index}); -> the caller "
              f"heard the answer {answered:.2f} s (response latency {latency.response_ms:.0f} ms)")
    finally:
        supervisor.cancel()
        await asyncio.gather(supervisor, return_exceptions=True)
