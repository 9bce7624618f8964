"""PII stays out of logs and topics: the caller's number, query strings with tokens, and (when asked) the card,
phone and e-mail mentions of transcripts.

The ingress runs as its own process, as `switchboard up` starts it, and its JSON log is read back line by line."""

from __future__ import annotations

import io
import json
import logging
import os
import re
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest
import websockets
import yaml

from ingress.acs import serializer as acs
from processors.stt.logic import Transcriber
from processors.stt.settings import SttSettings
from sinks.rows import RowBuilder
from switchboard import records as r
from switchboard.audio import array_to_pcm16
from switchboard.broker import EmbeddedBroker, free_port
from switchboard.bus import Correlation, create_topics
from switchboard.credentials import ClientCredentials, StackCredentials
from switchboard.logs import JsonFormatter, PiiFilter
from switchboard.redact import Redactor, caller_hash
from switchboard.runner import Incoming
from switchboard.services import SERVICES
from switchboard.settings import ServiceSettings
from switchboard.stack import Stack
from switchboard.topics import CALLS, SPEECH
from tests.channels.helpers import records_of

ROOT = Path(__file__).resolve().parents[2]
NUMBER = "+14155552671"
DIGITS = NUMBER.removeprefix("+")


@dataclass
class IngressProcess:
    url: str
    settings: ServiceSettings
    creds: ClientCredentials
    hash_key: str
    log_path: Path
    proc: subprocess.Popen[bytes]

    def stop(self) -> list[dict[str, object]]:
        """Stop the process (its log is complete then) and return the log's lines, each parsed as JSON."""
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(30)
        text = self.log_path.read_text()
        return [json.loads(line) for line in text.splitlines() if line.strip()]


@pytest.fixture
async def ingress_process(broker: EmbeddedBroker, tmp_path: Path) -> AsyncIterator[IngressProcess]:
    generated = StackCredentials.ensure(tmp_path / "run", environ={})
    port = free_port()
    settings = ServiceSettings(kafka_bootstrap=broker.bootstrap, topic_prefix=f"p{uuid.uuid4().hex[:8]}.")
    await create_topics(settings)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHBOARD_")}
    env.update(generated.ingress_env())
    env.update({"SWITCHBOARD_KAFKA_BOOTSTRAP": settings.kafka_bootstrap, "SWITCHBOARD_TOPIC_PREFIX":
                settings.topic_prefix, "SWITCHBOARD_PORT": str(port), "SWITCHBOARD_DRAIN_TIMEOUT_S": "1",
                "SWITCHBOARD_LOG_LEVEL": "DEBUG"})  # DEBUG: every line a library may write, access lines included
    log_path = tmp_path / "ingress.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "ingress.main"], env=env, cwd=ROOT, stdout=log, stderr=log)
    ing = IngressProcess(f"127.0.0.1:{port}", settings, ClientCredentials.from_stack(generated),
                         generated.caller_hash_key, log_path, proc)
    deadline = time.monotonic() + 60
    while True:
        assert proc.poll() is None, log_path.read_text()[-2000:]
        try:
            with urllib.request.urlopen(f"http://{ing.url}/ready", timeout=1):
                break
        except OSError:
            assert time.monotonic() < deadline, "the ingress never became ready"
            time.sleep(0.2)
    yield ing
    ing.stop()


async def test_a_call_with_a_caller_number_leaves_no_number_and_no_query_string_in_the_logs_or_call_events(
    ingress_process: IngressProcess,
) -> None:
    ing = ingress_process
    acs_call = f"conn-{uuid.uuid4()}"
    tone = (8000 * np.sin(2 * np.pi * 440 * np.arange(320) / 16000)).astype("<i2").tobytes()
    # ACS: the caller's number in the query string, as a media streaming URL may carry it
    async with websockets.connect(
        f"ws://{ing.url}/acs/media?callConnectionId={acs_call}&caller_number=%2B14155552671",
        additional_headers=ing.creds.acs_headers(),
    ) as ws:
        await ws.send(acs.metadata_message("sub-pii", sample_rate=16000))
        for _ in range(10):
            await ws.send(acs.audio_message(tone, "t", f"4:{NUMBER}"))
        acs_events = await records_of(ing.settings, CALLS, acs_call)
    # the JSON API: the number in the body, the session token in the websocket URL's query
    async with httpx.AsyncClient(base_url=f"http://{ing.url}", headers=ing.creds.api_headers()) as client:
        resp = await client.post("/api/v1/calls/start", json={"agent_type": "clinic", "caller_number": NUMBER})
        assert resp.status_code == 200, resp.text
    body = resp.json()
    session_token = re.search(r"token=([^&]+)", body["websocket_url"]).group(1)
    async with websockets.connect(body["websocket_url"]):
        api_events = await records_of(ing.settings, CALLS, body["call_id"])

    lines = ing.stop()
    text = "\n".join(json.dumps(line) for line in lines)
    assert any("/acs/media" in str(line.get("msg")) for line in lines), "the handshake line was not logged"
    assert any("/ws/call/" in str(line.get("msg")) for line in lines), "the session handshake was not logged"
    for leak in (DIGITS, "%2B1415", "caller_number=", "token=", session_token, ing.creds.api_key):
        assert leak not in text, f"{leak!r} is in the ingress log"

    for events in (acs_events, api_events):
        started = events[0]
        assert started.kind is r.CallEventKind.CALL_STARTED
        assert started.caller_number == "***2671"
        # a keyed hash, the same for one caller on every channel: repeat callers count without the number
        assert started.attributes["caller_hash"] == caller_hash(NUMBER, ing.hash_key)
    assert all(DIGITS not in json.dumps(e.attributes) for e in acs_events + api_events)


def test_log_lines_lose_query_strings_and_phone_numbers_whoever_writes_them() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter("test"))
    handler.addFilter(PiiFilter())
    log = logging.getLogger("test.pii.uvicorn")
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
    try:
        # what uvicorn writes for a websocket handshake and an HTTP request
        log.info('%s - "WebSocket %s" [accepted]', "127.0.0.1:5555", "/acs/media?caller_number=%2B14155552671")
        log.info('%s - "%s %s HTTP/%s" %d', "127.0.0.1:5555", "GET", "/?token=abc123secret", "1.1", 200)
        log.info("call started", extra={"fields": {"caller": NUMBER, "from": DIGITS, "note": "ring 415-555-2671",
                                                   "partition": 12, "url": "wss://h/ws/call/s1?token=abc123secret"}})
    finally:
        log.removeHandler(handler)
    first, second, third = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first["msg"] == '127.0.0.1:5555 - "WebSocket /acs/media" [accepted]'
    assert second["msg"] == '127.0.0.1:5555 - "GET / HTTP/1.1" 200'
    assert (third["caller"], third["from"], third["note"]) == ("***2671", "***2671", "ring ***2671")
    assert third["partition"] == 12 and third["url"] == "wss://h/ws/call/s1"


def test_the_sink_keeps_the_ingress_hash_and_the_masked_number_of_a_call_event() -> None:
    digit_heavy = "1234567890123456"  # a hex hash can be all digits: it must not be taken for a card or phone
    event = r.CallEvent("c1", "s1", r.CallEventKind.CALL_STARTED, 1, "twilio", "a", "en", "n", 0,
                        caller_number="***2671", attributes={"caller_hash": digit_heavy})
    row = RowBuilder(Redactor(), "another-salt").build(event, 0, 0).tables["events"][0]
    caller, hashed, attrs = row[10], row[11], row[14]
    assert (caller, hashed, attrs["caller_hash"]) == ("***2671", digit_heavy, digit_heavy)


# -- transcripts redacted before they are published ------------------------------------------------------------------
@pytest.fixture(scope="module")
def spoken_email() -> np.ndarray:
    from processors.tts.piper import PiperEngine

    # Piper reads it "john dot smith at gmail dot com"; Whisper writes it back as "john.smith at gmail.com"
    return PiperEngine()._synthesize("You can email me at john.smith@gmail.com.")


@pytest.fixture(scope="module")
def whisper() -> object:
    from processors.stt.whisper import WhisperEngine

    return WhisperEngine()


async def transcribe(stt: Transcriber, samples: np.ndarray) -> list[r.Transcript]:
    chunks = [r.SpeechChunk("c1", 3, i // 3200, 0, 16000, array_to_pcm16(samples[i:i + 3200]), False, "en-US")
              for i in range(0, len(samples), 3200)]
    chunks.append(r.SpeechChunk("c1", 3, len(chunks), 0, 16000, b"", True, "en-US"))
    out = []
    for offset, chunk in enumerate(chunks):
        out += [o.record async for o in stt.handle(Incoming(chunk, Correlation(call_id="c1"), SPEECH, 0, offset, 0))]
    return [t for t in out if isinstance(t, r.Transcript)]


async def test_with_redact_transcripts_the_stt_publishes_a_spoken_email_address_masked(
    whisper: object, spoken_email: np.ndarray
) -> None:
    plain = await transcribe(Transcriber(whisper), spoken_email)
    assert "gmail" in plain[-1].text.lower(), f"control: whisper heard the address in {plain[-1].text!r}"

    redacted = await transcribe(Transcriber(whisper, redact=Redactor()), spoken_email)
    final = redacted[-1]
    assert final.kind is r.TranscriptKind.FINAL and "[EMAIL]" in final.text, final.text
    assert all("gmail" not in t.text.lower() and "smith" not in t.text.lower() for t in redacted), [
        t.text for t in redacted]


def test_transcript_redaction_is_off_by_default_and_on_in_the_kubernetes_manifests(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("SWITCHBOARD_REDACT_TRANSCRIPTS", raising=False)
    assert SttSettings().redact_transcripts is False
    monkeypatch.setenv("SWITCHBOARD_REDACT_TRANSCRIPTS", "true")
    assert SttSettings().redact_transcripts is True
    docs = [d for d in yaml.safe_load_all((ROOT / "strimzi" / "60-processors.yaml").read_text()) if d]
    stt = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "stt")
    env = {e["name"]: e.get("value") for e in stt["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["SWITCHBOARD_REDACT_TRANSCRIPTS"] == "true"


def test_switchboard_up_gives_the_report_token_to_the_sink_alone_and_the_caller_hash_key_to_the_ingress_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in [k for k in os.environ if k.startswith("SWITCHBOARD_")]:
        monkeypatch.delenv(name)
    stack = Stack(ServiceSettings(), run_dir=tmp_path)
    stack.credentials = StackCredentials.ensure(tmp_path, environ={})
    envs = {s.name: stack.env(0, s) for s in SERVICES}
    token, key = stack.credentials.query_token, stack.credentials.caller_hash_key
    assert len(token) >= 32 and len(key) >= 32
    assert [n for n, env in envs.items() if env.get("SWITCHBOARD_QUERY_TOKEN") == token] == ["sink"]
    assert [n for n, env in envs.items() if env.get("SWITCHBOARD_CALLER_HASH_KEY") == key] == ["ingress"]
    # `switchboard report` finds the same token; a second `up` keeps both (repeat callers stay recognisable)
    assert ClientCredentials.load(tmp_path, environ={}).query_token == token
    again = StackCredentials.ensure(tmp_path, environ={})
    assert (again.query_token, again.caller_hash_key) == (token, key)
