"""What the sink holds between two flushes: rows built in Python (records with text to
redact), undecoded Avro values for ClickHouse to decode (``sinks.landing``), the calls
they touch and the offsets to commit once they are written."""

from __future__ import annotations

from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any

from aiokafka import TopicPartition
from aiokafka.structs import ConsumerRecord

from sinks.landing import LANDINGS, framed, landing_value
from sinks.rows import RowBuilder, Rows
from switchboard import codec

CALL_FACTS = frozenset({"events", "engine_usage", "call_summaries"})  # the tables `calls` is computed from


@dataclass(slots=True)
class Landed:
    msgs: list[ConsumerRecord] = field(default_factory=list)
    values: list[bytes] = field(default_factory=list)  # what ClickHouse receives of each


@dataclass(slots=True)
class Batch:
    rows: dict[str, list[tuple[Any, ...]]] = field(default_factory=dict)
    origins: dict[str, list[ConsumerRecord]] = field(default_factory=dict)  # the record of each row
    landed: dict[type, Landed] = field(default_factory=dict)  # record type → what ClickHouse decodes
    call_ids: set[str] = field(default_factory=set)
    offsets: dict[TopicPartition, int] = field(default_factory=dict)
    count: int = 0  # rows (a landed record makes one)
    since: float = 0.0  # monotonic time of the oldest record

    def empty(self) -> bool:
        return not self.offsets

    def add(self, cls: type, msgs: list[ConsumerRecord], builder: RowBuilder) -> list[tuple[ConsumerRecord, str]]:
        """Buffer records of one type: landed for ClickHouse to decode, or built into rows here.
        Returns the records that cannot be read, with the reason, for the dead-letter topic."""
        unreadable: list[tuple[ConsumerRecord, str]] = []
        landing = LANDINGS.get(cls)
        if landing is not None and landing.text is None:
            self.add_landed(cls, msgs, [framed(m.partition, m.offset, m.value or b"") for m in msgs])
        elif landing is not None:
            kept, values = [], []
            for msg in msgs:
                try:
                    values.append(framed(msg.partition, msg.offset, landing_value(cls, msg.value, builder.redactor)))
                    kept.append(msg)
                except codec.DecodeError as exc:
                    unreadable.append((msg, f"DecodeError: {exc}"))
            self.add_landed(cls, kept, values)
        else:
            for msg in msgs:
                try:
                    self.add_rows(msg, builder.build(codec.decode(cls, msg.value), msg.partition, msg.offset))
                except Exception as exc:
                    unreadable.append((msg, f"{type(exc).__name__}: {exc}"))
        return unreadable

    def consumed(self, tp: TopicPartition, offset: int, now: float) -> None:
        """Mark an offset as read: it is committed with the batch, whatever became of the record."""
        if not self.offsets:
            self.since = now
        self.offsets[tp] = offset + 1

    def add_rows(self, msg: ConsumerRecord, rows: Rows) -> None:
        for table, table_rows in rows.tables.items():
            self.rows.setdefault(table, []).extend(table_rows)
            self.origins.setdefault(table, []).extend([msg] * len(table_rows))
            self.count += len(table_rows)
        if rows.call_id and not CALL_FACTS.isdisjoint(rows.tables):
            self.call_ids.add(rows.call_id)

    def add_landed(self, cls: type, msgs: list[ConsumerRecord], values: list[bytes]) -> None:
        """Keep records for ClickHouse to decode, ``values`` as ``sinks.landing.framed`` made them
        (here, on the loop, so the write's thread is left with ClickHouse's own work). Their call,
        if ``calls`` is computed from their table, is their key (the bus keys every record by call
        ID); a record without a key is decoded for it."""
        landed = self.landed.setdefault(cls, Landed())
        landed.msgs += msgs
        landed.values += values
        self.count += len(msgs)
        if CALL_FACTS.isdisjoint(LANDINGS[cls].targets):
            return  # transcripts and turn latencies: nothing of `calls` is computed from them
        keys = {m.key for m in msgs}
        self.call_ids.update(k.decode("utf-8", "replace") for k in keys if k)
        if None in keys or b"" in keys:
            for m in msgs:
                # an unreadable one is refused by the insert and dead-lettered by the writer
                if not m.key:
                    with suppress(codec.DecodeError):
                        self.call_ids.add(codec.decode(cls, m.value).call_id)

    def timestamps(self, sample: int = 100) -> list[int]:
        """Produce times (ms) of up to about ``sample`` records, for the freshness histogram."""
        groups = [*self.origins.values(), *(landed.msgs for landed in self.landed.values())]
        step = max(1, sum(map(len, groups)) // sample)
        return [m.timestamp for msgs in groups for m in msgs[::step]]
