"""Each limit on what a caller, or a stranger, can make one ingress node do (README "Bad input"): it holds, the
refusal has its documented code and reason, and it is counted. The real ingress on the real broker, auth on."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import logging
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
import pytest
import websockets
from prometheus_client import REGISTRY

from ingress.acs import serializer as acs
from ingress.limits import AudioBudget, SourceLimits, TokenBucket, client_source, networks
from switchboard.broker import EmbeddedBroker
from switchboard.logs import FIELD_MAX_CHARS, HandshakeFilter, JsonFormatter, RepeatFilter
from switchboard.records import AudioFrame, CallEvent, CallEventKind
from switchboard.topics import AUDIO_IN, CALLS
from tests.security.lone import (
    acs_socket,
    all_records,
    closed_with,
    json_call,
    lone_ingress,
    twilio_call,
    twilio_media,
)

FRAME_S = 0.02


def audio_s(records: list) -> float:
    """Seconds of caller audio in audio.in records (a record carries one or more 20 ms frames)."""
    return sum(len(r.pcm) for r in records if isinstance(r, AudioFrame)) / 32_000


def counted(channel: str, reason: str) -> float:
    return REGISTRY.get_sample_value("switchboard_bad_input_total", {"channel": channel, "reason": reason}) or 0.0


def from_ip(ip: str) -> dict[str, str]:
    return {"X-Forwarded-For": ip}


async def eventually(condition: Callable[[], bool], timeout_s: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


async def still_open(ws: websockets.ClientConnection, wait_s: float = 0.3) -> bool:
    try:
        await asyncio.wait_for(ws.recv(), wait_s)
    except TimeoutError:
        return True
    except websockets.ConnectionClosed:
        return False
    return True


# -- per source ----------------------------------------------------------------------------------------------------


def test_the_source_is_the_peer_unless_the_peer_is_a_trusted_proxy() -> None:
    proxies = networks("10.0.0.0/8, 127.0.0.1")
    assert client_source("203.0.113.9", "198.51.100.1", proxies) == "203.0.113.9"  # not a proxy: header ignored
    assert client_source("127.0.0.1", "198.51.100.1", ()) == "127.0.0.1"  # no proxy configured: header ignored
    assert client_source("127.0.0.1", "198.51.100.1", proxies) == "198.51.100.1"
    # the right-most hop that is not one of our proxies; what the client wrote to the left of it is not believed
    assert client_source("10.0.0.2", "1.2.3.4, 198.51.100.1, 10.0.0.7", proxies) == "198.51.100.1"
    assert client_source("127.0.0.1", "not-an-ip", proxies) == "127.0.0.1"


def test_source_limits_count_starts_per_minute_and_open_sockets_and_spare_exempt_networks() -> None:
    limits = SourceLimits(starts_per_minute=2, max_open=1, exempt=networks("192.0.2.0/24"))
    assert [limits.start("198.51.100.1") for _ in range(3)] == [None, None, "source_rate"]
    assert limits.open("198.51.100.2") is None
    assert limits.open("198.51.100.2") == "source_concurrency"
    limits.close("198.51.100.2")
    assert limits.open("198.51.100.2") is None
    assert all(limits.start("192.0.2.5") is None and limits.open("192.0.2.5") is None for _ in range(10))


def test_token_buckets_refill_at_their_rate_up_to_their_burst() -> None:
    now = [0.0]
    bucket = TokenBucket(rate=2.0, burst=3.0, clock=lambda: now[0])
    assert bucket.take(5) == 3.0
    now[0] += 1.0
    assert bucket.take(5) == 2.0
    now[0] += 100.0
    assert bucket.take(5) == 3.0
    budget = AudioBudget(16_000, speed=1.5, burst_s=2.0, clock=lambda: now[0])
    assert budget.allow(16_000 * 10) == 32_000  # ten seconds at once: the two-second burst
    now[0] += 1.0
    assert budget.allow(16_000 * 10) == 24_000  # then 1.5 s of audio per second


def test_a_real_time_caller_loses_nothing_when_this_process_stalls() -> None:
    """The budget runs against the call's age: audio that piled up in the socket while we were stalled (a slow
    broker, a busy loop) is read in a burst afterwards, and it was never faster than real time. A bucket capped at
    the burst would drop it: after 8 s stalled, 8 s arrive at once against 5 s of slack."""
    now = [0.0]
    budget = AudioBudget(16_000, speed=1.5, burst_s=5.0, clock=lambda: now[0])
    frame = 320
    for stall_s in (8.0, 3.0, 3.0, 12.0):  # stalls one after another: the bucket's slack would not have refilled
        for _ in range(50 * 2):  # two seconds read in real time
            now[0] += 0.02
            assert budget.allow(frame) == frame
        now[0] += stall_s
        backlog = int(stall_s * 50) * frame
        assert budget.allow(backlog) == backlog
    # and the cap still holds over the whole call: 1.5 × its age + the slack, whatever the caller sends
    now[0] += 10.0
    assert budget.taken + budget.allow(16_000 * 600) == int(16_000 * (1.5 * now[0] + 5.0))


async def test_call_starts_per_source_per_minute_are_capped_with_1013_and_429(broker: EmbeddedBroker,
                                                                              tmp_path: Path) -> None:
    async with lone_ingress(broker, tmp_path, call_starts_per_source_per_minute=3,
                            trusted_proxies="127.0.0.1") as ing:
        before = counted("acs", "source_rate")
        sockets = [(await acs_socket(ing, headers=from_ip("198.51.100.7")))[0] for _ in range(3)]
        refused, _ = await acs_socket(ing, headers=from_ip("198.51.100.7"))
        assert await closed_with(refused) == (1013, "too many new calls from this address, try again later")
        other, _ = await acs_socket(ing, headers=from_ip("198.51.100.8"))  # another caller is not affected
        assert await still_open(other)
        assert all([await still_open(ws) for ws in sockets])
        assert counted("acs", "source_rate") == before + 1

        async with httpx.AsyncClient(base_url=ing.http) as client:
            res = await client.post("/api/v1/calls/start", json={}, headers={**ing.creds.api_headers(),
                                                                              **from_ip("198.51.100.7")})
        assert res.status_code == 429 and res.headers["retry-after"] == "60"
        assert res.json() == {"detail": "too many new calls from this address, try again later"}
        for ws in [*sockets, other]:
            await ws.close()


async def test_x_forwarded_for_is_ignored_unless_the_proxy_is_trusted(broker: EmbeddedBroker, tmp_path: Path) -> None:
    async with lone_ingress(broker, tmp_path, call_starts_per_source_per_minute=2) as ing:
        first, _ = await acs_socket(ing, headers=from_ip("198.51.100.1"))
        second, _ = await acs_socket(ing, headers=from_ip("198.51.100.2"))
        third, _ = await acs_socket(ing, headers=from_ip("198.51.100.3"))  # a forged header buys nothing
        assert (await closed_with(third))[0] == 1013
        await first.close()
        await second.close()


async def test_open_calls_per_source_are_capped_and_a_slot_frees_when_a_call_ends(broker: EmbeddedBroker,
                                                                                  tmp_path: Path) -> None:
    async with lone_ingress(broker, tmp_path, max_calls_per_source=2, trusted_proxies="127.0.0.1") as ing:
        before = counted("acs", "source_concurrency")
        a, _ = await acs_socket(ing, headers=from_ip("198.51.100.20"))
        b, _ = await acs_socket(ing, headers=from_ip("198.51.100.20"))
        c, _ = await acs_socket(ing, headers=from_ip("198.51.100.20"))
        assert await closed_with(c) == (1013, "too many open calls from this address")
        assert counted("acs", "source_concurrency") == before + 1
        await a.close()
        await asyncio.sleep(0.3)
        d, _ = await acs_socket(ing, headers=from_ip("198.51.100.20"))
        assert await still_open(d) and await still_open(b)
        await b.close()
        await d.close()


# -- per call ------------------------------------------------------------------------------------------------------


async def test_caller_audio_faster_than_1_5x_real_time_is_dropped_and_counted(broker: EmbeddedBroker,
                                                                               tmp_path: Path) -> None:
    async with lone_ingress(broker, tmp_path) as ing:
        before = counted("twilio", "audio_too_fast")
        started = time.monotonic()  # before the call starts: the budget cannot have accrued for longer
        ws, call_id = await twilio_call(ing)
        for i in range(500):  # ten seconds of audio, sent as fast as the socket takes it
            await ws.send(twilio_media(chunk=i))
        # then six seconds in each of ten maximum-size messages (the "oversize media")
        big = base64.b64encode(b"\xff" * 48_000).decode()
        for _ in range(10):
            await ws.send(twilio_media(big))
        await asyncio.sleep(0.3)
        await ws.close()
        published_s = audio_s(await all_records(ing.settings, AUDIO_IN, call_id))
        elapsed = time.monotonic() - started  # every frame read was published within this time
    allowed_s = ing.settings.audio_burst_s + ing.settings.max_audio_speed * elapsed
    assert published_s <= allowed_s + FRAME_S, f"{published_s:.2f} s of audio in {elapsed:.2f} s"
    assert published_s < 70 / 2, "most of the 70 s sent must have been dropped"
    assert counted("twilio", "audio_too_fast") > before


async def test_an_acs_silent_packet_publishes_its_own_20_ms_not_the_announced_length(broker: EmbeddedBroker,
                                                                                    tmp_path: Path) -> None:
    async with lone_ingress(broker, tmp_path) as ing:
        ws, call_id = await acs_socket(ing, length=3_200_000)  # a 150-byte packet claiming 100 s per packet
        await ws.send(json.dumps({"kind": "AudioData", "audioData": {"silent": True}}))
        await asyncio.sleep(0.3)
        await ws.close()
        frames = [r for r in await all_records(ing.settings, AUDIO_IN, call_id) if isinstance(r, AudioFrame)]
    assert len(frames) == 1 and frames[0].pcm == bytes(640)


async def test_dtmf_digits_per_message_are_capped_and_a_5kb_digit_string_is_refused(broker: EmbeddedBroker,
                                                                                   tmp_path: Path) -> None:
    async with lone_ingress(broker, tmp_path, max_dtmf_digits=4) as ing:
        before = counted("acs", "dtmf_dropped")
        ws, call_id = await acs_socket(ing)
        await ws.send(json.dumps({"kind": "DtmfData", "dtmfData": {"data": "1234567890" * 6}}))
        await ws.send(json.dumps({"kind": "DtmfData", "dtmfData": {"data": "x"}}))  # not a DTMF tone: dropped
        assert await still_open(ws)
        await ws.send(json.dumps({"kind": "DtmfData", "dtmfData": {"data": "9" * 5000}}))
        assert (await closed_with(ws))[0] == 1007
        events = [r for r in await all_records(ing.settings, CALLS, call_id) if isinstance(r, CallEvent)]
    assert [e.reason for e in events if e.kind is CallEventKind.DTMF] == ["1", "2", "3", "4"]
    assert counted("acs", "dtmf_dropped") == before + 56 + 1


async def test_end_speech_is_taken_once_per_second_and_the_rest_counted(broker: EmbeddedBroker,
                                                                        tmp_path: Path) -> None:
    async with lone_ingress(broker, tmp_path) as ing:
        before = counted("jsonapi", "end_speech_dropped")
        ws, session = await json_call(ing)
        for _ in range(100):
            await ws.send(json.dumps({"type": "end_speech"}))
        await asyncio.sleep(0.3)
        await ws.close()
        published_s = audio_s(await all_records(ing.settings, AUDIO_IN, session["call_id"]))
    assert counted("jsonapi", "end_speech_dropped") >= before + 98
    assert published_s <= 2.0 + FRAME_S  # one or two end_speech of about a second each, not 100 s


async def test_http_bodies_over_the_cap_are_413_with_or_without_a_length(broker: EmbeddedBroker,
                                                                          tmp_path: Path) -> None:
    async with lone_ingress(broker, tmp_path) as ing:
        before = counted("jsonapi", "body_too_large")
        ten_mb = b'{"agent_type": "' + b"a" * 10_000_000 + b'"}'
        async with httpx.AsyncClient(base_url=ing.http, timeout=10) as client:
            sized = await client.post("/api/v1/calls/start", content=ten_mb, headers={
                **ing.creds.api_headers(), "Content-Type": "application/json"})

            async def chunks():  # no Content-Length: the cap must hold while reading
                for _ in range(100):
                    yield b"a" * 10_000

            streamed = await client.post("/api/v1/calls/start", content=chunks(), headers={
                **ing.creds.api_headers(), "Content-Type": "application/json"})
            form = await client.post("/twilio/voice", data={"From": "x" * 100_000})
        assert (sized.status_code, streamed.status_code, form.status_code) == (413, 413, 413)
        assert sized.json() == {"detail": f"request body over {ing.settings.max_body_bytes} bytes"}
        assert counted("jsonapi", "body_too_large") == before + 2


async def test_a_socket_that_sends_no_media_is_closed_1008_and_frees_its_slots(broker: EmbeddedBroker,
                                                                               tmp_path: Path) -> None:
    async with lone_ingress(broker, tmp_path, media_timeout_s=1.0) as ing:
        before = counted("acs", "media_timeout")
        silent = await websockets.connect(f"{ing.ws}/acs/media", additional_headers=ing.creds.acs_headers())
        started = time.monotonic()
        assert await closed_with(silent) == (1008, "no media for 1 s")
        assert time.monotonic() - started < 3
        assert counted("acs", "media_timeout") == before + 1
        await asyncio.sleep(0.2)
        assert ing.runtime.sources.open_sockets("127.0.0.1") == 0

        ws, call_id = await twilio_call(ing)
        for i in range(5):
            await ws.send(twilio_media(chunk=i))
        assert await eventually(lambda: call_id in ing.runtime.egress.sessions)
        assert (await closed_with(ws))[0] == 1008
        await asyncio.sleep(0.2)
        assert call_id not in ing.runtime.egress.sessions
        events = [r for r in await all_records(ing.settings, CALLS, call_id) if isinstance(r, CallEvent)]
    assert [(e.kind, e.reason) for e in events] == [(CallEventKind.CALL_STARTED, None),
                                                    (CallEventKind.CALL_ENDED, "protocol_error:media_timeout")]


async def test_a_caller_who_keeps_sending_audio_outlives_the_media_timeout(broker: EmbeddedBroker,
                                                                          tmp_path: Path) -> None:
    async with lone_ingress(broker, tmp_path, media_timeout_s=1.0) as ing:
        before = counted("twilio", "media_timeout")
        ws, _ = await twilio_call(ing)
        for i in range(125):  # 2.5 s of real-time audio: the 1 s deadline moves with every frame
            await ws.send(twilio_media(chunk=i))
            await asyncio.sleep(FRAME_S)
        assert await still_open(ws)
        assert counted("twilio", "media_timeout") == before
        assert (await closed_with(ws, timeout_s=3.0))[0] == 1008  # then silence: closed a second later


async def test_a_twilio_callers_last_frames_are_published_whether_it_stops_or_drops(broker: EmbeddedBroker,
                                                                                    tmp_path: Path) -> None:
    """Frames are decoded a 60 ms record at a time (ingress/twilio/uplink.py); the ones still gathering when the
    caller stops, or the socket drops, are the end of what the caller said, and still reach the bus."""
    async with lone_ingress(broker, tmp_path) as ing:
        stopped, stopped_id = await twilio_call(ing)
        for i in range(5):
            await stopped.send(twilio_media(chunk=i))
        await stopped.send(json.dumps({"event": "stop", "streamSid": "MZ", "stop": {"callSid": stopped_id}}))
        assert (await closed_with(stopped))[0] == 1000
        dropped, dropped_id = await twilio_call(ing)
        for i in range(4):
            await dropped.send(twilio_media(chunk=i))
        await dropped.close()
        await asyncio.sleep(0.3)
        stopped_s = audio_s(await all_records(ing.settings, AUDIO_IN, stopped_id))
        dropped_s = audio_s(await all_records(ing.settings, AUDIO_IN, dropped_id))
    assert (round(stopped_s, 3), round(dropped_s, 3)) == (0.1, 0.08)


async def test_nothing_is_published_for_a_call_after_it_ended(broker: EmbeddedBroker, tmp_path: Path) -> None:
    async with lone_ingress(broker, tmp_path) as ing:
        ws, call_id = await acs_socket(ing)
        await ws.send(acs.audio_message(bytes(640), "t", "4:+15550100"))
        await asyncio.sleep(0.2)
        assert await eventually(lambda: call_id in ing.runtime.egress.sessions)
        session = ing.runtime.egress.sessions[call_id]
        await ing.runtime.close_call(session, "test_end")
        await session.caller_audio(np.zeros(3200, dtype=np.int16))
        await session.dtmf("5")
        await ws.send(acs.audio_message(bytes(640), "t", "4:+15550100"))
        await ws.close()
        frames = await all_records(ing.settings, AUDIO_IN, call_id)
        events = await all_records(ing.settings, CALLS, call_id, settle_s=0)
    assert len(frames) == 1
    assert [e.kind for e in events] == [CallEventKind.CALL_STARTED, CallEventKind.CALL_ENDED]


# -- protocol details ----------------------------------------------------------------------------------------------


async def test_twilio_stop_closes_the_socket_with_1000(broker: EmbeddedBroker, tmp_path: Path) -> None:
    async with lone_ingress(broker, tmp_path) as ing:
        ws, call_id = await twilio_call(ing)
        await ws.send(twilio_media())
        await ws.send(json.dumps({"event": "stop", "streamSid": f"MZ{call_id}", "stop": {"callSid": call_id}}))
        assert await closed_with(ws) == (1000, "call ended")


async def test_close_reasons_fit_a_close_frame_even_in_four_byte_characters(broker: EmbeddedBroker,
                                                                            tmp_path: Path) -> None:
    async with lone_ingress(broker, tmp_path) as ing:
        ws = await websockets.connect(f"{ing.ws}/acs/media", additional_headers=ing.creds.acs_headers())
        await ws.send(json.dumps({"kind": "\U0001d11e" * 60}))
        code, reason = await closed_with(ws)
    assert code == 1003 and reason.startswith("unknown message kind '\U0001d11e")
    assert len(reason.encode()) <= 123


async def test_json_api_audio_is_capped_like_every_channel(broker: EmbeddedBroker, tmp_path: Path) -> None:
    async with lone_ingress(broker, tmp_path) as ing:
        started = time.monotonic()
        ws, session = await json_call(ing)
        second = json.dumps({"type": "audio_chunk", "data": base64.b64encode(bytes(32_000)).decode()})
        for _ in range(30):  # thirty seconds of audio at once
            await ws.send(second)
        await asyncio.sleep(0.3)
        await ws.close()
        published_s = audio_s(await all_records(ing.settings, AUDIO_IN, session["call_id"]))
        elapsed = time.monotonic() - started
    assert published_s <= ing.settings.audio_burst_s + ing.settings.max_audio_speed * elapsed + FRAME_S
    assert published_s < 20


# -- logs ----------------------------------------------------------------------------------------------------------


def test_log_fields_and_messages_are_capped() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter("test"))
    log = logging.getLogger(f"test.cap.{uuid.uuid4().hex}")
    log.addHandler(handler)
    log.propagate = False
    log.warning("ignored %s", "m" * 60_000, extra={"fields": {"error": "e" * 60_000, "n": 5}})
    line = stream.getvalue()
    entry = json.loads(line)
    assert len(line) < 3 * FIELD_MAX_CHARS
    assert entry["error"].startswith("e" * FIELD_MAX_CHARS) and entry["error"].endswith("[57952 more chars]")
    assert entry["n"] == 5


def test_repeated_warnings_are_rate_limited_with_a_count_of_what_was_dropped() -> None:
    now = [0.0]
    records: list[logging.LogRecord] = []
    repeat = RepeatFilter(burst=10, window_s=10.0)
    repeat_clock = pytest.MonkeyPatch()
    repeat_clock.setattr("switchboard.logs.time.monotonic", lambda: now[0])
    try:
        log = logging.getLogger(f"test.repeat.{uuid.uuid4().hex}")
        for i in range(10_000):
            record = log.makeRecord(log.name, logging.WARNING, __file__, 1, "closing socket on bad input", (), None)
            if repeat.filter(record):
                records.append(record)
            if i == 5_000:
                now[0] += 11.0
        info = log.makeRecord(log.name, logging.INFO, __file__, 1, "call started", (), None)
        assert all(repeat.filter(info) for _ in range(100))
    finally:
        repeat_clock.undo()
    assert len(records) == 20
    assert records[10].fields == {"suppressed": 4991}


def test_uvicorn_handshake_chatter_is_not_logged_but_its_other_lines_are() -> None:
    chatter = HandshakeFilter()

    def record(msg: str, level: int = logging.INFO) -> logging.LogRecord:
        return logging.LogRecord("uvicorn.error", level, __file__, 1, msg, (), None)

    assert not chatter.filter(record("connection open"))
    assert not chatter.filter(record('127.0.0.1:5000 - "WebSocket /twilio/media" [accepted]'))
    assert chatter.filter(record("Uvicorn running on http://127.0.0.1:8080"))
    assert chatter.filter(record("connection open", logging.WARNING))
