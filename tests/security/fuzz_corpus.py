"""What the fuzz suite sends: hypothesis strategies of connection scripts (structured mutations of valid Twilio, ACS
and JSON API messages, plus junk), and for each channel an oracle that says, from the documented rules alone
(README "Bad input"), how the ingress must answer a script: the close code, and the counter it must bump."""

from __future__ import annotations

import base64
import copy
import json
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st

from ingress.acs import serializer as acs
from ingress.jsonapi import serializer as api
from ingress.protocol import ProtocolError, UnknownMessage
from ingress.twilio import serializer as twilio

CALL_SID, TOKEN = "__CALLSID__", "__TOKEN__"  # filled in per connection: the TwiML's token is bound to the CallSid
MULAW_20MS = base64.b64encode(b"\xff" * 160).decode()
PCM_20MS = base64.b64encode(bytes(640)).decode()

TWILIO_START = {"event": "start", "sequenceNumber": "1", "streamSid": "MZfuzz", "start": {
    "accountSid": "AC" + "0" * 32, "streamSid": "MZfuzz", "callSid": CALL_SID, "tracks": ["inbound"],
    "customParameters": {"From": "+15550100", "CallSid": CALL_SID, "token": TOKEN},
    "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}}}
TWILIO = [
    {"event": "media", "sequenceNumber": "2", "streamSid": "MZfuzz",
     "media": {"track": "inbound", "chunk": "1", "timestamp": "20", "payload": MULAW_20MS}},
    {"event": "dtmf", "streamSid": "MZfuzz", "sequenceNumber": "3", "dtmf": {"track": "inbound_track", "digit": "5"}},
    {"event": "mark", "streamSid": "MZfuzz", "sequenceNumber": "4", "mark": {"name": "reply-0"}},
    {"event": "connected", "protocol": "Call", "version": "1.0.0"},
]
TWILIO_STOP = {"event": "stop", "streamSid": "MZfuzz", "stop": {"accountSid": "AC1", "callSid": CALL_SID}}
ACS_METADATA = json.loads(acs.metadata_message("sub-fuzz"))
ACS = [
    json.loads(acs.audio_message(bytes(640), "2026-01-01T00:00:00Z", "4:+15550100")),
    json.loads(acs.audio_message(b"", "2026-01-01T00:00:00Z", "4:+15550100", silent=True)),
    {"kind": "DtmfData", "dtmfData": {"data": "7", "participantRawID": "4:+15550100"}},
]
JSON = [
    {"type": "audio_chunk", "data": PCM_20MS, "timestamp": 1.5, "sample_rate": 16000},
    {"type": "audio_chunk", "data": PCM_20MS},
    {"type": "end_speech"},
]
JSON_HANGUP = {"type": "hangup"}

# Values a stranger picks for a field: wrong types, extreme numbers, long, nested and odd text.
NASTY: list[Any] = [None, True, False, 0, -1, 2**63, 10**4000, 1e999, -1e999, float("nan"), 1.5, "", "abc", "eight",
                    "\x00", "é" * 50, "\U0001d11e" * 40, "x" * 3000, [], {}, ["a", "b"], [1, [2, [3]]],
                    {"a": {"b": {}}}, "AAAA", "%%%", "9" * 40, "audio/x-l16", 16000, 8000]
JUNK = st.one_of(st.sampled_from(NASTY), st.integers(), st.text(max_size=12))
# Whole messages no mutation of a valid one would produce.
SPECIAL: list[str | bytes] = [
    '{"event": "media", "media": ' + "[" * 5000 + "]" * 5000 + "}",
    '{"kind": "AudioData", "audioData": {"data": ' + "9" * 5000 + "}}",
    '{"type": "audio_chunk", "data": "AAAA", "sample_rate": 1e999}',
    '{"event": NaN, "kind": Infinity, "type": -Infinity}',
    "[]", '"media"', "null", "1", "{}", "", " ", "\ufeff{}",
    b"\x00\x01\x02\xff", b'{"event": "media"}', "é" * 40_000,  # 80 KB in UTF-8, 40,000 characters
    json.dumps({"event": "media", "media": {"payload": "A" * 70_000}}),  # over the 64 KB message cap
    json.dumps({"event": "x" * 60_000}),  # a 60 KB ignored event
]


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    if prefix:
        yield prefix
    if isinstance(value, dict):
        for key, child in value.items():
            yield from _paths(child, (*prefix, key))


@st.composite
def mutated(draw: st.DrawFn, base: dict[str, Any], valid_weight: int = 4) -> str | bytes:
    """``base`` unchanged, or with one field set to junk or removed, or a key added, or its text cut, or a special."""
    kind = draw(st.sampled_from(["valid"] * valid_weight + ["set", "set", "delete", "add", "text", "special"]))
    if kind == "special":
        return draw(st.sampled_from(SPECIAL))
    msg = copy.deepcopy(base)
    if kind in ("set", "delete", "add"):
        path = draw(st.sampled_from(list(_paths(msg))))
        parent = msg
        for key in path[:-1]:
            parent = parent[key]
        if kind == "set":
            parent[path[-1]] = draw(JUNK)
        elif kind == "delete":
            del parent[path[-1]]
        else:
            parent[draw(st.text(max_size=8))] = draw(JUNK)
    text = json.dumps(msg)
    if kind == "text":
        cut = draw(st.integers(0, len(text)))
        text = text[:cut] + draw(st.text(max_size=4))
    return text


@dataclass(frozen=True)
class Script:
    """One connection: its channel and the messages sent on it, in order."""

    channel: str
    messages: tuple[str | bytes, ...]


def _script(channel: str, first: st.SearchStrategy[Any] | None, bases: list[dict[str, Any]],
            last: dict[str, Any]) -> st.SearchStrategy[Script]:
    body = st.lists(st.sampled_from(bases).flatmap(lambda b: mutated(b, valid_weight=40)), min_size=4, max_size=24)
    ending = st.sampled_from([None] * 9 + [last])
    head = first.map(lambda m: [m]) if first is not None else st.just([])
    return st.tuples(head, body, ending).map(
        lambda t: Script(channel, (*t[0], *t[1], *([json.dumps(t[2])] if t[2] else []))))


JUNK_SCRIPT = st.tuples(st.sampled_from(["twilio", "acs", "jsonapi"]), st.lists(
    st.one_of(st.text(max_size=64), st.binary(max_size=64), st.sampled_from(SPECIAL)), min_size=1, max_size=4)
).map(lambda t: Script(t[0], tuple(t[1])))
TWILIO_SCRIPT = _script("twilio", mutated(TWILIO_START, valid_weight=30), TWILIO, TWILIO_STOP)
ACS_SCRIPT = _script("acs", mutated(ACS_METADATA, valid_weight=30), ACS, ACS[0])
JSON_SCRIPT = _script("jsonapi", None, JSON, JSON_HANGUP)
SCRIPTS = st.one_of(TWILIO_SCRIPT, TWILIO_SCRIPT, TWILIO_SCRIPT, ACS_SCRIPT, ACS_SCRIPT, ACS_SCRIPT,
                    JSON_SCRIPT, JSON_SCRIPT, JSON_SCRIPT, JUNK_SCRIPT)


def generate(n: int, corpus_seed: int = 12) -> list[Script]:
    """``n`` scripts drawn by hypothesis (generation only: the socket run decides pass or fail)."""
    out: list[Script] = []

    @seed(corpus_seed)  # the same corpus every run: a failure names a script that fails again
    @settings(max_examples=n, database=None, phases=[Phase.generate], deadline=None,
              suppress_health_check=list(HealthCheck))
    @given(SCRIPTS)
    def collect(script: Script) -> None:
        out.append(script)

    collect()
    return out


# -- oracles: what the ingress must answer, from the documented rules ----------------------------------------------


@dataclass
class Expected:
    """The close code the server must send (None: it keeps the socket open), how many messages it read, and what
    it counts in switchboard_bad_input_total{reason}."""

    code: int | None = None
    read: int = 0
    counted: Counter[str] = field(default_factory=Counter)
    reason: str = ""


def _closes(exp: Expected, code: int, reason: str, metric: str | None) -> Expected:
    exp.code, exp.reason = code, reason
    if metric:
        exp.counted[metric] += 1
    return exp


def _parsed(parse: Callable[[str | bytes], Any], message: str | bytes) -> Any:
    try:
        return parse(message)
    except ProtocolError as exc:
        # the catch-all is a net, never the plan: every input the fuzz finds must have been foreseen
        assert not exc.reason.startswith("malformed message ("), f"unforeseen input {message[:200]!r}: {exc.reason}"
        return exc


def expect_twilio(messages: list[str | bytes], max_bytes: int, token_ok: Callable[[str, str | None], bool]) -> Expected:
    exp, started = Expected(), False
    for m in messages:
        exp.read += 1
        if len(m) > max_bytes:
            return _closes(exp, 1009, "exceeds", "oversized")
        try:
            event = _parsed(twilio.parse, m)
        except UnknownMessage:
            exp.counted["unknown_event"] += 1
            continue
        if isinstance(event, ProtocolError):
            return _closes(exp, event.code, event.reason, event.metric_reason)
        if isinstance(event, twilio.Media) and not started:
            return _closes(exp, 1008, "media before start", "media_before_start")
        if isinstance(event, twilio.Start):
            if started:
                return _closes(exp, 1008, "second start on one stream", "duplicate_start")
            if event.encoding != "audio/x-mulaw" or event.sample_rate != twilio.MULAW_RATE:
                return _closes(exp, 1003, "unsupported media format", "bad_format")
            if not token_ok(event.call_sid, event.custom_parameters.get("token")):
                return _closes(exp, 1008, "", None)  # counted as an auth refusal, not as bad input
            started = True
        if isinstance(event, twilio.Stop):
            return _closes(exp, 1000, "call ended", None)
    return exp


def expect_acs(messages: list[str | bytes], max_bytes: int) -> Expected:
    exp, meta = Expected(), False
    for m in messages:
        exp.read += 1
        if len(m) > max_bytes:
            return _closes(exp, 1009, "exceeds", "oversized")
        event = _parsed(acs.parse, m)
        if isinstance(event, ProtocolError):
            return _closes(exp, event.code, event.reason, event.metric_reason)
        if isinstance(event, acs.AudioData) and not meta:
            return _closes(exp, 1008, "AudioData before AudioMetadata", "audio_before_metadata")
        if isinstance(event, acs.AudioMetadata):
            if meta:
                return _closes(exp, 1008, "second AudioMetadata on one stream", "duplicate_metadata")
            meta = True
    return exp


def expect_json(messages: list[str | bytes], max_bytes: int, sample_rate: int = 16_000) -> Expected:
    exp = Expected()
    for m in messages:
        exp.read += 1
        if len(m) > max_bytes:
            return _closes(exp, 1009, "exceeds", "oversized")
        event = _parsed(api.parse, m)
        if isinstance(event, ProtocolError):
            return _closes(exp, event.code, event.reason, event.metric_reason)
        if isinstance(event, api.AudioChunk) and event.sample_rate is not None and event.sample_rate != sample_rate:
            return _closes(exp, 1003, "audio_chunk at", "bad_sample_rate")
        if isinstance(event, api.Hangup):
            return _closes(exp, 1000, "call ended", None)
    return exp
