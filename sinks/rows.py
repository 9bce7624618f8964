"""Bus records → table rows, redacted. Pure functions of (record, Kafka coordinates)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from sinks.redact import Redactor, caller_hash, mask_caller
from switchboard import records as r
from switchboard.records import Timings

EVENTS = ("ts", "call_id", "source", "kind", "turn_seq", "session_id", "agent_id", "channel", "language",
          "ingress_node", "caller", "caller_hash", "reason", "value_ms", "attributes", "kafka_partition",
          "kafka_offset")
TIMESTAMPS = ("speech_start", "speech_end", "turn_detected", "stt_started", "stt_finished", "agent_started",
              "agent_first_sentence", "tts_started", "tts_first_audio", "egress_first_audio")
TURNS = ("call_id", "turn_seq", "ts", *TIMESTAMPS, "response_ms", "processing_ms", "turn_detection_ms", "stt_ms",
         "agent_ms", "tts_ms", "bus_overhead_ms", "kafka_partition", "kafka_offset")
TRANSCRIPTS = ("ts", "call_id", "turn_seq", "speaker", "seq", "text", "redactions", "language", "engine", "intent",
               "confidence", "audio_ms", "kafka_partition", "kafka_offset")
USAGE = ("ts", "call_id", "turn_seq", "stage", "engine", "llm_tokens_in", "llm_tokens_out", "stt_audio_seconds",
         "tts_characters", "cost_usd", "kafka_partition", "kafka_offset")
SUMMARIES = ("call_id", "ts", "summary", "intent", "outcome", "goal_reached", "handed_off", "sentiment", "caller_turns",
             "turn_sentiment", "model", "kafka_partition", "kafka_offset")

COLUMNS: dict[str, tuple[str, ...]] = {
    "events": EVENTS, "turns": TURNS, "transcripts": TRANSCRIPTS, "engine_usage": USAGE, "call_summaries": SUMMARIES,
}
REACTION = re.compile(r"reaction\s+(\d+(?:\.\d+)?)\s*ms")
DIGITS = re.compile(r"\d")


@dataclass(slots=True)
class Rows:
    """What one record becomes: rows per table, and the call it touches."""

    tables: dict[str, list[tuple[Any, ...]]] = field(default_factory=dict)
    call_id: str | None = None

    def add(self, table: str, row: tuple[Any, ...]) -> None:
        self.tables.setdefault(table, []).append(row)


def _ms(end: int | None, start: int | None) -> float | None:
    return None if end is None or start is None else (end - start) / 1000.0


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
        attrs = {k: self.redactor(v) for k, v in e.attributes.items()}
        started = e.kind is r.CallEventKind.CALL_STARTED
        out.add("events", (
            e.ts_us, e.call_id, "calls", e.kind.value, e.turn_seq, e.session_id, e.agent_id, e.channel, e.language,
            e.ingress_node, mask_caller(e.caller_number) if started else "",
            caller_hash(e.caller_number, self.salt) if started else "", self.redactor(reason), value_ms, attrs, p, o,
        ))

    def _TurnEvent(self, out: Rows, e: r.TurnEvent, p: int, o: int) -> None:
        reason = f"cancelled turn {e.cancelled_turn_seq}" if e.cancelled_turn_seq is not None else ""
        out.add("events", (
            e.ts_us, e.call_id, "turns", e.kind.value, e.turn_seq, "", "", "", "", "", "", "", reason,
            _ms(e.speech_end_us, e.speech_start_us), {}, p, o,
        ))

    def _Transcript(self, out: Rows, t: r.Transcript, p: int, o: int) -> None:
        if t.kind is not r.TranscriptKind.FINAL:
            return  # partials are for the live pipeline; the final one is the record of the turn
        red = self.redactor.redact(t.text)
        out.add("transcripts", (
            t.ts_us, t.call_id, t.turn_seq, "caller", 0, red.text, red.kinds, t.language, t.engine, "",
            t.confidence, max(0, t.audio_ms), p, o,
        ))

    def _AgentReply(self, out: Rows, a: r.AgentReply, p: int, o: int) -> None:
        if a.kind is r.ReplyKind.SENTENCE:
            red = self.redactor.redact(a.text)
            out.add("transcripts", (
                a.ts_us, a.call_id, a.turn_seq, "agent", a.seq, red.text, red.kinds, "", a.engine, a.intent or "",
                None, 0, p, o,
            ))
        elif a.kind is r.ReplyKind.CANCEL:
            out.add("events", (
                a.ts_us, a.call_id, "replies", "reply_cancelled", a.turn_seq, "", "", "", "", "", "", "", "", None, {},
                p, o,
            ))

    def _TurnLatency(self, out: Rows, lat: r.TurnLatency, p: int, o: int) -> None:
        t = lat.timings or Timings()
        stamps = (t.speech_start_us, t.speech_end_us, t.turn_detected_us, t.stt_started_us, t.stt_finished_us,
                  t.agent_started_us, t.agent_first_sentence_us, t.tts_started_us, t.tts_first_audio_us,
                  t.egress_first_audio_us)
        out.add("turns", (
            lat.call_id, lat.turn_seq, lat.ts_us, *stamps, lat.response_ms, lat.processing_ms,
            _ms(t.turn_detected_us, t.speech_end_us), lat.stt_ms, lat.agent_ms, lat.tts_ms, lat.bus_overhead_ms, p, o,
        ))

    def _EngineUsage(self, out: Rows, u: r.EngineUsage, p: int, o: int) -> None:
        out.add("engine_usage", (
            u.ts_us, u.call_id, u.turn_seq, u.stage, u.engine, max(0, u.llm_tokens_in), max(0, u.llm_tokens_out),
            u.stt_audio_seconds, max(0, u.tts_characters), u.cost_usd, p, o,
        ))

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
