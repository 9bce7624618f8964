"""Latencies of one turn from its timestamps, in DESIGN.md's vocabulary."""

from __future__ import annotations

from switchboard.records import Timings, TurnLatency


def _ms(end: int | None, start: int | None) -> float | None:
    if end is None or start is None:
        return None
    return (end - start) / 1000.0


def turn_latency(call_id: str, turn_seq: int, t: Timings, ts_us: int) -> TurnLatency:
    processing = _ms(t.egress_first_audio_us, t.turn_detected_us)
    stt = _ms(t.stt_finished_us, t.stt_started_us)
    agent = _ms(t.agent_first_sentence_us, t.agent_started_us)
    tts = _ms(t.tts_first_audio_us, t.tts_started_us)
    engines = [x for x in (stt, agent, tts) if x is not None]
    overhead = processing - sum(engines) if processing is not None else None
    return TurnLatency(
        call_id=call_id,
        turn_seq=turn_seq,
        ts_us=ts_us,
        timings=t,
        response_ms=_ms(t.egress_first_audio_us, t.speech_end_us),
        processing_ms=processing,
        stt_ms=stt,
        agent_ms=agent,
        tts_ms=tts,
        bus_overhead_ms=overhead,
    )
