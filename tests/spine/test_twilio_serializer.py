import base64
import json

import pytest

from ingress.protocol import ProtocolError, UnknownMessage
from ingress.twilio import serializer as wire

START = {
    "event": "start",
    "sequenceNumber": "1",
    "streamSid": "MZ1",
    "start": {
        "accountSid": "AC1",
        "streamSid": "MZ1",
        "callSid": "CA1",
        "tracks": ["inbound"],
        "customParameters": {"caller_number": "+15550100"},
        "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
    },
}


def test_start_carries_call_and_stream_ids_and_custom_parameters():
    ev = wire.parse(json.dumps(START))
    assert ev == wire.Start("MZ1", "CA1", "AC1", "audio/x-mulaw", 8000, {"caller_number": "+15550100"})


def test_media_payload_is_decoded_from_base64():
    msg = {
        "event": "media",
        "streamSid": "MZ1",
        "media": {"chunk": "2", "timestamp": "40", "payload": base64.b64encode(b"\xff" * 160).decode()},
    }
    ev = wire.parse(json.dumps(msg))
    assert isinstance(ev, wire.Media) and ev.payload == b"\xff" * 160 and ev.chunk == 2 and ev.timestamp_ms == 40


@pytest.mark.parametrize(
    ("msg", "expected"),
    [
        ({"event": "connected", "protocol": "Call"}, wire.Connected("Call")),
        ({"event": "dtmf", "streamSid": "MZ1", "dtmf": {"digit": "5"}}, wire.Dtmf("MZ1", "5")),
        ({"event": "mark", "streamSid": "MZ1", "mark": {"name": "reply-3"}}, wire.Mark("MZ1", "reply-3")),
        ({"event": "stop", "streamSid": "MZ1", "stop": {}}, wire.Stop("MZ1")),
    ],
)
def test_control_events_parse_to_typed_events(msg, expected):
    assert wire.parse(json.dumps(msg)) == expected


@pytest.mark.parametrize(
    ("text", "code", "reason"),
    [
        ("{not json", 1007, "invalid_json"),
        ("[1, 2]", 1007, "invalid_json"),
        ('{"event": "media", "media": {"payload": "@@not-base64@@"}}', 1007, "bad_base64"),
        ('{"event": "media"}', 1007, "malformed"),
        ('{"event": "start", "start": {"streamSid": "MZ1"}}', 1007, "malformed"),
    ],
)
def test_malformed_messages_raise_protocol_errors_with_close_codes(text, code, reason):
    with pytest.raises(ProtocolError) as err:
        wire.parse(text)
    assert err.value.code == code and err.value.metric_reason == reason


def test_unknown_events_are_reported_as_unknown_not_as_errors():
    with pytest.raises(UnknownMessage):
        wire.parse('{"event": "surprise"}')


def test_outbound_messages_follow_the_twilio_shapes():
    assert json.loads(wire.media("MZ1", b"\x00\x01")) == {
        "event": "media",
        "streamSid": "MZ1",
        "media": {"payload": "AAE="},
    }
    assert json.loads(wire.mark("MZ1", "m")) == {"event": "mark", "streamSid": "MZ1", "mark": {"name": "m"}}
    assert json.loads(wire.clear("MZ1")) == {"event": "clear", "streamSid": "MZ1"}


def test_twiml_connects_the_call_to_the_media_stream():
    xml = wire.twiml_connect_stream("wss://example.test/twilio/media", {"From": "+1555"})
    assert '<Connect><Stream url="wss://example.test/twilio/media">' in xml
    assert '<Parameter name="From" value="+1555"/>' in xml


def _start_with(**start: object) -> str:
    return json.dumps({**START, "start": {**START["start"], **start}})


def _media_with(**media: object) -> str:
    return json.dumps({"event": "media", "streamSid": "MZ1", "media": {"payload": "/w==", **media}})


# The inputs a stranger found crashing the parser (issue 12): each must be a clean 1007, never an exception.
CRASHERS = {
    "deep nesting": '{"event": "media", "media": ' + "[" * 100_000 + "]" * 100_000 + "}",
    "5000-digit integer": '{"event": "media", "media": {"chunk": ' + "9" * 5000 + "}}",
    "5000-digit sampleRate": _start_with(mediaFormat={"sampleRate": 10**4000}),
    "mediaFormat a string": _start_with(mediaFormat="audio/x-mulaw"),
    "mediaFormat a list": _start_with(mediaFormat=["audio/x-mulaw", 8000]),
    "sampleRate a word": _start_with(mediaFormat={"encoding": "audio/x-mulaw", "sampleRate": "eight"}),
    "sampleRate infinite": _start_with(mediaFormat={"sampleRate": 1e999}),
    "sampleRate NaN": _start_with(mediaFormat={"sampleRate": float("nan")}),
    "sampleRate a bool": _start_with(mediaFormat={"sampleRate": True}),
    "customParameters a list": _start_with(customParameters=["a", "b"]),
    "customParameters nested": _start_with(customParameters={"a": {"b": 1}}),
    "callSid an object": _start_with(callSid={"sid": "CA1"}),
    "callSid with spaces": _start_with(callSid="CA 1; drop"),
    "chunk a word": _media_with(chunk="abc"),
    "timestamp infinite": _media_with(timestamp=1e999),
    "timestamp negative": _media_with(timestamp="-5"),
    "payload a number": _media_with(payload=12),
    "streamSid a list": json.dumps({"event": "stop", "streamSid": ["MZ1"]}),
    "dtmf digit an object": json.dumps({"event": "dtmf", "dtmf": {"digit": {"x": 1}}}),
}


@pytest.mark.parametrize("text", CRASHERS.values(), ids=CRASHERS.keys())
def test_malformed_fields_close_1007_instead_of_raising(text):
    with pytest.raises(ProtocolError) as err:
        wire.parse(text)
    assert err.value.code == 1007
    assert err.value.metric_reason in {"invalid_json", "malformed", "bad_base64"}


def test_numbers_sent_as_strings_are_read_as_twilio_sends_them():
    ev = wire.parse(_start_with(mediaFormat={"encoding": "audio/x-mulaw", "sampleRate": "8000", "channels": 1}))
    assert isinstance(ev, wire.Start) and ev.sample_rate == 8000


def test_an_unknown_event_name_is_shown_short_however_long_it_is():
    with pytest.raises(UnknownMessage) as err:
        wire.parse(json.dumps({"event": "x" * 60_000}))
    assert len(str(err.value)) < 100
