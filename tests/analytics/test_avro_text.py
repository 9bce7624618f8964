"""A record's text is found, redacted and cut out of its Avro value without decoding the rest:
what ClickHouse receives decodes, with the official library, to the same record with the text
redacted, and a value that is not a record is refused before anything leaves the process."""

from __future__ import annotations

import io
import json

import avro.io
import avro.schema
import pytest

from sinks.avro_text import TextField, cut, redacted_schema, redacted_value
from sinks.redact import Redactor
from switchboard import codec
from switchboard import records as r
from switchboard.codec import DecodeError

CARD = "4111 1111 1111 1111"
FINAL_ONLY = TextField("text", ("kind", "final"))
SENTENCES = TextField("text", ("kind", "sentence"))


def received(schema: str, text: TextField, value: bytes) -> dict:
    """Decode what ClickHouse receives with the official avro library and the rewritten schema."""
    original = codec.schema_json(schema)
    rewritten = avro.schema.parse(json.dumps({**original, "fields": redacted_schema(original, text)}))
    data = redacted_value(schema, text, value, Redactor().redact)
    decoder = avro.io.BinaryDecoder(io.BytesIO(data))
    out = avro.io.DatumReader(rewritten).read(decoder)
    assert decoder.reader.tell() == len(data)  # nothing left over: the encoding of exactly that record
    return out


def test_a_final_transcript_arrives_redacted_with_every_other_field_intact() -> None:
    said = r.Transcript("call-7", 3, r.TranscriptKind.FINAL, f"my card is {CARD} thanks", "en", 1200, "whisper",
                        99, confidence=0.5, timings=r.Timings(speech_end_us=42))
    out = received("transcript", FINAL_ONLY, codec.encode(said))
    assert out["text_redacted"] == "my card is [CARD] thanks" and out["redactions"] == ["card"]
    assert "text" not in out
    assert (out["call_id"], out["turn_seq"], out["kind"], out["language"], out["audio_ms"], out["ts_us"]) == (
        "call-7", 3, "final", "en", 1200, 99)
    assert out["confidence"] == 0.5 and out["timings"]["speech_end_us"] == 42


def test_a_partial_transcript_is_not_stored_so_its_text_is_dropped_unredacted() -> None:
    said = r.Transcript("c", 1, r.TranscriptKind.PARTIAL, f"my card is {CARD}", "en", 300, "whisper", 5)
    out = received("transcript", FINAL_ONLY, codec.encode(said))
    assert out["text_redacted"] == "" and out["redactions"] == []


def test_an_agent_sentence_with_unicode_keeps_its_intent_and_redacts_the_email() -> None:
    reply = r.AgentReply("c", 2, 1, r.ReplyKind.SENTENCE, "Je vous écris à jane@example.com — d'accord ?", 4,
                         "openai", 7, intent="book", end_call=True)
    out = received("agent_reply", SENTENCES, codec.encode(reply))
    assert out["text_redacted"] == "Je vous écris à [EMAIL] — d'accord ?" and out["redactions"] == ["email"]
    assert (out["seq"], out["intent"], out["end_call"], out["reply_partition"]) == (1, "book", True, 4)


def test_cut_finds_the_text_and_whether_it_is_stored_from_the_fields_before_it() -> None:
    value = codec.encode(r.AgentReply("c" * 200, 2**40, 3, r.ReplyKind.CANCEL, "stop", 0, "policy", 1))
    found = cut("agent_reply", SENTENCES, value)
    assert found.text == "stop" and not found.stored  # a cancel is not a sentence
    assert value[found.start:found.end] == b"\x08stop"
    said = codec.encode(r.AgentReply("c1", 2, 3, r.ReplyKind.SENTENCE, "héllo", 0, "policy", 1))
    assert cut("agent_reply", SENTENCES, said).stored and cut("agent_reply", SENTENCES, said).text == "héllo"


def test_a_text_field_must_be_a_string_after_its_condition() -> None:
    with pytest.raises(TypeError, match="no string field"):
        cut("agent_reply", TextField("seq"), b"\x02")
    with pytest.raises(TypeError, match="not an enum with the symbol 'loud'"):
        cut("agent_reply", TextField("text", ("kind", "loud")), b"\x02")


@pytest.mark.parametrize("value, reason", [
    (b"", "empty value"),
    (b"\x04c1\x04", "ends inside a number"),  # cut inside the fields before the text
    (b"\x04c1\x84", "ends inside a number"),  # cut inside a number of two bytes
    (b"\x40c1\x04", "string of 32 bytes where 3 are left"),  # the call ID claims more than there is
    (b"\x03c1\x04", "string of -2 bytes"),
    (b"\x04c1\x04\x02\x40abc", "bytes where"),  # the text claims more bytes than there are
    (b"\x04c1\x04\x02\x04\xff\xfe", "not UTF-8"),
    (b"\x04c1\x04\x0e\x02a", "no symbol 7"),  # an enum index outside the schema
])
def test_a_value_that_is_not_a_record_is_refused(value: bytes, reason: str) -> None:
    with pytest.raises(DecodeError, match=reason):
        cut("transcript", FINAL_ONLY, value)
