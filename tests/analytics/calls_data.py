"""A known set of calls, as the pipeline would publish them, for the sink and BI query tests.

Day D (three days ago, UTC):
- c1 09:05–09:07 twilio: books an appointment, 2 turns, 1 barge-in, cost 0.012, resolved, sentiment 0.6
- c2 09:40–09:41 twilio: asks for a human, 1 turn, 1 engine fallback, handoff, sentiment -0.5
- c3 10:20–10:20:30 json: opening hours, 1 turn, cost 0.004, resolved, sentiment 0.1
Day D+1:
- c4 14:00–14:05 acs: no turns, ended by ingress_lost, never enriched → dropped
- c5 14:30 acs: still in progress
"""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from dataclasses import dataclass
from typing import Any

from aiokafka.structs import ConsumerRecord

from sinks.settings import SinkSettings
from sinks.store import Store
from switchboard import codec
from switchboard import records as r
from switchboard.settings import ServiceSettings
from switchboard.topics import CALLS, LATENCY, REPLIES, SUMMARIES, TRANSCRIPTS, TURNS, USAGE, Topic

TODAY = dt.datetime.now(dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0)
DAY = TODAY - dt.timedelta(days=3)
NEXT_DAY = DAY + dt.timedelta(days=1)
CARD = "4111 1111 1111 1111"


def us(day: dt.datetime, hh: int, mm: int, ss: float = 0.0) -> int:
    return int((day + dt.timedelta(hours=hh, minutes=mm, seconds=ss)).timestamp() * 1_000_000)


@dataclass(frozen=True, slots=True)
class Lat:
    response: float
    processing: float
    turn_detection: float
    stt: float
    agent: float
    tts: float
    bus: float


LATENCIES = {
    ("c1", 1): Lat(800, 600, 200, 300, 10, 150, 140),
    ("c1", 2): Lat(1000, 700, 300, 400, 20, 160, 120),
    ("c2", 1): Lat(1200, 900, 300, 500, 15, 200, 185),
    ("c3", 1): Lat(600, 400, 200, 200, 5, 100, 95),
}


def _event(call_id: str, kind: r.CallEventKind, ts: int, channel: str, **kw: Any) -> r.CallEvent:
    return r.CallEvent(call_id, f"s-{call_id}", kind, ts, channel, "clinic", "en-US", "node-a", 1, **kw)


def reply(call_id: str, turn: int, seq: int, kind: r.ReplyKind, text: str, ts: int, intent: str) -> r.AgentReply:
    return r.AgentReply(call_id, turn, seq, kind, text, 1, "policy", ts, intent=intent)


def _turn(call_id: str, seq: int, t0: int, caller: str, agent: list[str], intent: str) -> list[tuple[Topic, Any]]:
    lat = LATENCIES[(call_id, seq)]
    speech_end = t0 + 1_500_000
    detected = speech_end + int(lat.turn_detection * 1000)
    egress = detected + int(lat.processing * 1000)
    timings = r.Timings(speech_start_us=t0, speech_end_us=speech_end, turn_detected_us=detected,
                        egress_first_audio_us=egress)
    return [
        (TURNS, r.TurnEvent(call_id, seq, r.TurnEventKind.SPEECH_STARTED, t0, t0)),
        (TURNS, r.TurnEvent(call_id, seq, r.TurnEventKind.END_OF_TURN, detected, t0, speech_end)),
        (TRANSCRIPTS, r.Transcript(call_id, seq, r.TranscriptKind.PARTIAL, caller[:10], "en", 500, "whisper", t0)),
        (TRANSCRIPTS, r.Transcript(call_id, seq, r.TranscriptKind.FINAL, caller, "en", 1500, "whisper", detected + 1)),
        *[(REPLIES, reply(call_id, seq, i, r.ReplyKind.SENTENCE, s, detected + 2 + i, intent))
          for i, s in enumerate(agent)],
        (REPLIES, reply(call_id, seq, len(agent), r.ReplyKind.END, "", detected + 10, intent)),
        (LATENCY, r.TurnLatency(call_id, seq, egress, timings, response_ms=lat.response, processing_ms=lat.processing,
                                stt_ms=lat.stt, agent_ms=lat.agent, tts_ms=lat.tts, bus_overhead_ms=lat.bus)),
    ]


def known_calls() -> list[tuple[Topic, Any]]:
    """Every record of the five calls, in a plausible publishing order."""
    out: list[tuple[Topic, Any]] = []
    ev = r.CallEventKind
    # c1
    s1 = us(DAY, 9, 5)
    out.append((CALLS, _event("c1", ev.CALL_STARTED, s1, "twilio", caller_number="+14155552671")))
    out += _turn("c1", 1, s1 + 5_000_000,
                 f"I'd like to book an appointment for Tuesday at 3 PM. My card is {CARD}.",
                 ["Just to confirm, I'll book you in for Tuesday at 3 PM.", "Is that right?"], "book")
    out.append((TURNS, r.TurnEvent("c1", 2, r.TurnEventKind.BARGE_IN, s1 + 20_000_000, s1 + 19_900_000,
                                   cancelled_turn_seq=1)))
    out.append((CALLS, _event("c1", ev.PLAYBACK_CLEARED, s1 + 20_180_000, "twilio", turn_seq=1,
                              reason="barge_in reaction 180 ms")))
    out += _turn("c1", 2, s1 + 30_000_000, "Yes please, that's great, thank you!",
                 ["You're booked for Tuesday at 3 PM."], "book")
    out.append((USAGE, r.EngineUsage("c1", "stt", "whisper", s1 + 40_000_000, 1, stt_audio_seconds=3.0)))
    out.append((USAGE, r.EngineUsage("c1", "agent", "openai", s1 + 40_000_001, 1, llm_tokens_in=100,
                                     llm_tokens_out=20, cost_usd=0.01)))
    out.append((USAGE, r.EngineUsage("c1", "tts", "azure", s1 + 40_000_002, 1, tts_characters=40, cost_usd=0.002)))
    out.append((CALLS, _event("c1", ev.CALL_ENDED, s1 + 120_000_000, "twilio", reason="hangup")))
    out.append((SUMMARIES, r.CallSummary("c1", s1 + 121_000_000, f"Booked Tuesday 3 PM; card {CARD}", 0.6, 2, True,
                                         False, "vader-test", intent="book", outcome="resolved",
                                         turn_sentiment={"1": 0.5, "2": 0.7})))
    # c2
    s2 = us(DAY, 9, 40)
    out.append((CALLS, _event("c2", ev.CALL_STARTED, s2, "twilio", caller_number="+14155550000")))
    out.append((CALLS, _event("c2", ev.ENGINE_FALLBACK, s2 + 1_000_000, "twilio", reason="stt azure → whisper",
                              attributes={"stage": "stt", "from": "azure", "to": "whisper"})))
    out += _turn("c2", 1, s2 + 5_000_000,
                 "I want to speak to a human, this is useless. Call me at 415-555-2671.",
                 ["Let me put you through to one of our staff.", "Please hold."], "human")
    out.append((USAGE, r.EngineUsage("c2", "stt", "whisper", s2 + 10_000_000, 1, stt_audio_seconds=2.5)))
    out.append((USAGE, r.EngineUsage("c2", "tts", "piper", s2 + 10_000_001, 1, tts_characters=45)))
    out.append((CALLS, _event("c2", ev.CALL_ENDED, s2 + 60_000_000, "twilio", reason="hangup")))
    out.append((SUMMARIES, r.CallSummary("c2", s2 + 61_000_000, "Asked for a human", -0.5, 1, False, True,
                                         "vader-test", intent="human", outcome="handoff", turn_sentiment={"1": -0.5})))
    # c3
    s3 = us(DAY, 10, 20)
    out.append((CALLS, _event("c3", ev.CALL_STARTED, s3, "json")))
    out += _turn("c3", 1, s3 + 3_000_000, "What are your opening hours? My email is jane.doe@example.com",
                 ["We are open Monday to Friday."], "hours")
    out.append((USAGE, r.EngineUsage("c3", "agent", "openai", s3 + 5_000_000, 1, llm_tokens_in=50,
                                     llm_tokens_out=10, cost_usd=0.004)))
    out.append((CALLS, _event("c3", ev.CALL_ENDED, s3 + 30_000_000, "json", reason="hangup")))
    out.append((SUMMARIES, r.CallSummary("c3", s3 + 31_000_000, "Opening hours", 0.1, 1, True, False, "vader-test",
                                         intent="hours", outcome="resolved", turn_sentiment={"1": 0.1})))
    # c4, c5
    s4 = us(NEXT_DAY, 14, 0)
    out.append((CALLS, _event("c4", ev.CALL_STARTED, s4, "acs")))
    out.append((CALLS, _event("c4", ev.CALL_ENDED, s4 + 300_000_000, "acs", reason="ingress_lost")))
    out.append((CALLS, _event("c5", ev.CALL_STARTED, us(NEXT_DAY, 14, 30), "acs")))
    return out


def exact(values: list[float], q: float) -> float:
    """ClickHouse quantileExact: the element at floor(q·n) of the sorted values."""
    s = sorted(values)
    return s[min(int(q * len(s)), len(s) - 1)]


def load(store: Any, records: list[tuple[Topic, Any]]) -> None:
    """Write records the way the sink does (landed or built, insert, calls rebuild), minus Kafka."""
    from sinks.batch import Batch
    from sinks.redact import Redactor
    from sinks.rows import RowBuilder
    from sinks.writer import write

    builder = RowBuilder(Redactor())
    batch = Batch()
    for offset, (topic, record) in enumerate(records):
        value = codec.encode(record)
        msg = ConsumerRecord(topic.name, 0, offset, 0, 0, record.call_id.encode(), value, None, 0, len(value), [])
        assert batch.add(type(record), [msg], builder) == []

    async def refuse(msg: ConsumerRecord, error: str) -> None:
        raise AssertionError(f"record at offset {msg.offset} refused: {error}")

    asyncio.run(write(store, batch, refuse))

def sink_settings(bus: ServiceSettings, store: Store, **kw: Any) -> SinkSettings:
    return SinkSettings(kafka_bootstrap=bus.kafka_bootstrap, topic_prefix=bus.topic_prefix,
                        clickhouse_dsn=store.dsn, clickhouse_database=store.database, batch_max_seconds=0.2,
                        query_port=0, sink_group_id=f"sink-{uuid.uuid4().hex[:6]}", **kw)


