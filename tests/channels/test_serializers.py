"""The ACS and JSON API wire formats, pure: wire message ⇄ typed record."""

from __future__ import annotations

import base64
import json

import pytest

from ingress.acs import serializer as acs
from ingress.jsonapi import serializer as api
from ingress.protocol import ProtocolError, close_reason
from tests.channels.schema import validate_client, validate_server

PCM = bytes(range(8))


def test_acs_metadata_is_parsed_with_camel_or_pascal_case_keys() -> None:
    camel = acs.parse(acs.metadata_message("sub-1", sample_rate=24000))
    pascal = acs.parse(json.dumps({"Kind": "AudioMetadata", "AudioMetadata": {
        "SubscriptionId": "sub-1", "Encoding": "PCM", "SampleRate": 24000, "Channels": 1, "Length": 960}}))
    assert camel == pascal == acs.AudioMetadata("sub-1", "PCM", 24000, 1, 960)
    assert camel.frame_samples == 480


def test_acs_audio_data_carries_pcm_silence_flag_and_participant() -> None:
    event = acs.parse(acs.audio_message(PCM, "2026-01-01T00:00:00Z", "4:+15550100", silent=False))
    assert event == acs.AudioData(PCM, False, "2026-01-01T00:00:00Z", "4:+15550100")
    silent = acs.parse(json.dumps({"kind": "AudioData", "audioData": {"silent": True}}))
    assert isinstance(silent, acs.AudioData) and silent.silent and silent.pcm == b""


@pytest.mark.parametrize(("message", "code", "metric"), [
    ("[1]", 1007, "invalid_json"),
    (json.dumps({"kind": "AudioData", "audioData": {"data": "%%%"}}), 1007, "bad_base64"),
    (json.dumps({"kind": "AudioData", "audioData": {"data": "AAAA"}}), 1007, "bad_audio"),
    (json.dumps({"kind": "AudioData"}), 1007, "malformed"),
    (json.dumps({"kind": "AudioMetadata", "audioMetadata": {"sampleRate": "fast"}}), 1007, "malformed"),
    (json.dumps({"kind": "AudioMetadata", "audioMetadata": {"encoding": "OPUS"}}), 1003, "bad_format"),
    (json.dumps({"kind": "AudioMetadata", "audioMetadata": {"channels": 2}}), 1003, "bad_format"),
    (acs.metadata_message("s", sample_rate=48000), 1003, "bad_sample_rate"),
    (json.dumps({"kind": "Mystery"}), 1003, "unknown_kind"),
])
def test_acs_bad_messages_raise_a_protocol_error_with_close_code_and_metric(message: str, code: int,
                                                                           metric: str) -> None:
    with pytest.raises(ProtocolError) as err:
        acs.parse(message)
    assert (err.value.code, err.value.metric_reason) == (code, metric)
    assert err.value.reason


def test_acs_outbound_audio_and_stop_audio_match_the_acs_schema() -> None:
    out = json.loads(acs.audio_data(PCM))
    assert out == {"kind": "AudioData", "audioData": {"data": base64.b64encode(PCM).decode()}, "stopAudio": None}
    assert json.loads(acs.stop_audio()) == {"kind": "StopAudio", "audioData": None, "stopAudio": {}}


def test_acs_dtmf_data_is_parsed() -> None:
    assert acs.parse(json.dumps({"kind": "DtmfData", "dtmfData": {"data": "5", "participantRawID": "p"}})) == \
        acs.DtmfData("5", "p")


def test_json_api_client_messages_are_parsed() -> None:
    chunk = api.parse(json.dumps({"type": "audio_chunk", "data": base64.b64encode(PCM).decode(), "timestamp": 12.5}))
    assert chunk == api.AudioChunk(PCM, 12.5, None)
    assert api.parse('{"type": "end_speech"}') == api.EndSpeech()
    assert api.parse('{"type": "hangup"}') == api.Hangup()


@pytest.mark.parametrize(("message", "code", "metric"), [
    ("nope", 1007, "invalid_json"),
    ('"audio_chunk"', 1007, "invalid_json"),
    ('{"type": "audio_chunk"}', 1007, "malformed"),
    ('{"type": "audio_chunk", "data": "AAAA", "sample_rate": "16k"}', 1007, "bad_audio"),
    ('{"type": "audio_chunk", "data": "AAAAAA==", "sample_rate": "16k"}', 1007, "malformed"),
    ('{"type": "audio_chunk", "data": "@@"}', 1007, "bad_base64"),
    ('{"type": "video_chunk"}', 1003, "unknown_type"),
])
def test_json_api_bad_messages_raise_a_protocol_error(message: str, code: int, metric: str) -> None:
    with pytest.raises(ProtocolError) as err:
        api.parse(message)
    assert (err.value.code, err.value.metric_reason) == (code, metric)


def test_json_api_server_messages_have_the_documented_shape() -> None:
    assert json.loads(api.transcript(3, "hello", True, 2_000_000)) == {
        "type": "transcript", "turn": 3, "text": "hello", "final": True, "timestamp": 2.0}
    assert json.loads(api.agent_response(3, 0, "Hi.", 1_000_000)) == {
        "type": "agent_response", "turn": 3, "seq": 0, "text": "Hi.", "timestamp": 1.0}
    audio = json.loads(api.agent_audio(PCM, 16000, 5.0))
    assert base64.b64decode(audio["data"]) == PCM and audio["sample_rate"] == 16000
    assert json.loads(api.clear()) == {"type": "clear"}
    assert json.loads(api.latency(3, {"response_ms": 800.0})) == {"type": "latency", "turn": 3, "response_ms": 800.0}


def test_json_api_messages_validate_against_the_published_websocket_schema() -> None:
    validate_client({"type": "audio_chunk", "data": "AAAA", "timestamp": 1.0})
    validate_client({"type": "end_speech"})
    for message in (api.session_started("s", "c", 16000), api.transcript(1, "hi", False, 1), api.clear(),
                    api.agent_response(1, 0, "Hi.", 1), api.agent_audio(PCM, 16000, 1.0), api.reply_end("reply-1"),
                    api.latency(1, {k: None for k in ("response_ms", "processing_ms", "stt_ms", "agent_ms", "tts_ms",
                                                       "bus_overhead_ms")})):
        validate_server(json.loads(message))


def _acs(kind: str, body: object) -> str:
    return json.dumps({"kind": kind, kind[0].lower() + kind[1:]: body})


# Field types a stranger can choose: every one is a clean 1007, never an exception out of the parser.
ACS_MALFORMED = {
    "deep nesting": '{"kind": "AudioData", "audioData": ' + "[" * 50_000 + "]" * 50_000 + "}",
    "huge integer": _acs("AudioMetadata", {"sampleRate": 10**4000}),
    "sample rate infinite": _acs("AudioMetadata", {"sampleRate": 1e999}),
    "channels a list": _acs("AudioMetadata", {"channels": [1]}),
    "length a word": _acs("AudioMetadata", {"length": "long"}),
    "subscription an object": _acs("AudioMetadata", {"subscriptionId": {"a": 1}}),
    "silent a string": _acs("AudioData", {"silent": "yes"}),
    "participant with spaces": _acs("AudioData", {"participantRawID": "a b"}),
    "dtmf data a list": _acs("DtmfData", {"data": ["1", "2"]}),
    "body a list": json.dumps({"kind": "AudioData", "audioData": []}),
}


@pytest.mark.parametrize("message", ACS_MALFORMED.values(), ids=ACS_MALFORMED.keys())
def test_acs_malformed_fields_close_1007(message: str) -> None:
    with pytest.raises(ProtocolError) as err:
        acs.parse(message)
    assert err.value.code == 1007


def test_acs_metadata_length_is_read_but_a_silent_packet_stands_for_20_ms_whatever_it_announces() -> None:
    meta = acs.parse(acs.metadata_message("sub-1", length=3_200_000))
    assert isinstance(meta, acs.AudioMetadata) and meta.length == 3_200_000
    assert meta.frame_samples == 320


JSON_MALFORMED = {
    "deep nesting": '{"type": "audio_chunk", "data": ' + "[" * 50_000 + "]" * 50_000 + "}",
    "huge integer": '{"type": "audio_chunk", "data": "AAAA", "sample_rate": ' + "1" * 5000 + "}",
    "data an object": json.dumps({"type": "audio_chunk", "data": {"b64": "AAAA"}}),
    "sample rate a float": json.dumps({"type": "audio_chunk", "data": "AAAA", "sample_rate": 1e999}),
}


@pytest.mark.parametrize("message", JSON_MALFORMED.values(), ids=JSON_MALFORMED.keys())
def test_json_api_malformed_fields_close_1007(message: str) -> None:
    with pytest.raises(ProtocolError) as err:
        api.parse(message)
    assert err.value.code == 1007


def test_json_api_timestamp_out_of_range_is_dropped_not_fatal() -> None:
    for ts in (1e999, float("nan"), 10**4000, True):
        chunk = api.parse(json.dumps({"type": "audio_chunk", "data": "AAAAAA==", "timestamp": ts}))
        assert chunk == api.AudioChunk(b"\x00\x00\x00\x00", None, None)


def test_reasons_quote_caller_text_short_and_close_reasons_fit_a_close_frame() -> None:
    with pytest.raises(ProtocolError) as err:
        acs.parse(json.dumps({"kind": "é" * 10_000}))
    assert len(err.value.reason) < 200
    cut = close_reason("é" * 200)
    assert len(cut.encode()) <= 123 and cut == "é" * 61
