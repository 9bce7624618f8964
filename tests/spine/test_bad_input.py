"""Bad input on /twilio/media: a clear close code and reason, counted, logged; other calls unaffected."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Iterator

import pytest
import websockets
from aiokafka import AIOKafkaConsumer, TopicPartition

from switchboard import codec
from switchboard.bus import consumer_options, topic_name
from switchboard.records import AudioFrame
from switchboard.stack import Stack
from switchboard.topics import AUDIO_IN
from tests.pipeline import metric, running_stack, twilio_stream, with_parameters

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ingress(broker, tmp_path_factory) -> Iterator[Stack]:
    with running_stack(
        broker, tmp_path_factory.mktemp("ingress"), only=("ingress",), SWITCHBOARD_MAX_MESSAGE_BYTES="4096"
    ) as s:
        yield s


def _start(call_sid: str) -> str:
    return json.dumps(
        {
            "event": "start",
            "streamSid": f"MZ{call_sid}",
            "start": {
                "streamSid": f"MZ{call_sid}",
                "callSid": call_sid,
                "accountSid": "AC1",
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
            },
        }
    )


def _media(payload: str = base64.b64encode(b"\xff" * 160).decode()) -> str:
    return json.dumps({"event": "media", "streamSid": "MZ", "media": {"payload": payload}})


def _call_sid(messages: list[str]) -> str:
    starts = [json.loads(m)["start"]["callSid"] for m in messages if m.startswith('{"event": "start"')]
    return starts[0] if starts else "CAnostart"


async def _closed_with(stack: Stack, messages: list[str]) -> tuple[int | None, str]:
    """The messages on a stream opened as Twilio opens one (authenticated), until the ingress closes it."""
    ws, params = await twilio_stream(stack, _call_sid(messages))
    async with ws:
        for m in messages:
            await ws.send(with_parameters(m, params))
        try:
            await asyncio.wait_for(ws.recv(), 5)
        except websockets.ConnectionClosed as exc:
            return (exc.rcvd.code, exc.rcvd.reason) if exc.rcvd else (None, "")
    return None, ""


CASES = [
    ("invalid_json", ["{this is not json"], 1007, "invalid JSON"),
    ("bad_base64", [_start("CAb64"), _media("%%%not base64%%%")], 1007, "not valid base64"),
    ("media_before_start", [_media()], 1008, "media before start"),
    ("oversized", [_start("CAbig"), "x" * 5000], 1009, "exceeds 4096"),
    ("bad_format", [_start("CAfmt").replace("audio/x-mulaw", "audio/x-l16")], 1003, "unsupported media format"),
]


@pytest.mark.parametrize(("reason", "messages", "code", "text"), CASES, ids=[c[0] for c in CASES])
async def test_bad_input_closes_the_socket_with_a_reason_and_is_counted(ingress, reason, messages, code, text):
    metrics_url = f"http://127.0.0.1:{ingress.ingress_port}/metrics"
    creds = ingress.client_credentials
    before = metric(metrics_url, "switchboard_bad_input_total", creds, channel="twilio", reason=reason)
    got_code, got_reason = await _closed_with(ingress, messages)
    assert got_code == code and text in got_reason
    assert metric(metrics_url, "switchboard_bad_input_total", creds, channel="twilio", reason=reason) == before + 1


async def test_an_unknown_event_is_counted_and_the_stream_goes_on(ingress):
    metrics_url = f"http://127.0.0.1:{ingress.ingress_port}/metrics"
    creds = ingress.client_credentials
    before = metric(metrics_url, "switchboard_bad_input_total", creds, channel="twilio", reason="unknown_event")
    ws, params = await twilio_stream(ingress, "CAunknown")
    async with ws:
        await ws.send(with_parameters(_start("CAunknown"), params))
        await ws.send(json.dumps({"event": "telepathy", "streamSid": "MZ"}))
        await ws.send(_media())
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(ws.recv(), 1.0)  # still open, nothing to say
    assert metric(metrics_url, "switchboard_bad_input_total", creds, channel="twilio",
                  reason="unknown_event") == before + 1


async def test_bad_callers_do_not_disturb_a_good_call(ingress):
    settings = ingress.settings.model_copy(update={"kafka_bootstrap": ingress.bootstrap})
    frames = 100
    good, params = await twilio_stream(ingress, "CAgood")
    async with good:
        await good.send(with_parameters(_start("CAgood"), params))
        for i in range(frames):
            await good.send(_media())
            if i % 20 == 0:  # a bad caller arrives every 20 frames
                await _closed_with(ingress, CASES[i // 20 % len(CASES)][1])
        await good.send(json.dumps({"event": "stop", "streamSid": "MZCAgood", "stop": {}}))
    consumer = AIOKafkaConsumer(group_id=None, **consumer_options(settings))
    await consumer.start()
    try:
        name = topic_name(settings, AUDIO_IN)
        tps = [TopicPartition(name, p) for p in range(AUDIO_IN.partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        end = await consumer.end_offsets(tps)
        seqs = []
        while any([await consumer.position(tp) < end[tp] for tp in tps]):
            for msgs in (await consumer.getmany(timeout_ms=500)).values():
                for m in msgs:
                    if m.key == b"CAgood":
                        record = codec.decode(AudioFrame, m.value)
                        # a record carries N × 20 ms and its seq numbers its first 20 ms frame
                        seqs += range(record.seq, record.seq + len(record.pcm) // 640)
    finally:
        await consumer.stop()
    # 100 frames of 8 kHz μ-law (20 ms each) become 100 frames of 16 kHz PCM16, in order, none lost
    assert seqs == list(range(frames))
