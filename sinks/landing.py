"""Records that ClickHouse decodes itself.

Turn events, turn latencies and engine usage carry no free text, so nothing in
them needs redacting. The sink does not decode them in Python: it wraps each
Kafka value, byte for byte, in an Avro object container whose schema is the
record's own schema with the Kafka coordinates in front. That container is
inserted into a Null-engine *landing table* and a materialized view
(``sql/schema.sql``) builds the analytics rows from it, inside ClickHouse.

Why this works without re-encoding: Avro encodes a record as its fields one
after another, so a record ``{kafka_partition, kafka_offset, <fields of the
value>}`` is the two varints followed by the value as produced.

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
from collections.abc import Iterable
from functools import cache
from typing import Any

from switchboard import codec
from switchboard import records as r

# record type → (landing name stem, the table its materialized view writes)
PASSTHROUGH: dict[type, tuple[str, str]] = {
    r.TurnEvent: ("turn_events", "events"),
    r.TurnLatency: ("turn_latency", "turns"),
    r.EngineUsage: ("engine_usage", "engine_usage"),
}
COORDINATES = [{"name": "kafka_partition", "type": "int"}, {"name": "kafka_offset", "type": "long"}]
_PRIMITIVES = {"string": "String", "int": "Int32", "long": "Int64", "float": "Float32", "double": "Float64",
               "boolean": "Bool", "bytes": "String"}


@cache
def framed_schema(cls: type) -> dict[str, Any]:
    """The record's schema with the Kafka coordinates as its first two fields."""
    schema = codec.schema_json(cls.SCHEMA)  # type: ignore[attr-defined]
    return {**schema, "name": f"{schema['name']}Landing", "fields": COORDINATES + schema["fields"]}


@cache
def landing_table(cls: type) -> str:
    digest = hashlib.sha256(json.dumps(framed_schema(cls), sort_keys=True).encode()).hexdigest()[:10]
    return f"landing_{PASSTHROUGH[cls][0]}_{digest}"


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
            f"COMMENT 'landing of {cls.__name__} records as Avro; the materialized view to "
            f"{PASSTHROUGH[cls][1]} builds the rows'")


def _varint(n: int) -> bytes:
    n = (n << 1) ^ (n >> 63)
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


_SMALL = [_varint(n) for n in range(1 << 13)]  # record sizes and partitions: two bytes at most


def varint(n: int) -> bytes:
    """Avro's zig-zag variable-length encoding of an int or long."""
    return _SMALL[n] if 0 <= n < 8192 else _varint(n)


def container(cls: type, records: Iterable[tuple[int, int, bytes]]) -> bytes:
    """An Avro object container of ``(partition, offset, value)`` records, one block each."""
    sync = os.urandom(16)
    meta = {"avro.schema": json.dumps(framed_schema(cls)).encode(), "avro.codec": b"null"}
    header = [b"Obj\x01", varint(len(meta))]
    for key, val in meta.items():
        header += [varint(len(key)), key.encode(), varint(len(val)), val]
    head = b"".join(header) + b"\x00" + sync
    objects = []
    for partition, offset, value in records:
        framed = varint(partition) + _varint(offset) + value
        objects.append(varint(len(framed)) + framed)
    if not objects:
        return head
    # each block: 1 object, its size, the object, the sync marker
    return head + b"\x02" + (sync + b"\x02").join(objects) + sync
