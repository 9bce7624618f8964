"""ACS media streaming: the upgrade carries an RS256 JWT for this resource (audience), from ACS (issuer), signed by a
key of the configured JWKS; anything else is closed 1008. The tests make their own key pairs and JWKS files."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import jwt
import websockets

from ingress.acs import serializer as acs
from switchboard.credentials import ACS_ISSUER, rsa_key_pair
from switchboard.records import CallEventKind
from switchboard.topics import CALLS
from tests.channels.helpers import closed_with, records_of
from tests.security.conftest import Ingress, ServeIngress, refusals

UNSIGNED = jwt.encode({"aud": "resource-id", "iss": ACS_ISSUER}, None, algorithm="none")


def token(pem: str, kid: str, **claims: object) -> str:
    now = int(time.time())
    body = {"aud": "resource-id", "iss": ACS_ISSUER, "iat": now, "exp": now + 300, **claims}
    return jwt.encode(body, pem, algorithm="RS256", headers={"kid": kid})


async def upgrade(ing: Ingress, headers: dict[str, str]) -> tuple[int | None, str]:
    """Connect and announce a stream; (None, "") if the ingress took the call, else how it closed the socket."""
    connection_id = f"conn-{uuid.uuid4()}"
    async with websockets.connect(f"{ing.ws}/acs/media?callConnectionId={connection_id}",
                                  additional_headers=headers) as ws:
        try:
            await ws.send(acs.metadata_message(f"sub-{connection_id}"))
        except websockets.ConnectionClosed as exc:  # refused before the first message
            return (exc.rcvd.code, exc.rcvd.reason) if exc.rcvd else (None, "")
        started = await records_of(ing.settings, CALLS, connection_id, timeout_s=2.0)
        if started and started[0].kind is CallEventKind.CALL_STARTED:
            return None, ""
        return await closed_with(ws)


async def test_acs_takes_a_call_with_a_valid_jwt_and_closes_1008_on_a_missing_wrong_or_expired_one(
        serve_ingress: ServeIngress, tmp_path: Path) -> None:
    pem, jwks = rsa_key_pair("acs-key-1")
    stranger_pem, _ = rsa_key_pair("acs-key-1")  # same kid, another key: a forgery
    jwks_file = tmp_path / "jwks.json"
    jwks_file.write_text(json.dumps(jwks))
    async with serve_ingress(acs_audience="resource-id", acs_jwks=str(jwks_file)) as ing:
        before = {r: refusals("acs_media", r) for r in ("missing_credentials", "invalid_token", "expired_token",
                                                        "wrong_audience")}
        assert await upgrade(ing, {"Authorization": f"Bearer {token(pem, 'acs-key-1')}"}) == (None, "")
        cases = {
            "anonymous": ({}, "Authorization: Bearer <JWT> required"),
            "forged": ({"Authorization": f"Bearer {token(stranger_pem, 'acs-key-1')}"}, "invalid token"),
            "expired": ({"Authorization": f"Bearer {token(pem, 'acs-key-1', exp=int(time.time()) - 120)}"},
                        "token expired"),
            "other resource": ({"Authorization": f"Bearer {token(pem, 'acs-key-1', aud='another-resource')}"},
                               "token not issued for this resource"),
            "other issuer": ({"Authorization": f"Bearer {token(pem, 'acs-key-1', iss='https://evil.example')}"},
                             "token not issued for this resource"),
            "unsigned": ({"Authorization": "Bearer " + UNSIGNED}, "token not signed with RS256"),
        }
        for name, (headers, reason) in cases.items():
            assert await upgrade(ing, headers) == (1008, reason), name
        assert refusals("acs_media", "missing_credentials") == before["missing_credentials"] + 1
        assert refusals("acs_media", "invalid_token") == before["invalid_token"] + 2
        assert refusals("acs_media", "expired_token") == before["expired_token"] + 1
        assert refusals("acs_media", "wrong_audience") == before["wrong_audience"] + 2


async def test_acs_refuses_everyone_while_no_acs_resource_is_configured(serve_ingress: ServeIngress) -> None:
    async with serve_ingress(acs_audience="", acs_jwks="") as ing:
        before = refusals("acs_media", "not_configured")
        assert await upgrade(ing, ing.creds.acs_headers()) == (1008, "ACS is not configured on this node")
        assert refusals("acs_media", "not_configured") == before + 1


async def test_the_generated_local_acs_key_gets_a_local_caller_in(ingress: Ingress) -> None:
    assert await upgrade(ingress, ingress.creds.acs_headers()) == (None, "")


async def test_an_unreachable_jwks_url_refuses_with_its_own_reason(serve_ingress: ServeIngress) -> None:
    pem, _ = rsa_key_pair("acs-key-1")
    async with serve_ingress(acs_audience="resource-id", acs_jwks="https://127.0.0.1:1/calling/keys") as ing:
        before = refusals("acs_media", "keys_unavailable")
        headers = {"Authorization": f"Bearer {token(pem, 'acs-key-1')}"}
        assert await upgrade(ing, headers) == (1008, "signing keys unavailable, try again")
        assert refusals("acs_media", "keys_unavailable") == before + 1
