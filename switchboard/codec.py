"""Avro codec for the typed records: plain Avro binary, one datum per Kafka value.

No framing and no schema registry: any consumer decodes a topic with the
official ``avro`` library and the ``.avsc`` file alone. fastavro does the work
here for speed. Field lists are checked against the dataclasses at import.
"""

from __future__ import annotations

import dataclasses
import io
import json
import types
import typing
from enum import Enum
from functools import cache
from pathlib import Path
from typing import Any, TypeVar

import fastavro

from switchboard.records import ALL_RECORDS, AudioFrame, Timings

SCHEMA_DIR = Path(__file__).resolve().parent.parent / "schemas"

R = TypeVar("R")


class DecodeError(ValueError):
    """A value that is not a valid record of the expected schema."""


@cache
def schema_json(name: str) -> dict[str, Any]:
    return json.loads((SCHEMA_DIR / f"{name}.avsc").read_text())


@cache
def parsed_schema(name: str) -> Any:
    return fastavro.parse_schema(schema_json(name))


def _field_kinds(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _nested(hint: Any) -> type | None:
    """The dataclass or Enum inside ``X | None``, if any."""
    args = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    for a in args:
        if isinstance(a, type) and (dataclasses.is_dataclass(a) or issubclass(a, Enum)):
            return a
    return None


def check_schema(cls: type) -> None:
    """Fail if the dataclass and its .avsc disagree on field names or optionality."""
    schema = schema_json(cls.SCHEMA)  # type: ignore[attr-defined]
    avro_fields = {f["name"]: f for f in schema["fields"]}
    kinds = _field_kinds(cls)
    if set(avro_fields) != set(kinds):
        raise TypeError(f"{cls.__name__} fields {sorted(kinds)} != {cls.SCHEMA}.avsc {sorted(avro_fields)}")  # type: ignore[attr-defined]
    for name, f in avro_fields.items():
        nullable = isinstance(f["type"], list) and "null" in f["type"]
        hint_nullable = isinstance(kinds[name], types.UnionType) and type(None) in typing.get_args(kinds[name])
        if nullable != hint_nullable:
            raise TypeError(f"{cls.__name__}.{name}: nullable in avsc={nullable}, in record={hint_nullable}")


def _to_avro(value: Any) -> Any:
    if isinstance(value, Enum):
        return value.value
    if dataclasses.is_dataclass(value):
        return {f.name: _to_avro(getattr(value, f.name)) for f in dataclasses.fields(value)}
    return value


def avro_long(n: int) -> bytes:
    """Avro int/long: zig-zag, then base-128 varint."""
    n = (n << 1) ^ (n >> 63)
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _encode_audio_frame(r: AudioFrame) -> bytes:
    """AudioFrame by hand: the ingress encodes one per record of every call (tens of thousands a second on a
    busy node), and the generic path (dataclass → dict → fastavro) costs several times this. Same bytes as
    fastavro's (tests/spine/test_codec.py), in the schema's field order, checked below at import."""
    call_id = r.call_id.encode()
    tail = b"\x00" if r.agent_turn_seq is None else b"\x02" + avro_long(r.agent_turn_seq)
    return b"".join((avro_long(len(call_id)), call_id, avro_long(r.seq), avro_long(r.ts_us), avro_long(r.sample_rate),
                     avro_long(len(r.pcm)), r.pcm, avro_long(r.reply_partition), tail))


_FAST_ENCODERS: dict[type, Any] = {}
if [f["name"] for f in schema_json(AudioFrame.SCHEMA)["fields"]] == [
    "call_id", "seq", "ts_us", "sample_rate", "pcm", "reply_partition", "agent_turn_seq"
]:  # a changed schema falls back to fastavro rather than writing the old layout
    _FAST_ENCODERS[AudioFrame] = _encode_audio_frame


def encode(record: Any) -> bytes:
    fast = _FAST_ENCODERS.get(type(record))
    if fast is not None:
        return fast(record)
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, parsed_schema(record.SCHEMA), _to_avro(record))
    return buf.getvalue()


@cache
def _converters(cls: type) -> dict[str, type]:
    return {name: t for name, hint in _field_kinds(cls).items() if (t := _nested(hint)) is not None}


def _from_avro(cls: type[R], data: dict[str, Any]) -> R:
    for name, t in _converters(cls).items():
        v = data.get(name)
        if v is None:
            continue
        data[name] = t(v) if issubclass(t, Enum) else _from_avro(t, v)
    return cls(**data)


def decode(cls: type[R], value: bytes | None) -> R:
    if not value:
        raise DecodeError(f"empty value where a {cls.__name__} was expected")
    buf = io.BytesIO(value)
    try:
        data = fastavro.schemaless_reader(buf, parsed_schema(cls.SCHEMA), None)  # type: ignore[attr-defined]
    except Exception as exc:  # fastavro raises many types on garbage input
        raise DecodeError(f"not a valid {cls.__name__}: {type(exc).__name__}: {exc}") from exc
    if buf.tell() != len(value):
        raise DecodeError(f"{len(value) - buf.tell()} trailing bytes after a {cls.__name__}")
    return _from_avro(cls, data)


for _cls in ALL_RECORDS:
    check_schema(_cls)
_ = Timings
