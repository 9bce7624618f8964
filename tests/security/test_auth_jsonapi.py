"""The JSON API: an API key starts a call (only a key marked `:engines` may choose engines); the call's websocket
takes the session's own short-lived token; unjoined sessions are capped."""

from __future__ import annotations

import json
import time

import httpx
import pytest
import websockets

from ingress.auth import SESSION_TOKEN, mint
from switchboard.records import CallEventKind
from switchboard.topics import CALLS
from tests.channels.helpers import bad_input, closed_with, records_of
from tests.security.conftest import Ingress, ServeIngress, refusals

CALL = {"agent_type": "clinic-receptionist", "caller_number": "+15550120", "language": "en-US"}


async def start(ing: Ingress, headers: dict[str, str], **body: object) -> httpx.Response:
    async with httpx.AsyncClient(base_url=ing.http) as client:
        return await client.post("/api/v1/calls/start", json={**CALL, **body}, headers=headers)


async def test_a_call_starts_with_an_api_key_and_its_websocket_url_gets_in(ingress: Ingress) -> None:
    res = await start(ingress, ingress.creds.api_headers())
    assert res.status_code == 200, res.text
    session = res.json()
    assert session["websocket_url"].endswith(f"/ws/call/{session['session_id']}?token={session['token']}")
    async with websockets.connect(session["websocket_url"]) as ws:
        assert json.loads(await ws.recv())["type"] == "session_started"
        started = await records_of(ingress.settings, CALLS, session["call_id"])
    assert started[0].kind is CallEventKind.CALL_STARTED


@pytest.mark.parametrize(("headers", "reason"), [
    ({}, "missing_credentials"),
    ({"Authorization": "Bearer not-a-key-of-this-node"}, "invalid_credentials"),
    ({"Authorization": "Basic dXNlcjpwYXNz"}, "missing_credentials"),
], ids=["anonymous", "wrong key", "another scheme"])
async def test_a_call_start_without_a_valid_api_key_is_401_before_its_body_is_even_read(
        ingress: Ingress, headers: dict[str, str], reason: str) -> None:
    before = refusals("calls_start", reason)
    async with httpx.AsyncClient(base_url=ingress.http) as client:
        res = await client.post("/api/v1/calls/start", content=b'{"agent_type": ', headers={
            **headers, "Content-Type": "application/json"})
    assert res.status_code == 401 and res.headers["www-authenticate"] == "Bearer"
    assert refusals("calls_start", reason) == before + 1


async def test_only_a_key_marked_engines_may_choose_engines_or_a_voice(ingress: Ingress) -> None:
    plain = {"Authorization": f"Bearer {ingress.creds.softphone_key}"}  # a valid key without the engines mark
    before = refusals("calls_start", "engines_not_allowed")
    refused_engines = await start(ingress, plain, engines="agent=openai")
    refused_voice = await start(ingress, plain, voice="azure:en-GB-SoniaNeural")
    default_engines = await start(ingress, plain)
    allowed = await start(ingress, ingress.creds.api_headers(), engines="agent=openai")
    assert (refused_engines.status_code, refused_voice.status_code) == (403, 403)
    assert refused_engines.json()["detail"] == "this API key may not choose engines or a voice"
    assert (default_engines.status_code, allowed.status_code) == (200, 200)
    assert refusals("calls_start", "engines_not_allowed") == before + 2


async def test_the_call_websocket_refuses_no_token_another_sessions_and_an_expired_one_with_1008(
        ingress: Ingress) -> None:
    mine, other = (await start(ingress, ingress.creds.api_headers())).json(), (
        await start(ingress, ingress.creds.api_headers())).json()
    expired = mint(ingress.auth.token_secret, SESSION_TOKEN, mine["session_id"], 120, now=time.time() - 600)
    stream_token = ingress.auth.stream_token(mine["session_id"])  # a Twilio stream token is not a session token
    base = f"{ingress.ws}/ws/call/{mine['session_id']}"
    before = refusals("call_socket", "missing_token"), refusals("call_socket", "invalid_token")
    cases = {
        "no token": (base, "no token"),
        "another session's": (f"{base}?token={other['token']}", "token not valid for this call"),
        "expired": (f"{base}?token={expired}", "token expired"),
        "a stream token": (f"{base}?token={stream_token}", "token not valid for this call"),
        "garbage": (f"{base}?token=123.abc", "token not valid for this call"),
    }
    for name, (url, reason) in cases.items():
        async with websockets.connect(url) as ws:
            assert await closed_with(ws) == (1008, reason), name
    assert refusals("call_socket", "missing_token") == before[0] + 1
    assert refusals("call_socket", "invalid_token") == before[1] + 3
    async with websockets.connect(mine["websocket_url"]) as ws:  # still pending: nobody got in
        assert json.loads(await ws.recv())["type"] == "session_started"


async def test_the_call_metrics_need_an_api_key(ingress: Ingress) -> None:
    session = (await start(ingress, ingress.creds.api_headers())).json()
    path = f"/api/v1/calls/{session['session_id']}/metrics"
    async with httpx.AsyncClient(base_url=ingress.http) as client:
        anonymous = await client.get(path)
        with_key = await client.get(path, headers=ingress.creds.api_headers())
    assert (anonymous.status_code, with_key.status_code) == (401, 200)
    assert with_key.json()["state"] == "pending"


async def test_unjoined_sessions_are_capped_and_the_refusal_is_counted(serve_ingress: ServeIngress) -> None:
    async with serve_ingress(max_pending_sessions=3) as ing:
        before = bad_input("jsonapi", "too_many_pending")
        first = [await start(ing, ing.creds.api_headers()) for _ in range(3)]
        over = await start(ing, ing.creds.api_headers())
        assert [r.status_code for r in first] == [200, 200, 200]
        assert over.status_code == 503 and "waiting to be joined" in over.json()["detail"]
        assert bad_input("jsonapi", "too_many_pending") == before + 1
        async with websockets.connect(first[0].json()["websocket_url"]) as ws:  # joining one frees a place
            assert json.loads(await ws.recv())["type"] == "session_started"
            assert (await start(ing, ing.creds.api_headers())).status_code == 200
