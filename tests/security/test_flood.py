"""Flood: 200 anonymous connection attempts and 200 junk calls in a minute, from strangers' addresses, while and just
before a legitimate, authenticated caller talks to the whole pipeline (every service its own process, real models,
authentication on). The caller is answered within its normal latency during the flood and right after; no stranger
starts a call (so nothing downstream works for one); every refusal is a clear code; the ingress logs no traceback.

The strangers come through a trusted proxy (127.0.0.1, SWITCHBOARD_TRUSTED_PROXIES) that names them in
X-Forwarded-For, as a load balancer would; the legitimate caller reaches the ingress directly."""

from __future__ import annotations

import asyncio
import json
import secrets
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets

from switchboard.audio import BUS_RATE, read_wav, resample
from switchboard.broker import EmbeddedBroker
from switchboard.caller import CallResult, TwilioCaller, Utterance, non_silent
from switchboard.credentials import ClientCredentials, rsa_key_pair
from switchboard.records import CallEvent, CallEventKind
from switchboard.stack import Stack
from switchboard.topics import CALLS
from switchboard.twilio_client import SIGNATURE_HEADER, sign
from tests.conftest import SHARED_AUDIO
from tests.pipeline import running_stack
from tests.security.lone import all_records, twilio_media, twilio_start

pytestmark = pytest.mark.slow

SPINE = ("ingress", "turns", "stt", "agent", "tts")
ATTEMPTS, JUNK_CALLS, FLOOD_S = 200, 200, 50.0
# two addresses, 200 tries each in 50 s: past what the per-minute limit lets through (60 at once, then one a second)
STRANGERS = ["203.0.113.7", "198.51.100.23"]
REFUSED_WS = {1008, 1013}  # not authenticated / over a per-source limit
REFUSED_HTTP = {401, 403, 429}


@pytest.fixture(scope="module")
def stack(broker: EmbeddedBroker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(broker, tmp_path_factory.mktemp("flood-stack"), only=SPINE,
                       SWITCHBOARD_TRUSTED_PROXIES="127.0.0.1") as s:
        yield s


def utterance() -> Utterance:
    samples, rate = read_wav(SHARED_AUDIO / "librivox-0870.wav")
    return Utterance(resample(samples, rate, BUS_RATE), "librivox-0870")


async def legit_call(stack: Stack) -> tuple[CallResult, float]:
    """One authenticated call: the greeting, one real utterance, the answer. Returns it and its response latency
    (end of speech → first agent audio on the socket, as the ingress measured it)."""
    settings = stack.settings.model_copy(update={"kafka_bootstrap": stack.bootstrap})
    caller = TwilioCaller(f"ws://127.0.0.1:{stack.ingress_port}/twilio/media", settings,
                          credentials=stack.client_credentials)
    result = await caller.run([utterance()], timeout_s=30.0)
    assert "reply-0" in result.marks and result.agent_audio and non_silent(result.agent_audio[0]), "no greeting"
    assert result.heard_after_speech_s[0] is not None, "the caller's utterance was never answered"
    latency = next((lat for seq, lat in sorted(result.latencies.items()) if seq > 0), None)
    assert latency is not None and latency.response_ms is not None, "no latency record of the answer"
    return result, latency.response_ms / 1000


class Stranger:
    """Connection attempts without credentials, and junk calls with forged ones, through the trusted proxy."""

    def __init__(self, port: int, acs_audience: str) -> None:
        self.http = f"http://127.0.0.1:{port}"
        self.ws = f"ws://127.0.0.1:{port}"
        forged_pem, _ = rsa_key_pair("attacker")  # an ACS-shaped JWT signed with a key nobody trusts
        self.forged_acs = ClientCredentials(acs_audience=acs_audience, acs_signing_key=forged_pem, acs_kid="attacker")
        self.outcomes: Counter[str] = Counter()

    async def _socket(self, url: str, headers: dict[str, str], messages: list[str]) -> None:
        try:
            async with websockets.connect(url, additional_headers=headers, open_timeout=20) as ws:
                for m in messages:
                    await ws.send(m)
                await asyncio.wait_for(ws.recv(), 20)
                self.outcomes["open"] += 1  # the server said something other than a refusal
        except websockets.ConnectionClosed as exc:
            code = exc.rcvd.code if exc.rcvd else None
            self.outcomes[f"ws {code}" if code in REFUSED_WS else f"unexpected ws {code}"] += 1
        except websockets.InvalidStatus as exc:
            self.outcomes[f"unexpected http {exc.response.status_code}"] += 1
        except TimeoutError:
            self.outcomes["no answer in 20 s"] += 1

    async def attempt(self, i: int) -> None:
        """Anonymous: no signature, no JWT, no API key, no session token."""
        xff = {"X-Forwarded-For": STRANGERS[i % len(STRANGERS)]}
        kind = i % 4
        if kind == 0:
            await self._socket(f"{self.ws}/twilio/media", xff, [])
        elif kind == 1:
            await self._socket(f"{self.ws}/acs/media", xff, [])
        elif kind == 2:
            await self._socket(f"{self.ws}/ws/call/sess-{secrets.token_hex(12)}", xff, [])
        else:
            async with httpx.AsyncClient(timeout=20) as client:
                res = await client.post(f"{self.http}/api/v1/calls/start", json={}, headers=xff)
            self.outcomes[f"http {res.status_code}" if res.status_code in REFUSED_HTTP
                          else f"unexpected http {res.status_code}"] += 1

    async def junk_call(self, i: int) -> None:
        """A call-shaped connection with forged credentials that sends a start and junk media."""
        xff = {"X-Forwarded-For": STRANGERS[i % len(STRANGERS)]}
        call_sid = f"CAjunk{uuid.uuid4().hex}"
        junk = [twilio_media("%%%"), "{not json", json.dumps({"event": "media", "media": {"payload": "A" * 60_000}})]
        kind = i % 3
        if kind == 0:
            forged = sign("0" * 32, f"{self.ws}/twilio/media", {})
            start = twilio_start(call_sid, {"token": secrets.token_urlsafe(24), "CallSid": call_sid})
            await self._socket(f"{self.ws}/twilio/media", {**xff, SIGNATURE_HEADER: forged}, [start, *junk])
        elif kind == 1:
            headers = {**xff, **self.forged_acs.acs_headers(), "x-ms-call-connection-id": f"acs-junk-{uuid.uuid4()}"}
            await self._socket(f"{self.ws}/acs/media", headers, [json.dumps({"kind": "AudioMetadata", "audioMetadata": {
                "subscriptionId": "s", "encoding": "PCM", "sampleRate": 16000, "channels": 1, "length": 3_200_000}}),
                *junk])
        else:
            url = f"{self.ws}/ws/call/sess-{secrets.token_hex(12)}?token={secrets.token_urlsafe(32)}"
            await self._socket(url, xff, [json.dumps({"type": "end_speech"})] * 100)

    async def flood(self) -> None:
        """ATTEMPTS + JUNK_CALLS connections spread evenly over FLOOD_S seconds, a few at a time."""
        jobs = [self.attempt(i) for i in range(ATTEMPTS)] + [self.junk_call(i) for i in range(JUNK_CALLS)]
        jobs = [jobs[i // 2 + (i % 2) * ATTEMPTS] for i in range(len(jobs))]  # interleave the two kinds
        gap = FLOOD_S / len(jobs)
        started = time.monotonic()
        running: list[asyncio.Task[Any]] = []
        for n, job in enumerate(jobs):
            await asyncio.sleep(max(0.0, started + n * gap - time.monotonic()))
            running.append(asyncio.create_task(job))
        await asyncio.gather(*running)


def stages(result: CallResult) -> str:
    """Where the answer's time went (the TurnLatency the egress measured), for failure messages."""
    lat = next((lat for seq, lat in sorted(result.latencies.items()) if seq > 0), None)
    if lat is None:
        return "(no latency record)"
    names = ("response_ms", "stt_ms", "agent_ms", "tts_ms", "bus_overhead_ms")
    return "(" + ", ".join(f"{k} {getattr(lat, k):.0f} ms" for k in names if getattr(lat, k) is not None) + ")"


def _ingress_log(stack: Stack) -> list[dict[str, Any]]:
    [worker] = [w for w in stack.workers if w.service.name == "ingress"]
    lines = []
    for line in worker.log_path.read_text(errors="replace").splitlines():
        try:
            lines.append(json.loads(line))
        except ValueError:
            lines.append({"level": "raw", "msg": line})
    return lines


async def flood_from_elsewhere(stack: Stack) -> Counter[str]:
    """The strangers run in their own process, as they would on their own machines: the caller's process (this one)
    is not slowed by them, only the pipeline could be."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.security.test_flood", str(stack.ingress_port),
        stack.client_credentials.acs_audience, stdout=asyncio.subprocess.PIPE, cwd=Path(__file__).resolve().parents[2])
    out, _ = await asyncio.wait_for(proc.communicate(), FLOOD_S + 120)
    assert proc.returncode == 0, "the flood process failed"
    return Counter(json.loads(out))


async def test_a_flood_of_strangers_leaves_an_authenticated_caller_answered_in_its_normal_time(
        stack: Stack, output_dir: Path) -> None:
    baseline, baseline_s = await legit_call(stack)

    flood = asyncio.create_task(flood_from_elsewhere(stack))
    await asyncio.sleep(5)  # the flood is under way
    during, during_s = await legit_call(stack)
    outcomes = await flood
    after, after_s = await legit_call(stack)

    # normal latency: the caller's own, measured before the flood, with room for a shared 2-core machine
    bound = max(2 * baseline_s, baseline_s + 2.0)
    (output_dir / "security-flood.json").write_text(json.dumps({
        "response_s": {"before": baseline_s, "during": during_s, "after": after_s}, "bound_s": bound,
        "stages": {"before": stages(baseline), "during": stages(during), "after": stages(after)},
        "strangers": outcomes}, indent=2))
    seen = f"before {baseline_s:.2f} s {stages(baseline)}, during {during_s:.2f} s {stages(during)}, after " \
           f"{after_s:.2f} s {stages(after)}"
    assert during_s <= bound and after_s <= bound, seen

    unexpected = {k: v for k, v in outcomes.items() if k.startswith(("unexpected", "open", "no answer"))}
    assert not unexpected, outcomes
    assert sum(outcomes.values()) == ATTEMPTS + JUNK_CALLS
    assert outcomes["ws 1013"] + outcomes["http 429"] > 0, f"the per-source limits never applied: {outcomes}"

    # no stranger got a call started, so nothing downstream (a greeting, a transcript) ever worked for one
    settings = stack.settings.model_copy(update={"kafka_bootstrap": stack.bootstrap})
    legit = {baseline.call_id, during.call_id, after.call_id}
    started = {e.call_id for e in await all_records(settings, CALLS, None, settle_s=0)
               if isinstance(e, CallEvent) and e.kind is CallEventKind.CALL_STARTED}
    assert started == legit
    log = _ingress_log(stack)
    assert not [e for e in log if e.get("level") in ("error", "critical") or "exc" in e
                or "Traceback" in str(e.get("msg", ""))], "the ingress logged errors or tracebacks"


if __name__ == "__main__":  # the flood process: python -m tests.security.test_flood PORT ACS_AUDIENCE
    stranger = Stranger(int(sys.argv[1]), sys.argv[2])
    asyncio.run(stranger.flood())
    print(json.dumps(stranger.outcomes))
