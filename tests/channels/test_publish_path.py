"""Caller audio from the socket to ``audio.in`` (ingress/calls.py, ingress/sendpath.py): the socket's read never
waits on Kafka, what waits is bounded per call (the rest dropped and counted), a call's audio keeps its order, and
records carry ``SWITCHBOARD_AUDIO_RECORD_MS`` of audio with ``seq`` = the call's number of their first 20 ms frame.

The real ingress on a real tansu broker; a slow broker is the real one frozen with SIGSTOP (its own broker here,
so no other test sees it stop)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import os
import signal
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import numpy as np
import pytest
from aiokafka.partitioner import DefaultPartitioner
from prometheus_client import REGISTRY

from switchboard.audio import Resampler, mulaw_decode
from switchboard.broker import EmbeddedBroker
from switchboard.bus import CachedPartitioner
from switchboard.records import AudioFrame, CallEvent, CallEventKind
from switchboard.topics import AUDIO_IN, CALLS
from tests.security.lone import all_records, lone_ingress, twilio_call, twilio_media

FRAME_BYTES = 640  # 20 ms of PCM16 at 16 kHz on the bus


@pytest.fixture(scope="module")
def own_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedBroker]:
    b = EmbeddedBroker(log_path=tmp_path_factory.mktemp("tansu-frozen") / "tansu.log").start()
    yield b
    b.stop()


@contextlib.asynccontextmanager
async def frozen(broker: EmbeddedBroker) -> AsyncIterator[None]:
    """The broker stops answering (as a broker buried under load does), then resumes."""
    assert broker.process is not None
    os.kill(broker.process.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(broker.process.pid, signal.SIGCONT)


def tone_frames(n: int) -> list[str]:
    """``n`` distinct 20 ms μ-law payloads (a rising ramp of levels), so their order can be checked on the bus."""
    return [base64.b64encode(bytes([0x80 + (i % 120)]) * 160).decode() for i in range(n)]


async def send_real_time(ws, payloads: list[str]) -> None:
    start = time.monotonic()
    for i, payload in enumerate(payloads):
        await ws.send(twilio_media(payload, chunk=i))
        await asyncio.sleep(max(0.0, start + (i + 1) * 0.02 - time.monotonic()))


def dropped_s() -> float:
    return REGISTRY.get_sample_value("switchboard_audio_send_dropped_seconds_total", {"channel": "twilio"}) or 0.0


def audio_frames(records: list) -> list[AudioFrame]:
    return sorted((r for r in records if isinstance(r, AudioFrame)), key=lambda r: r.seq)


async def test_the_socket_is_read_in_real_time_while_the_broker_is_frozen_and_nothing_is_lost(
        own_broker: EmbeddedBroker, tmp_path: Path) -> None:
    # a producer batch of 16 KB fills in half a second of this call's audio: past it, aiokafka's send() waits
    async with lone_ingress(own_broker, tmp_path, audio_record_ms=60, producer_batch_bytes=16_384,
                            audio_send_backlog_ms=5000) as ing:
        ws, call_id = await twilio_call(ing)
        # 6 + 150 frames: whole 60 ms records, since the ingress decodes a record's frames at once and counts
        # them as taken then (ingress/twilio/uplink.py); the ones of a record still gathering go out at the end
        await send_real_time(ws, tone_frames(6))
        session = ing.runtime.egress.sessions[call_id]
        before_drops = dropped_s()
        payloads = tone_frames(150)
        async with frozen(own_broker):
            await send_real_time(ws, payloads)  # three seconds of a caller talking while Kafka does not answer
            await asyncio.sleep(0.1)
            read_while_frozen = session.frames_taken
            waiting = ing.runtime.send_path.waiting(call_id)
        await ws.close()
        frames = audio_frames(await all_records(ing.settings, AUDIO_IN, call_id, settle_s=1.0))
        events = [r for r in await all_records(ing.settings, CALLS, call_id, settle_s=0) if isinstance(r, CallEvent)]
    assert read_while_frozen == 156, "every frame was read off the socket while the broker was frozen"
    assert waiting > 0, "what Kafka had not taken waited in the send path, not in the socket"
    assert dropped_s() == before_drops
    # all of it arrives, in order: each record starts at the frame after the previous record's last
    assert sum(len(f.pcm) for f in frames) == 156 * FRAME_BYTES
    assert [f.seq for f in frames] == [0, *np.cumsum([len(f.pcm) // FRAME_BYTES for f in frames[:-1]])]
    sent = np.concatenate([mulaw_decode(base64.b64decode(p)) for p in tone_frames(6) + payloads])
    assert b"".join(f.pcm for f in frames) == Resampler(8_000, 16_000).process(sent).astype("<i2").tobytes(), \
        "the call's audio arrives whole and in order"
    assert [e.kind for e in events] == [CallEventKind.CALL_STARTED, CallEventKind.CALL_ENDED]


async def test_a_call_whose_backlog_outgrows_its_bound_loses_the_excess_and_it_is_counted(
        own_broker: EmbeddedBroker, tmp_path: Path) -> None:
    async with lone_ingress(own_broker, tmp_path, audio_record_ms=20, producer_batch_bytes=16_384,
                            audio_send_backlog_ms=200) as ing:
        ws, call_id = await twilio_call(ing)
        await send_real_time(ws, tone_frames(2))
        before = dropped_s()
        async with frozen(own_broker):
            await send_real_time(ws, tone_frames(100))  # two seconds against a 200 ms backlog
            await asyncio.sleep(0.1)
            waiting = ing.runtime.send_path.waiting(call_id)
            session_alive = call_id in ing.runtime.egress.sessions
        await ws.close()
        published = sum(len(f.pcm) for f in audio_frames(await all_records(ing.settings, AUDIO_IN, call_id)))
    assert session_alive, "a slow broker costs audio, never the call"
    assert waiting <= 200 * 16, "never more than the bound waits (in samples)"
    lost_s = (102 * FRAME_BYTES - published) / 32_000
    assert lost_s > 0.5
    assert dropped_s() - before == pytest.approx(lost_s, abs=0.001), "every dropped frame is counted"


@pytest.mark.parametrize("record_ms", [20, 60, 100])
async def test_records_carry_the_set_duration_and_seq_numbers_their_first_20_ms_frame(
        broker: EmbeddedBroker, tmp_path: Path, record_ms: int) -> None:
    async with lone_ingress(broker, tmp_path, audio_record_ms=record_ms) as ing:
        ws, call_id = await twilio_call(ing)
        for i in range(17):  # 340 ms: whole records, then a short last one flushed when the call ends
            await ws.send(twilio_media(chunk=i))
        await asyncio.sleep(0.3)
        await ws.close()
        frames = audio_frames(await all_records(ing.settings, AUDIO_IN, call_id))
    per = record_ms // 20
    assert [f.seq for f in frames] == list(range(0, 17, per))
    assert [len(f.pcm) // FRAME_BYTES for f in frames] == [per] * (17 // per) + ([17 % per] if 17 % per else [])
    assert all(f.sample_rate == 16_000 for f in frames)
    assert all(b.ts_us >= a.ts_us for a, b in itertools.pairwise(frames))


def test_the_cached_partitioner_picks_the_partition_kafka_s_default_would() -> None:
    """It only remembers: a call's records land where any Kafka client would put its key (co-partitioning)."""
    cached, partitions = CachedPartitioner(max_keys=50), list(range(32))
    for i in range(200):  # past max_keys: the cache starts over, the answers stay the same
        key = f"CA{i:032x}".encode()
        assert cached(key, partitions, partitions) == DefaultPartitioner()(key, partitions, partitions)
        assert cached(key, partitions, partitions) == DefaultPartitioner()(key, partitions, partitions)
    assert len(cached._cache) <= 50


async def test_the_audio_producer_lingers_and_batches_as_configured() -> None:
    # SWITCHBOARD_PRODUCER_LINGER_MS: caller audio waits a few ms for other calls' records on its partition (fewer,
    # larger produce requests: README "Load testing"). aiokafka keeps both on its accumulator only, so that is where
    # they are read.
    from ingress.runtime import IngressRuntime
    from ingress.settings import IngressSettings

    rt = IngressRuntime(IngressSettings(kafka_bootstrap="127.0.0.1:9", producer_linger_ms=7,
                                        producer_batch_bytes=65_536))
    audio = rt._make_producer()
    try:
        assert audio._message_accumulator._linger_time == pytest.approx(0.007)
        assert audio._message_accumulator._batch_size == 65_536
        assert IngressSettings(kafka_bootstrap="127.0.0.1:9").producer_linger_ms == 5
    finally:
        await audio.stop()
