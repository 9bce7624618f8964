"""Bad input on the ACS and JSON API endpoints: a clear close code or 4xx with a reason, counted,
and the other calls on the node go on. The real ingress on the real broker, without processors."""

from __future__ import annotations

import asyncio
import json
import uuid

import httpx
import numpy as np
import websockets

from ingress.acs import serializer as acs
from switchboard.records import AudioFrame
from switchboard.topics import AUDIO_IN
from tests.channels.conftest import LoneIngress
from tests.channels.helpers import bad_input, closed_with, records_of

SILENCE_20MS_16K = np.zeros(320, dtype="<i2").tobytes()


async def start_session(ing: LoneIngress, **body: object) -> dict:
    async with httpx.AsyncClient(base_url=ing.http, headers=ing.creds.api_headers()) as client:
        res = await client.post("/api/v1/calls/start", json={"agent_type": "clinic-receptionist",
                                                             "caller_number": "+15550100", "language": "en-US", **body})
    assert res.status_code == 200, res.text
    return res.json()


async def acs_close_on(ing: LoneIngress, *messages: str) -> tuple[int | None, str]:
    async with websockets.connect(f"{ing.ws}/acs/media", additional_headers=ing.creds.acs_headers()) as ws:
        for m in messages:
            await ws.send(m)
        return await closed_with(ws)


async def json_close_on(ing: LoneIngress, *messages: str) -> tuple[int | None, str]:
    session = await start_session(ing)
    async with websockets.connect(session["websocket_url"]) as ws:
        assert json.loads(await ws.recv())["type"] == "session_started"
        for m in messages:
            await ws.send(m)
        return await closed_with(ws)


async def test_acs_malformed_json_closes_1007_with_reason_and_is_counted(lone_ingress: LoneIngress) -> None:
    before = bad_input("acs", "invalid_json")
    code, reason = await acs_close_on(lone_ingress, "{not json")
    assert (code, reason.startswith("invalid JSON")) == (1007, True)
    assert bad_input("acs", "invalid_json") == before + 1


async def test_acs_unsupported_sample_rate_closes_1003(lone_ingress: LoneIngress) -> None:
    before = bad_input("acs", "bad_sample_rate")
    code, reason = await acs_close_on(lone_ingress, acs.metadata_message("sub-1", sample_rate=8000))
    assert code == 1003
    assert "unsupported sample rate 8000" in reason
    assert bad_input("acs", "bad_sample_rate") == before + 1


async def test_acs_unknown_kind_closes_1003_naming_the_kind(lone_ingress: LoneIngress) -> None:
    before = bad_input("acs", "unknown_kind")
    code, reason = await acs_close_on(lone_ingress, json.dumps({"kind": "VideoData", "videoData": {}}))
    assert code == 1003
    assert "'VideoData'" in reason
    assert bad_input("acs", "unknown_kind") == before + 1


async def test_acs_audio_before_metadata_closes_1008(lone_ingress: LoneIngress) -> None:
    before = bad_input("acs", "audio_before_metadata")
    code, reason = await acs_close_on(lone_ingress, acs.audio_message(SILENCE_20MS_16K, "t", "4:+1555"))
    assert (code, reason) == (1008, "AudioData before AudioMetadata")
    assert bad_input("acs", "audio_before_metadata") == before + 1


async def test_start_call_with_malformed_json_is_422_and_counted(lone_ingress: LoneIngress) -> None:
    before = bad_input("jsonapi", "invalid_json")
    async with httpx.AsyncClient(base_url=lone_ingress.http, headers=lone_ingress.creds.api_headers()) as client:
        res = await client.post("/api/v1/calls/start", content=b'{"agent_type": ', headers={
            "Content-Type": "application/json"})
    assert res.status_code == 422
    assert res.json()["detail"][0]["type"] == "json_invalid"
    assert bad_input("jsonapi", "invalid_json") == before + 1


async def test_start_call_with_unsupported_sample_rate_is_422_naming_the_field(lone_ingress: LoneIngress) -> None:
    before = bad_input("jsonapi", "invalid_request")
    async with httpx.AsyncClient(base_url=lone_ingress.http, headers=lone_ingress.creds.api_headers()) as client:
        res = await client.post("/api/v1/calls/start", json={"agent_type": "clinic-receptionist",
                                                              "sample_rate": 11025})
    assert res.status_code == 422
    assert res.json()["detail"][0]["loc"] == ["body", "sample_rate"]
    assert bad_input("jsonapi", "invalid_request") == before + 1


async def test_websocket_of_unknown_session_closes_1008_and_metrics_is_404(lone_ingress: LoneIngress) -> None:
    before = bad_input("jsonapi", "unknown_session")
    token = lone_ingress.app.state.auth.session_token("sess-nope")  # a valid credential for a session never started
    async with websockets.connect(f"{lone_ingress.ws}/ws/call/sess-nope?token={token}") as ws:
        code, reason = await closed_with(ws)
    assert code == 1008
    assert reason.startswith("unknown session_id 'sess-nope'")
    async with httpx.AsyncClient(base_url=lone_ingress.http, headers=lone_ingress.creds.api_headers()) as client:
        res = await client.get("/api/v1/calls/sess-nope/metrics")
    assert res.status_code == 404
    assert "unknown session_id" in res.json()["detail"]
    assert bad_input("jsonapi", "unknown_session") == before + 2


async def test_json_socket_closes_on_malformed_json_unknown_type_and_wrong_rate(lone_ingress: LoneIngress) -> None:
    cases = [
        ("{oops", 1007, "invalid JSON", "invalid_json"),
        (json.dumps({"type": "dance"}), 1003, "unknown message type 'dance'", "unknown_type"),
        (json.dumps({"type": "audio_chunk", "data": "AAAAAA==", "sample_rate": 8000}), 1003,
         "audio_chunk at 8000 Hz, but the session streams 16000 Hz", "bad_sample_rate"),
        (json.dumps({"type": "audio_chunk", "data": "not base64!"}), 1007, "not valid base64", "bad_base64"),
    ]
    for message, want_code, want_reason, metric in cases:
        before = bad_input("jsonapi", metric)
        code, reason = await json_close_on(lone_ingress, message)
        assert code == want_code, message
        assert want_reason in reason, message
        assert bad_input("jsonapi", metric) == before + 1, message


async def test_a_session_can_be_joined_only_once(lone_ingress: LoneIngress) -> None:
    session = await start_session(lone_ingress)
    url = session["websocket_url"]
    async with websockets.connect(url) as first:
        assert json.loads(await first.recv())["type"] == "session_started"
        async with websockets.connect(url) as second:
            code, reason = await closed_with(second)
        assert code == 1008
        assert "is active" in reason


async def test_bad_input_on_other_sockets_leaves_healthy_calls_streaming(lone_ingress: LoneIngress) -> None:
    ing = lone_ingress
    acs_id = f"conn-{uuid.uuid4()}"
    session = await start_session(ing)
    async with (
        websockets.connect(f"{ing.ws}/acs/media?callConnectionId={acs_id}",
                           additional_headers=ing.creds.acs_headers()) as acs_ws,
        websockets.connect(session["websocket_url"]) as api_ws,
    ):
        await acs_ws.send(acs.metadata_message("sub-healthy"))
        assert json.loads(await api_ws.recv())["type"] == "session_started"
        await asyncio.gather(
            acs_close_on(ing, "{bad"), acs_close_on(ing, acs.audio_message(SILENCE_20MS_16K, "t", "x")),
            json_close_on(ing, "[]"), json_close_on(ing, json.dumps({"type": "nope"})),
        )
        per = ing.settings.audio_record_ms // 20  # 20 ms frames per audio.in record
        for _ in range(4 * per):  # four records on each healthy call, after the others failed
            await acs_ws.send(acs.audio_message(SILENCE_20MS_16K, "t", "4:+1555", silent=True))
            await api_ws.send(json.dumps({"type": "audio_chunk", "data": acs.base64.b64encode(SILENCE_20MS_16K)
                                          .decode(), "timestamp": 0}))
        acs_frames = await records_of(ing.settings, AUDIO_IN, acs_id, at_least=4)
        api_frames = await records_of(ing.settings, AUDIO_IN, session["call_id"], at_least=4)
        runtime = ing.app.state.runtime
        assert {acs_id, session["call_id"]} <= set(runtime.egress.sessions)
    assert len(acs_frames) == 4 and len(api_frames) == 4
    assert all(isinstance(f, AudioFrame) and f.pcm == SILENCE_20MS_16K * per for f in acs_frames + api_frames)

