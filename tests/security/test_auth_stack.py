"""On by default: `switchboard up` (the Stack) generates the credentials, keeps them mode 600, hands each service only
the secrets it uses, and its clients get in with them."""

from __future__ import annotations

import json
import stat
import uuid
from pathlib import Path

import httpx

from switchboard.broker import EmbeddedBroker
from switchboard.credentials import FILE_NAME, ClientCredentials, StackCredentials
from switchboard.records import CallEventKind
from switchboard.services import BY_NAME
from switchboard.settings import ServiceSettings
from switchboard.stack import Stack
from switchboard.topics import CALLS
from tests.channels.helpers import records_of
from tests.pipeline import running_stack, twilio_stream, with_parameters
from tests.spine.test_bad_input import _start

SECRETS = {"SWITCHBOARD_LLM_API_KEY": "sk-llm-secret", "SWITCHBOARD_AZURE_SPEECH_KEY": "speech-secret",
           "SWITCHBOARD_CALLER_HASH_SALT": "salt-secret", "OPENAI_API_KEY": "sk-sdk-secret"}


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_up_generates_every_credential_once_and_keeps_them_mode_600(tmp_path: Path) -> None:
    first = StackCredentials.ensure(tmp_path, environ={})
    again = StackCredentials.ensure(tmp_path, environ={})
    assert first == again, "a second `up` must keep the softphone URL and the keys"
    assert all([first.twilio_auth_token, first.api_key, first.softphone_key, first.token_secret,
                first.metrics_token, first.acs_audience])
    assert mode(tmp_path / FILE_NAME) == 0o600 and mode(Path(first.acs_signing_key)) == 0o600
    assert json.loads((tmp_path / FILE_NAME).read_text())["api_key"] == first.api_key


def test_a_credential_set_in_the_environment_is_used_and_never_written_to_the_file(tmp_path: Path) -> None:
    env = {"SWITCHBOARD_TWILIO_AUTH_TOKEN": "operator-twilio-token",
           "SWITCHBOARD_API_KEYS": "a-plain-key-of-the-operator,the-operators-engines-key:engines"}
    creds = StackCredentials.ensure(tmp_path, environ=env)
    stored = (tmp_path / FILE_NAME).read_text()
    assert "operator-twilio-token" not in stored and "engines-key" not in stored
    assert creds.twilio_auth_token == "" and creds.api_key == ""
    client = ClientCredentials.load(tmp_path, environ=env)
    assert client.twilio_auth_token == "operator-twilio-token"
    assert client.api_key == "the-operators-engines-key"  # the key that may choose engines, without its mark
    assert client.metrics_token == creds.metrics_token  # what the environment lacks comes from the file


def test_each_service_gets_only_the_secrets_it_uses(tmp_path: Path, monkeypatch) -> None:
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    stack = Stack(ServiceSettings(), run_dir=tmp_path)
    stack.credentials = StackCredentials.ensure(tmp_path, environ={})
    envs = {name: stack.env(0, BY_NAME[name]) for name in ("ingress", "turns", "stt", "agent", "tts", "sink")}

    def holders(variable: str) -> set[str]:
        return {name for name, env in envs.items() if variable in env}

    assert holders("SWITCHBOARD_LLM_API_KEY") == {"agent"}
    assert holders("OPENAI_API_KEY") == {"agent"}
    assert holders("SWITCHBOARD_AZURE_SPEECH_KEY") == {"stt", "tts"}
    assert holders("SWITCHBOARD_CALLER_HASH_SALT") == {"sink"}
    for auth_secret in ("SWITCHBOARD_TWILIO_AUTH_TOKEN", "SWITCHBOARD_API_KEYS", "SWITCHBOARD_TOKEN_SECRET",
                        "SWITCHBOARD_METRICS_TOKEN"):
        assert holders(auth_secret) == {"ingress"}, auth_secret
    assert all(env["SWITCHBOARD_KAFKA_BOOTSTRAP"] and "PATH" in env for env in envs.values())


async def test_a_running_stacks_clients_get_in_with_its_credentials_and_strangers_do_not(
        broker: EmbeddedBroker, tmp_path: Path) -> None:
    with running_stack(broker, tmp_path, only=("ingress",), **SECRETS) as stack:
        assert mode(tmp_path / FILE_NAME) == 0o600
        creds = stack.client_credentials
        ingress_env = Path(f"/proc/{stack.workers[0].process.pid}/environ").read_bytes()
        assert creds.twilio_auth_token.encode() in ingress_env
        assert b"sk-llm-secret" not in ingress_env and b"speech-secret" not in ingress_env

        async with httpx.AsyncClient(base_url=stack.http_base) as client:
            assert (await client.get("/metrics")).status_code == 401
            assert (await client.get("/metrics", headers=creds.metrics_headers())).status_code == 200
            assert (await client.get("/")).status_code == 401
            assert (await client.get(creds.softphone_url(stack.http_base))).status_code == 200
            assert (await client.post("/api/v1/calls/start", json={})).status_code == 401
            assert (await client.post("/api/v1/calls/start", json={}, headers=creds.api_headers())).status_code == 200

        call_sid = f"CA{uuid.uuid4().hex}"
        ws, params = await twilio_stream(stack, call_sid)
        async with ws:
            await ws.send(with_parameters(_start(call_sid), params))
            settings = stack.settings.model_copy(update={"kafka_bootstrap": stack.bootstrap})
            started = await records_of(settings, CALLS, call_sid)
        assert started[0].kind is CallEventKind.CALL_STARTED
