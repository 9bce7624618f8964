"""Redacting one text field of an Avro value without decoding the rest of it.

Avro encodes a record as its fields one after another, with nothing between
them. So the fields before the text are stepped over (short: an ID, a few
numbers, an enum), the text is taken out and redacted, and what ClickHouse
receives is the redacted text, the kinds of PII found, then the value with the
text's bytes cut out: the encoding of the same record without that field. The
original text never leaves this process; everything after it is decoded by
ClickHouse, which rejects it if it is not a record of the schema.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any, NamedTuple

from switchboard.codec import DecodeError, avro_long, schema_json


@dataclass(frozen=True, slots=True)
class TextField:
    """A string field that is redacted, and the enum condition under which its text is stored at all
    (a partial transcript, say, makes no row, so its text is dropped without being redacted)."""

    name: str
    stored_when: tuple[str, str] | None = None  # (enum field before the text, symbol)


class Cut(NamedTuple):  # a tuple: a frozen dataclass costs a microsecond to build, every value
    """The text of one value and where it lay."""

    text: str
    start: int  # first byte of the field (its length)
    end: int  # first byte after it
    stored: bool  # ``TextField.stored_when`` holds (or there is no condition)


def read_long(buf: bytes, pos: int) -> tuple[int, int]:
    """An Avro int or long (zig-zag varint) at ``pos``; returns it and the position after it."""
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise DecodeError("value ends inside a number")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return (result >> 1) ^ -(result & 1), pos
        shift += 7
        if shift > 63:
            raise DecodeError("number longer than 10 bytes")


# How each field before the text is passed over. The sink cuts every transcript and reply it
# reads, so they are stepped over inline (no string decoded, no call per field).
_SKIP_LONG, _SKIP_BYTES, _ENUM = range(3)


@cache  # keyed by strings, which hash and compare in C: it is looked up for every value
def _plan(schema: str, name: str, stored_when: tuple[str, str] | None) -> tuple[tuple[int, Any], ...]:
    fields = schema_json(schema)["fields"]
    names = [f["name"] for f in fields]
    if name not in names or fields[names.index(name)]["type"] != "string":
        raise TypeError(f"{schema} has no string field {name!r}")
    condition, symbol = stored_when or (None, None)
    plan: list[tuple[int, Any]] = []  # int, long, string, bytes and enum: the types our text records start with
    for f in fields[:names.index(name)]:
        kind = f["type"]
        is_enum = isinstance(kind, dict) and kind["type"] == "enum"
        if f["name"] == condition and not (is_enum and symbol in kind["symbols"]):
            raise TypeError(f"{schema}.{condition} is not an enum with the symbol {symbol!r}")
        if kind in ("int", "long"):
            plan.append((_SKIP_LONG, None))
        elif kind in ("string", "bytes"):
            plan.append((_SKIP_BYTES, None))
        elif is_enum:
            wanted = kind["symbols"].index(symbol) if f["name"] == condition else -1
            plan.append((_ENUM, (kind["name"], len(kind["symbols"]), wanted)))
        else:
            raise TypeError(f"cannot step over Avro {kind!r} before a text field")
    if condition is not None and condition not in names[:names.index(name)]:
        raise TypeError(f"{schema} has no enum {condition!r} before {name!r}")
    return tuple(plan)


def cut(schema: str, text: TextField, value: bytes | None) -> Cut:
    """Find the text field in an Avro value of ``schema`` by stepping over the fields before it."""
    if not value:
        raise DecodeError(f"empty value where a {schema} was expected")
    pos, size, stored = 0, len(value), True
    try:
        for op, arg in _plan(schema, text.name, text.stored_when):
            byte = value[pos]
            if byte < 0x80:  # one-byte varint, the usual case
                n, pos = (byte >> 1) ^ -(byte & 1), pos + 1
            else:
                n, pos = read_long(value, pos)
            if op == _SKIP_BYTES:
                if n < 0 or pos + n > size:
                    raise DecodeError(f"string of {n} bytes where {size - pos} are left")
                pos += n
            elif op == _ENUM:
                name, count, wanted = arg
                if not 0 <= n < count:
                    raise DecodeError(f"enum {name} has no symbol {n}")
                if wanted >= 0 and n != wanted:
                    stored = False
        start = pos
        byte = value[pos]
        n, pos = ((byte >> 1) ^ -(byte & 1), pos + 1) if byte < 0x80 else read_long(value, pos)
    except IndexError:
        raise DecodeError("value ends inside a number") from None
    end = pos + n
    if n < 0 or end > size:
        raise DecodeError(f"string of {n} bytes where {size - pos} are left")
    try:
        return Cut(value[pos:end].decode("utf-8"), start, end, stored)
    except UnicodeDecodeError as exc:
        raise DecodeError(f"string is not UTF-8: {exc}") from exc


_SMALL = [avro_long(n) for n in range(1 << 13)]  # sizes and partitions: two bytes at most


def varint(n: int) -> bytes:
    """Avro's zig-zag variable-length encoding of an int or long."""
    if 0 <= n < 8192:
        return _SMALL[n]
    if 0 < n < 1 << 27:  # Kafka offsets, mostly: three or four bytes, without the loop
        z = n << 1
        if z < 1 << 21:
            return bytes((z & 0x7F | 0x80, z >> 7 & 0x7F | 0x80, z >> 14))
        return bytes((z & 0x7F | 0x80, z >> 7 & 0x7F | 0x80, z >> 14 & 0x7F | 0x80, z >> 21))
    return avro_long(n)


def string(s: str) -> bytes:
    """An Avro string."""
    raw = s.encode("utf-8")
    return varint(len(raw)) + raw


def string_array(items: list[str]) -> bytes:
    """An Avro array of strings: one block of ``len(items)``, then the end marker."""
    if not items:
        return b"\x00"
    return varint(len(items)) + b"".join(map(string, items)) + b"\x00"


def redacted_schema(schema: dict[str, Any], text: TextField) -> list[dict[str, Any]]:
    """The fields ClickHouse receives for a record with a redacted text field."""
    return [
        {"name": f"{text.name}_redacted", "type": "string"},
        {"name": "redactions", "type": {"type": "array", "items": "string"}},
        *(f for f in schema["fields"] if f["name"] != text.name),
    ]


def redacted_value(schema: str, text: TextField, value: bytes | None, redact: Any) -> bytes:
    """The value as ClickHouse receives it (see ``redacted_schema``); ``redact`` maps a text to an
    object with ``text`` and ``kinds`` (``sinks.redact.Redactor.redact``)."""
    found = cut(schema, text, value)
    assert value is not None
    if not found.stored:
        head = b"\x00\x00"  # not stored: an empty text and no kinds
    else:
        red = redact(found.text)
        # nothing found: the text's own bytes, already an Avro string, and no kinds
        head = string(red.text) + string_array(red.kinds) if red.kinds else value[found.start:found.end] + b"\x00"
    return b"".join((head, value[:found.start], value[found.end:]))
