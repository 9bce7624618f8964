"""Bus records → table rows, redacted. Pure functions of (record, Kafka coordinates).

Only call events, call summaries and dead letters are built here (their text is
spread over several fields and maps); the other records are turned into rows by
ClickHouse itself (``sinks.landing``).

A PLAYBACK_CLEARED also makes a ``reply_playback`` row: how far the cut reply played, as the ingress says it
(``sentences_heard``, ``cut_sentence``, ``cut_fraction``, ``heard_ms``; NULL when it gives none). The view
``agent_turns`` joins it with the reply's sentences to give the text heard (``sql/schema.sql``)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from sinks import metrics as sink_metrics
from sinks.redact import Redactor, caller_hash, mask_caller
from switchboard import records as r

EVENTS = ("ts", "call_id", "source", "kind", "turn_seq", "session_id", "agent_id", "channel", "language",
          "ingress_node", "caller", "caller_hash", "reason", "value_ms", "attributes", "kafka_partition",
          "kafka_offset")
PLAYBACK = ("ts", "call_id", "turn_seq", "sentences_heard", "cut_sentence", "cut_fraction", "heard_ms",
            "kafka_partition", "kafka_offset")
SUMMARIES = ("call_id", "ts", "summary", "intent", "outcome", "goal_reached", "handed_off", "sentiment", "caller_turns",
             "turn_sentiment", "model", "kafka_partition", "kafka_offset")

COLUMNS: dict[str, tuple[str, ...]] = {"events": EVENTS, "call_summaries": SUMMARIES, "reply_playback": PLAYBACK}
REACTION = re.compile(r"reaction\s+(\d+(?:\.\d+)?)\s*ms")
DIGITS = re.compile(r"\d")


@dataclass(slots=True)
class Rows:
    """What one record becomes: rows per table, and the call it touches."""

    tables: dict[str, list[tuple[Any, ...]]] = field(default_factory=dict)
    call_id: str | None = None

    def add(self, table: str, row: tuple[Any, ...]) -> None:
        self.tables.setdefault(table, []).append(row)


class RowBuilder:
    def __init__(self, redactor: Redactor, salt: str = "switchboard") -> None:
        self.redactor = redactor
        self.salt = salt

    def build(self, record: Any, partition: int, offset: int) -> Rows:
        out = Rows(call_id=getattr(record, "call_id", None))
        method = getattr(self, f"_{type(record).__name__}", None)
        if method is not None:
            method(out, record, partition, offset)
        return out

    def _CallEvent(self, out: Rows, e: r.CallEvent, p: int, o: int) -> None:
        reason = e.reason or ""
        value_ms = None
        if e.kind is r.CallEventKind.PLAYBACK_CLEARED and (m := REACTION.search(reason)):
            value_ms = float(m.group(1))
        if e.kind is r.CallEventKind.DTMF and self.redactor.kinds:
            reason = DIGITS.sub("#", reason)  # callers key card numbers in one digit per event
        # caller_hash: the ingress's keyed hash (hex, no PII; the redactor could take its digits for a number)
        attrs = {k: v if k == "caller_hash" else self.redactor(v) for k, v in e.attributes.items()}
        started = e.kind is r.CallEventKind.CALL_STARTED
        hashed = e.attributes.get("caller_hash") or caller_hash(e.caller_number, self.salt)
        out.add("events", (
            e.ts_us, e.call_id, "calls", e.kind.value, e.turn_seq, e.session_id, e.agent_id, e.channel, e.language,
            e.ingress_node, mask_caller(e.caller_number) if started else "",
            hashed if started else "", self.redactor(reason), value_ms, attrs, p, o,
        ))
        if e.kind is r.CallEventKind.PLAYBACK_CLEARED and e.turn_seq is not None:
            out.add("reply_playback", (e.ts_us, e.call_id, e.turn_seq, *playback_positions(e.attributes), p, o))

    def _CallSummary(self, out: Rows, s: r.CallSummary, p: int, o: int) -> None:
        turn_sentiment = {int(k): float(v) for k, v in s.turn_sentiment.items() if k.lstrip("-").isdigit()}
        out.add("call_summaries", (
            s.call_id, s.ts_us, self.redactor(s.summary), s.intent or "", s.outcome or "", s.goal_reached,
            s.handed_off, s.sentiment, min(max(0, s.caller_turns), 65535), turn_sentiment, s.model, p, o,
        ))

    def _DeadLetter(self, out: Rows, d: r.DeadLetter, p: int, o: int) -> None:
        call_id = (d.key or b"").decode("utf-8", "replace")
        out.call_id = call_id or None
        attrs = {"source_topic": d.source_topic, "service": d.service, "partition": str(d.partition),
                 "offset": str(d.offset), "value_bytes": str(len(d.value))}
        out.add("events", (
            d.ts_us, call_id, "deadletter", "dead_letter", None, "", "", "", "", "", "", "",
            self.redactor(d.error[:1000]), None, attrs, p, o,
        ))


def playback_positions(attributes: dict[str, str]) -> tuple[int | None, int | None, float | None, int | None]:
    """(sentences_heard, cut_sentence, cut_fraction, heard_ms) of a PLAYBACK_CLEARED; all None when the ingress gave
    none (an older one) or gave them unreadable (counted: the row then says "unknown", never a wrong cut)."""
    if "sentences_heard" not in attributes:
        return None, None, None, None
    try:
        heard = int(attributes["sentences_heard"])
        cut = int(c) if (c := attributes.get("cut_sentence", "").strip()) else None
        fraction = float(attributes.get("cut_fraction", "0") or "0")
        ms = int(float(m)) if (m := attributes.get("heard_ms", "").strip()) else None
    except ValueError:
        sink_metrics.BAD_PLAYBACK_POSITIONS.inc()
        return None, None, None, None
    counts = [v for v in (heard, cut, ms) if v is not None]
    if not all(0 <= v < 2**32 for v in counts) or not 0.0 <= fraction <= 1.0:  # UInt32 columns, a share
        sink_metrics.BAD_PLAYBACK_POSITIONS.inc()
        return None, None, None, None
    return heard, cut, fraction, ms
