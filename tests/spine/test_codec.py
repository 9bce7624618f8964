import dataclasses
import io
import json

import avro.io
import avro.schema
import fastavro
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from switchboard import codec
from switchboard.records import ALL_RECORDS, AudioFrame, Timings, TurnLatency
from switchboard.topics import CALL_PARTITIONS, CATALOG, Placement


def _sample(cls):
    values = {}
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING:
            continue
        t = str(f.type)
        if f.name == "kind":
            values[f.name] = next(iter(__import__("typing").get_type_hints(cls)["kind"]))
        elif t.startswith("str"):
            values[f.name] = f"{f.name}-x"
        elif t.startswith("int"):
            values[f.name] = 7
        elif t.startswith("bytes"):
            values[f.name] = b"\x01\x02"
        elif t.startswith("bool"):
            values[f.name] = True
        elif t.startswith("float"):
            values[f.name] = 1.5
        elif t == "Timings":
            values[f.name] = Timings(speech_end_us=1, egress_first_audio_us=2)
    return cls(**values)


@pytest.mark.parametrize("cls", ALL_RECORDS, ids=lambda c: c.__name__)
def test_every_record_round_trips_and_decodes_with_the_official_avro_library(cls):
    record = _sample(cls)
    value = codec.encode(record)
    assert codec.decode(cls, value) == record
    schema = avro.schema.parse((codec.SCHEMA_DIR / f"{cls.SCHEMA}.avsc").read_text())
    decoded = avro.io.DatumReader(schema).read(avro.io.BinaryDecoder(io.BytesIO(value)))
    assert decoded["call_id" if "call_id" in decoded else "source_topic"]


def test_garbage_is_rejected_with_a_decode_error_not_a_crash():
    with pytest.raises(codec.DecodeError):
        codec.decode(AudioFrame, b"\xff\xff\xff\xff\xff")
    with pytest.raises(codec.DecodeError):
        codec.decode(AudioFrame, b"")
    good = codec.encode(_sample(AudioFrame))
    with pytest.raises(codec.DecodeError):
        codec.decode(AudioFrame, good + b"\x00")


def test_a_record_that_drifts_from_its_schema_is_refused():
    @dataclasses.dataclass
    class Drifted:
        SCHEMA = "turn_latency"
        call_id: str

    with pytest.raises(TypeError):
        codec.check_schema(Drifted)
    codec.check_schema(TurnLatency)


def test_every_schema_file_is_self_contained_and_documented():
    for path in codec.SCHEMA_DIR.glob("*.avsc"):
        schema = json.loads(path.read_text())
        avro.schema.parse(path.read_text())
        assert schema.get("doc"), path.name
        assert all(f.get("doc") for f in schema["fields"]), path.name


def test_call_scoped_topics_are_keyed_by_call_id_and_co_partitioned():
    for topic in CATALOG:
        if topic.name != "deadletter":
            assert topic.key == "call_id"
        assert topic.partitions == CALL_PARTITIONS
    assert {t.name for t in CATALOG if t.placement is Placement.REPLY_PARTITION} == {"audio.out", "playback"}


@settings(max_examples=300, deadline=None)
@given(
    call_id=st.text(max_size=40), seq=st.integers(0, 2**63 - 1), ts_us=st.integers(-(2**63), 2**63 - 1),
    sample_rate=st.integers(-(2**31), 2**31 - 1), pcm=st.binary(max_size=4000),
    reply_partition=st.integers(-(2**31), 2**31 - 1), agent_turn_seq=st.none() | st.integers(-(2**31), 2**31 - 1),
)
def test_audio_frames_are_encoded_by_hand_to_exactly_the_bytes_fastavro_writes(**fields):
    """The ingress's hottest record skips the generic path (codec._encode_audio_frame); it must not change a byte."""
    frame = AudioFrame(**fields)
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, codec.parsed_schema(AudioFrame.SCHEMA), dataclasses.asdict(frame))
    assert codec.encode(frame) == buf.getvalue()
    assert codec.decode(AudioFrame, codec.encode(frame)) == frame
