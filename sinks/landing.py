"""Records that ClickHouse decodes itself.

The sink does not decode turn events, turn latencies, engine usage, transcripts
or agent replies in Python: it wraps each Kafka value in an Avro object
container whose schema is the record's own schema with the Kafka coordinates in
front. That container is inserted into a Null-engine *landing table* and
materialized views (``sql/schema.sql``) build the analytics rows from it,
inside ClickHouse.

Why this works without re-encoding: Avro encodes a record as its fields one
after another, so a record ``{kafka_partition, kafka_offset, <fields of the
value>}`` is the two varints followed by the value as produced. Transcripts and
replies carry text, which must be redacted before it reaches ClickHouse: for
them the text field alone is read, redacted and put in front, and its original
bytes are cut out (``sinks.avro_text``).

Each value gets its own container block. A value that is cut short or is not
Avro makes the insert fail (the sink then finds it by decoding the batch in
Python and dead-letters it); bytes left over after a complete record are
dropped at the block's end and cannot shift the records after it.

Landing tables are named after a fingerprint of the schema, so a new schema
gets new landing tables and views while sinks of the old release keep writing
to theirs during a rolling upgrade.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

from sinks.avro_text import TextField, redacted_schema, redacted_value, varint
from sinks.redact import Redactor
from switchboard import codec
from switchboard import records as r


@dataclass(frozen=True, slots=True)
class Landing:
    stem: str  # of the landing table's name
    targets: tuple[str, ...]  # tables its materialized views write
    text: TextField | None = None  # redacted here, cut from what ClickHouse receives (sinks.avro_text)


LANDINGS: dict[type, Landing] = {
    r.TurnEvent: Landing("turn_events", ("events",)),
    r.TurnLatency: Landing("turn_latency", ("turns",)),
    r.EngineUsage: Landing("engine_usage", ("engine_usage",)),
    r.Transcript: Landing("transcripts", ("transcripts",), TextField("text", ("kind", "final"))),
    r.AgentReply: Landing("agent_replies", ("transcripts", "events"), TextField("text", ("kind", "sentence"))),
}
COORDINATES = [{"name": "kafka_partition", "type": "int"}, {"name": "kafka_offset", "type": "long"}]
_PRIMITIVES = {"string": "String", "int": "Int32", "long": "Int64", "float": "Float32", "double": "Float64",
               "boolean": "Bool", "bytes": "String"}


@cache
def framed_schema(cls: type) -> dict[str, Any]:
    """The record's schema with the Kafka coordinates as its first two fields (and its text
    field replaced by the redacted text and the kinds found, first)."""
    schema = codec.schema_json(cls.SCHEMA)  # type: ignore[attr-defined]
    text = LANDINGS[cls].text
    fields = schema["fields"] if text is None else redacted_schema(schema, text)
    return {**schema, "name": f"{schema['name']}Landing", "fields": COORDINATES + fields}


@cache
def landing_table(cls: type) -> str:
    digest = hashlib.sha256(json.dumps(framed_schema(cls), sort_keys=True).encode()).hexdigest()[:10]
    return f"landing_{LANDINGS[cls].stem}_{digest}"


def landing_value(cls: type, value: bytes | None, redactor: Redactor) -> bytes:
    """What ClickHouse receives of one record, the Kafka coordinates aside: the value untouched or,
    for a record with text, rewritten with the text redacted. Raises ``DecodeError``."""
    text = LANDINGS[cls].text
    if text is None:
        return value or b""
    return redacted_value(cls.SCHEMA, text, value, redactor.redact)  # type: ignore[attr-defined]


def clickhouse_type(avro: Any) -> str:
    """The ClickHouse column type that ClickHouse's Avro input reads an Avro type into."""
    if isinstance(avro, str):
        if avro not in _PRIMITIVES:
            raise TypeError(f"no ClickHouse type for Avro {avro!r}")
        return _PRIMITIVES[avro]
    if isinstance(avro, list):
        branches = [b for b in avro if b != "null"]
        if len(branches) != 1 or len(avro) > 2:
            raise TypeError(f"only [null, T] unions land in ClickHouse, not {avro}")
        inner = clickhouse_type(branches[0])
        return f"Nullable({inner})" if "null" in avro else inner
    kind = avro["type"]
    if kind == "enum":
        symbols = ", ".join(f"'{name}' = {i}" for i, name in enumerate(avro["symbols"]))
        return f"Enum{8 if len(avro['symbols']) <= 127 else 16}({symbols})"
    if kind == "record":
        return "Tuple(" + ", ".join(f"{f['name']} {clickhouse_type(f['type'])}" for f in avro["fields"]) + ")"
    if kind == "map":
        return f"Map(String, {clickhouse_type(avro['values'])})"
    if kind == "array":
        return f"Array({clickhouse_type(avro['items'])})"
    return clickhouse_type(kind)


def landing_ddl(cls: type) -> str:
    columns = ",\n    ".join(f"`{f['name']}` {clickhouse_type(f['type'])}" for f in framed_schema(cls)["fields"])
    return (f"CREATE TABLE IF NOT EXISTS {landing_table(cls)}\n(\n    {columns}\n)\nENGINE = Null\n"
            f"COMMENT 'landing of {cls.__name__} records as Avro; materialized views build the rows of "
            f"{' and '.join(LANDINGS[cls].targets)}'")


def framed(partition: int, offset: int, value: bytes) -> bytes:
    """One record of the landing schema, with its size in front: the body of a container block."""
    body = varint(partition) + varint(offset) + value
    return varint(len(body)) + body


def container(cls: type, records: Sequence[bytes]) -> bytes:
    """An Avro object container of records made by ``framed``, one block each."""
    sync = os.urandom(16)
    meta = {"avro.schema": json.dumps(framed_schema(cls)).encode(), "avro.codec": b"null"}
    header = [b"Obj\x01", varint(len(meta))]
    for key, val in meta.items():
        header += [varint(len(key)), key.encode(), varint(len(val)), val]
    head = b"".join(header) + b"\x00" + sync
    if not records:
        return head
    # each block: 1 object, its size, the object, the sync marker
    return head + b"\x02" + (sync + b"\x02").join(records) + sync
