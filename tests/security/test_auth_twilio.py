"""Twilio: the voice webhook and the media stream refuse anyone who cannot sign as the account, and a stream whose
`start` does not echo the token the TwiML handed out for that very call."""

from __future__ import annotations

import json
import time
import xml.etree.ElementTree as ET

import httpx
import websockets
from twilio.request_validator import RequestValidator

from ingress.auth import STREAM_TOKEN, mint
from switchboard.records import CallEventKind
from switchboard.topics import CALLS
from switchboard.twilio_client import open_media_stream, voice_form
from tests.channels.helpers import closed_with, records_of
from tests.security.conftest import Ingress, ServeIngress, refusals


def start_message(call_sid: str, params: dict[str, str]) -> str:
    return json.dumps({"event": "start", "sequenceNumber": "1", "streamSid": f"MZ{call_sid}", "start": {
        "accountSid": "AC" + "1" * 32, "streamSid": f"MZ{call_sid}", "callSid": call_sid, "tracks": ["inbound"],
        "customParameters": params, "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}}})


async def post_voice(ing: Ingress, form: dict[str, str], signature: str | None, host: str | None = None
                     ) -> httpx.Response:
    headers = {"X-Twilio-Signature": signature} if signature is not None else {}
    if host:
        headers["Host"] = host
    async with httpx.AsyncClient(base_url=ing.http) as client:
        return await client.post("/twilio/voice", data=form, headers=headers)


async def stream_refused_with(url: str, headers: dict[str, str], *messages: str) -> tuple[int | None, str]:
    async with websockets.connect(url, additional_headers=headers) as ws:
        for m in messages:
            await ws.send(m)
        return await closed_with(ws)


async def test_the_webhook_posted_exactly_as_twilio_posts_it_returns_twiml_whose_stream_and_token_work(
        ingress: Ingress) -> None:
    url = f"{ingress.http}/twilio/voice"
    form = voice_form("CAexact0001", "+15550111", "AC" + "2" * 32)
    # Twilio's algorithm: HMAC-SHA1 over the full URL then each form field's name and value, sorted by name
    signature = RequestValidator(ingress.creds.twilio_auth_token).compute_signature(url, form)
    res = await post_voice(ingress, form, signature)
    assert res.status_code == 200 and res.headers["content-type"].startswith("application/xml")
    stream = ET.fromstring(res.text).find("./Connect/Stream")
    assert stream is not None and stream.get("url") == f"{ingress.ws}/twilio/media"
    params = {p.get("name"): p.get("value") for p in stream.findall("Parameter")}
    assert params["CallSid"] == "CAexact0001" and params["From"] == "+15550111" and params["token"]

    ws_signature = RequestValidator(ingress.creds.twilio_auth_token).compute_signature(stream.get("url"), {})
    async with websockets.connect(stream.get("url"), additional_headers={"X-Twilio-Signature": ws_signature}) as ws:
        await ws.send(start_message("CAexact0001", params))
        started = await records_of(ingress.settings, CALLS, "CAexact0001")
    assert started[0].kind is CallEventKind.CALL_STARTED and started[0].caller_number.endswith("0111")  # From


async def test_the_webhook_refuses_a_missing_or_wrong_signature_with_403_and_counts_it(ingress: Ingress) -> None:
    form = voice_form("CAanon", "+15550112", "AC" + "3" * 32)
    before = refusals("twilio_voice", "missing_signature"), refusals("twilio_voice", "invalid_signature")
    anonymous = await post_voice(ingress, form, None)
    forged = await post_voice(ingress, form, RequestValidator("not-the-token").compute_signature(
        f"{ingress.http}/twilio/voice", form))
    tampered_form = await post_voice(ingress, {**form, "From": "+19990000000"}, RequestValidator(
        ingress.creds.twilio_auth_token).compute_signature(f"{ingress.http}/twilio/voice", form))
    assert (anonymous.status_code, forged.status_code, tampered_form.status_code) == (403, 403, 403)
    assert "<Stream" not in anonymous.text + forged.text + tampered_form.text
    assert refusals("twilio_voice", "missing_signature") == before[0] + 1
    assert refusals("twilio_voice", "invalid_signature") == before[1] + 2


async def test_an_attackers_host_header_is_not_reflected_into_the_stream_url(ingress: Ingress) -> None:
    form = voice_form("CAhost", "+15550113", "AC" + "4" * 32)
    # a genuine signature replayed with a forged Host: the signature covers the host, so it no longer checks
    genuine = RequestValidator(ingress.creds.twilio_auth_token).compute_signature(f"{ingress.http}/twilio/voice",
                                                                                   form)
    res = await post_voice(ingress, form, genuine, host="evil.example")
    assert res.status_code == 403 and "evil.example" not in res.text


async def test_public_url_sets_the_stream_url_and_is_the_url_twilio_signs(serve_ingress: ServeIngress) -> None:
    async with serve_ingress(public_url="https://voice.example.com") as ing:
        form = voice_form("CApublic", "+15550114", "AC" + "5" * 32)
        validator = RequestValidator(ing.creds.twilio_auth_token)
        # behind a proxy Twilio signs the public https URL, not the one this process sees
        res = await post_voice(ing, form, validator.compute_signature("https://voice.example.com/twilio/voice", form),
                               host="attacker.example")
        as_seen_here = await post_voice(ing, form, validator.compute_signature(f"{ing.http}/twilio/voice", form))
    assert res.status_code == 200
    assert ET.fromstring(res.text).find("./Connect/Stream").get("url") == "wss://voice.example.com/twilio/media"
    assert as_seen_here.status_code == 403


async def test_the_media_upgrade_without_a_valid_signature_is_closed_1008(ingress: Ingress) -> None:
    url = f"{ingress.ws}/twilio/media"
    before = refusals("twilio_media", "missing_signature"), refusals("twilio_media", "invalid_signature")
    anonymous = await stream_refused_with(url, {})
    wrong = await stream_refused_with(url, {"X-Twilio-Signature": RequestValidator("nope").compute_signature(url, {})})
    assert anonymous == (1008, "X-Twilio-Signature required")
    assert wrong == (1008, "X-Twilio-Signature does not match")
    assert refusals("twilio_media", "missing_signature") == before[0] + 1
    assert refusals("twilio_media", "invalid_signature") == before[1] + 1


async def test_a_start_without_the_token_or_with_another_calls_or_an_expired_one_is_closed_1008(
        ingress: Ingress) -> None:
    url = f"{ingress.ws}/twilio/media"
    signed = {"X-Twilio-Signature": RequestValidator(ingress.creds.twilio_auth_token).compute_signature(url, {})}
    other_calls = ingress.auth.stream_token("CAsomeoneelse")
    expired = mint(ingress.auth.token_secret, STREAM_TOKEN, "CAlate", ingress.auth.ttl_s, now=time.time() - 600)
    session_token = ingress.auth.session_token("CAlate")  # a token of the JSON API is not a stream token
    before = refusals("twilio_media", "invalid_token")
    cases = {
        "no token": (start_message("CAnotoken", {}), (1008, "no token")),
        "another call's": (start_message("CAlate", {"token": other_calls}), (1008, "token not valid for this call")),
        "expired": (start_message("CAlate", {"token": expired}), (1008, "token expired")),
        "a session token": (start_message("CAlate", {"token": session_token}),
                            (1008, "token not valid for this call")),
    }
    for name, (message, want) in cases.items():
        assert await stream_refused_with(url, signed, message) == want, name
    assert refusals("twilio_media", "invalid_token") == before + 2
    assert "CAlate" not in ingress.app.state.runtime.egress.sessions


async def test_open_media_stream_gets_in_as_twilio_does(ingress: Ingress) -> None:
    ws, params = await open_media_stream(ingress.http, ingress.creds, call_sid="CAclient01")
    async with ws:
        await ws.send(start_message("CAclient01", params))
        started = await records_of(ingress.settings, CALLS, "CAclient01")
    assert started[0].kind is CallEventKind.CALL_STARTED
