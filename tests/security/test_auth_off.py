"""SWITCHBOARD_AUTH=off lets anonymous callers in everywhere, and says so loudly when the ingress starts."""

from __future__ import annotations

import json
import logging
import uuid

import httpx
import pytest
import websockets

from ingress.acs import serializer as acs
from switchboard.credentials import ClientCredentials
from switchboard.records import CallEventKind
from switchboard.topics import CALLS
from switchboard.twilio_client import open_media_stream
from tests.channels.helpers import records_of
from tests.security.conftest import ServeIngress
from tests.security.test_auth_twilio import start_message


async def test_auth_off_lets_anonymous_in_everywhere_and_warns_at_start_up(
        serve_ingress: ServeIngress, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        async with serve_ingress(auth="off") as ing:
            warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
            assert any("AUTHENTICATION IS OFF" in w for w in warnings), warnings

            async with httpx.AsyncClient(base_url=ing.http) as client:
                for path in ("/metrics", "/openapi.json", "/docs", "/", "/api/v1/schemas/websocket.json"):
                    assert (await client.get(path)).status_code == 200, path
                res = await client.post("/api/v1/calls/start", json={"engines": "agent=openai"})
            assert res.status_code == 200
            session = res.json()
            async with websockets.connect(f"{ing.ws}/ws/call/{session['session_id']}") as ws:  # no token
                assert json.loads(await ws.recv())["type"] == "session_started"

            ws, params = await open_media_stream(ing.http, ClientCredentials.load(environ={"SWITCHBOARD_AUTH": "off"}),
                                                 call_sid="CAoff0001")
            assert "token" not in params
            async with ws:  # nobody signed the webhook or the upgrade, and the start has no token
                await ws.send(start_message("CAoff0001", params))
                twilio_started = await records_of(ing.settings, CALLS, "CAoff0001")

            connection_id = f"conn-{uuid.uuid4()}"
            async with websockets.connect(f"{ing.ws}/acs/media?callConnectionId={connection_id}") as ws:
                await ws.send(acs.metadata_message("sub-off"))
                acs_started = await records_of(ing.settings, CALLS, connection_id)
    assert twilio_started[0].kind is CallEventKind.CALL_STARTED
    assert acs_started[0].kind is CallEventKind.CALL_STARTED


def test_clients_present_nothing_when_auth_is_off(tmp_path) -> None:
    creds = ClientCredentials.load(tmp_path, environ={"SWITCHBOARD_AUTH": "off"})
    assert not creds.enabled and creds.api_headers() == {} and creds.acs_headers() == {}
