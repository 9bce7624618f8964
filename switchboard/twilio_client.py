"""Open a Twilio media stream the way Twilio does: the signed voice webhook, its TwiML, the signed websocket.

Used by every client that plays Twilio (``switchboard call``, the demo, the load generator, the tests).
"""

from __future__ import annotations

import secrets
import xml.etree.ElementTree as ET

import httpx
import websockets
from twilio.request_validator import RequestValidator

from switchboard.credentials import ClientCredentials

SIGNATURE_HEADER = "X-Twilio-Signature"


class WebhookRefused(RuntimeError):
    """The ingress did not answer the voice webhook with TwiML."""


def voice_form(call_sid: str, caller_number: str, account_sid: str) -> dict[str, str]:
    """The form Twilio posts to a voice webhook when a call comes in (the fields that matter here)."""
    return {
        "AccountSid": account_sid, "ApiVersion": "2010-04-01", "CallSid": call_sid, "CallStatus": "ringing",
        "Called": "+15550199", "Caller": caller_number, "Direction": "inbound", "From": caller_number,
        "To": "+15550199",
    }


def sign(auth_token: str, url: str, params: dict[str, str]) -> str:
    return RequestValidator(auth_token).compute_signature(url, params)


def parse_twiml(xml: str) -> tuple[str, dict[str, str]]:
    """``<Connect><Stream url>`` and its ``<Parameter>``s."""
    stream = ET.fromstring(xml).find("./Connect/Stream")
    if stream is None or not stream.get("url"):
        raise WebhookRefused(f"TwiML without <Connect><Stream url>: {xml[:200]}")
    params = {p.get("name", ""): p.get("value", "") for p in stream.findall("Parameter")}
    return stream.get("url", ""), params


async def open_media_stream(http_base: str, creds: ClientCredentials | None, *, call_sid: str,
                            caller_number: str = "+15550100") -> tuple[websockets.ClientConnection, dict[str, str]]:
    """Do what Twilio does: POST the signed voice webhook (form with CallSid, From, AccountSid), read the TwiML's
    <Stream url> and <Parameter>s, open that websocket with X-Twilio-Signature. Returns the socket and the custom
    parameters to put in the `start` message's customParameters."""
    token = creds.twilio_auth_token if creds else ""
    url = f"{http_base.rstrip('/')}/twilio/voice"
    form = voice_form(call_sid, caller_number, "AC" + secrets.token_hex(16))
    headers = {SIGNATURE_HEADER: sign(token, url, form)} if token else {}
    async with httpx.AsyncClient(timeout=10) as client:
        res = await client.post(url, data=form, headers=headers)
    if res.status_code != 200:
        raise WebhookRefused(f"POST /twilio/voice answered {res.status_code}: {res.text[:200]}")
    stream_url, params = parse_twiml(res.text)
    ws_headers = {SIGNATURE_HEADER: sign(token, stream_url, {})} if token else {}
    ws = await websockets.connect(stream_url, additional_headers=ws_headers, max_size=None)
    return ws, params
