"""ACS media streaming into the real ingress on the real broker (no processors): what reaches the bus."""

from __future__ import annotations

import itertools
import uuid

import numpy as np
import websockets

from ingress.acs import serializer as acs
from switchboard.records import CallEvent, CallEventKind
from switchboard.topics import AUDIO_IN, CALLS
from tests.channels.conftest import LoneIngress
from tests.channels.helpers import records_of


async def test_acs_correlation_ids_are_carried_into_the_call_records(lone_ingress: LoneIngress) -> None:
    connection_id = f"conn-{uuid.uuid4()}"
    headers = {"x-ms-call-connection-id": connection_id, "x-ms-call-correlation-id": "corr-42",
               **lone_ingress.creds.acs_headers()}
    async with websockets.connect(f"{lone_ingress.ws}/acs/media", additional_headers=headers) as ws:
        await ws.send(acs.metadata_message("sub-77", sample_rate=24000))
        started = await records_of(lone_ingress.settings, CALLS, connection_id)
    event: CallEvent = started[0]
    assert (event.kind, event.channel, event.session_id) == (CallEventKind.CALL_STARTED, "acs", "sub-77")
    assert event.attributes == {"subscription_id": "sub-77", "sample_rate": "24000",
                                "call_connection_id": connection_id, "correlation_id": "corr-42"}


async def test_acs_24khz_audio_reaches_the_bus_as_16khz_frames_and_silent_packets_as_zeros(
        lone_ingress: LoneIngress) -> None:
    connection_id = f"conn-{uuid.uuid4()}"
    tone = (8000 * np.sin(2 * np.pi * 440 * np.arange(480) / 24000)).astype("<i2").tobytes()  # 20 ms at 24 kHz
    async with websockets.connect(f"{lone_ingress.ws}/acs/media?callConnectionId={connection_id}",
                                  additional_headers=lone_ingress.creds.acs_headers()) as ws:
        await ws.send(acs.metadata_message("sub-24k", sample_rate=24000))
        for i in range(20):  # 200 ms of tone, then 200 ms flagged silent (its data must be ignored)
            await ws.send(acs.audio_message(tone, "t", "4:+1555", silent=i >= 10))
        # records carry SWITCHBOARD_AUDIO_RECORD_MS (60 ms by default): 360 ms of the 400 are complete records
        records = await records_of(lone_ingress.settings, AUDIO_IN, connection_id, at_least=6)
    records.sort(key=lambda r: r.seq)
    assert {r.sample_rate for r in records} == {16000}
    assert all(len(r.pcm) % 640 == 0 for r in records), "whole 20 ms frames of 16 kHz PCM16"
    for before, after in itertools.pairwise(records):
        assert after.seq == before.seq + len(before.pcm) // 640, "seq numbers the record's first 20 ms frame"
    pcm = np.frombuffer(b"".join(r.pcm for r in records), "<i2")
    levels = [np.abs(pcm[i : i + 320]).max() for i in range(0, len(pcm), 320)]
    assert len(levels) >= 18
    assert min(levels[1:9]) > 6000, "the tone did not come through"
    assert max(levels[11:]) == 0, "a silent packet's data was published"


async def test_a_call_start_can_ask_for_an_engine_set_and_a_voice_carried_into_the_call_records(
        lone_ingress: LoneIngress) -> None:
    import httpx

    async with httpx.AsyncClient(base_url=lone_ingress.http, headers=lone_ingress.creds.api_headers()) as client:
        choice = {"agent_type": "clinic", "engines": "agent=openai,tts=azure", "voice": "azure:en-GB-SoniaNeural"}
        resp = await client.post("/api/v1/calls/start", json=choice)
        assert resp.status_code == 200, resp.text
        bad = await client.post("/api/v1/calls/start", json={"engines": "agent=<script>"})
        assert bad.status_code == 422
    body = resp.json()
    async with websockets.connect(body["websocket_url"]):
        started = await records_of(lone_ingress.settings, CALLS, body["call_id"])
    assert started[0].attributes["engines"] == "agent=openai,tts=azure"
    assert started[0].attributes["voice"] == "azure:en-GB-SoniaNeural"
