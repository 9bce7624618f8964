"""The Avro object container the sink hands to ClickHouse for the records it does not decode
itself: a standard container any Avro library reads, each record with its Kafka coordinates."""

from __future__ import annotations

import io

import avro.datafile
import avro.io
import fastavro
import pytest

from sinks.avro_text import varint
from sinks.landing import LANDINGS, container, framed, framed_schema
from switchboard import codec
from switchboard import records as r


def test_the_official_avro_library_reads_the_container_with_each_records_coordinates() -> None:
    records = [r.EngineUsage("c1", "agent", "openai", 10, 1, llm_tokens_in=7, cost_usd=0.25),
               r.EngineUsage("c2", "tts", "piper", 11, None, tts_characters=40)]
    data = container(r.EngineUsage, [framed(5, 12, codec.encode(records[0])),
                                     framed(0, 2**40, codec.encode(records[1]))])
    with avro.datafile.DataFileReader(io.BytesIO(data), avro.io.DatumReader()) as reader:
        rows = list(reader)
    assert [(row["kafka_partition"], row["kafka_offset"], row["call_id"]) for row in rows] == [
        (5, 12, "c1"), (0, 2**40, "c2")]
    assert rows[0]["llm_tokens_in"] == 7 and rows[0]["cost_usd"] == 0.25
    assert rows[1]["turn_seq"] is None and rows[1]["tts_characters"] == 40


def test_an_empty_container_holds_no_records() -> None:
    assert list(fastavro.reader(io.BytesIO(container(r.TurnEvent, [])))) == []


@pytest.mark.parametrize("n", [0, 1, -1, 63, 64, -65, 8191, 8192, 2**20 - 1, 2**20, 2**27 - 1, 2**27, 2**31 - 1,
                               -(2**31), 2**63 - 1, -(2**63)])
def test_varint_is_avros_zigzag_encoding(n: int) -> None:
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, {"type": "long"}, n)
    assert varint(n) == buf.getvalue()


@pytest.mark.parametrize("cls", [cls for cls, landing in LANDINGS.items() if landing.text is None],
                         ids=lambda cls: cls.__name__)
def test_the_landing_schema_is_the_records_schema_after_the_coordinates(cls: type) -> None:
    schema = codec.schema_json(cls.SCHEMA)  # type: ignore[attr-defined]
    fields = framed_schema(cls)["fields"]
    assert [f["name"] for f in fields[:2]] == ["kafka_partition", "kafka_offset"]
    assert fields[2:] == schema["fields"]
