"""Latencies of one turn from its timestamps, in DESIGN.md's vocabulary."""

from __future__ import annotations

from switchboard.records import Timings, TurnLatency


def _ms(end: int | None, start: int | None) -> float | None:
    if end is None or start is None:
        return None
    return (end - start) / 1000.0


def turn_latency(call_id: str, turn_seq: int, t: Timings, ts_us: int) -> TurnLatency:
    processing = _ms(t.egress_first_audio_us, t.turn_detected_us)
    # A final transcript reused from the pause's early decode costs nothing after the turn is detected:
    # its decode ran during the silence, so it is not part of the processing latency (stt_ms says ~0).
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
        turn_detection_ms=_ms(t.turn_detected_us, t.speech_end_us),
        early_ms=_ms(t.early_transcript_us, t.pause_detected_us),
        decision_ms=_ms(t.end_decision_us, t.pause_detected_us),
    )


def turn_steps(lat: TurnLatency) -> dict[str, float | str | None]:
    """One answered turn, step by step from the end of speech (ms), for the demo and the benches.

    ``silence`` is what the caller waited for the turn to be detected (end of speech → turn detected);
    ``early`` and ``decision`` count from the pause (``pause_ms`` into the silence) to the early
    transcript and to the end-of-turn verdict; ``stt`` is the final transcript's time after the turn was
    detected, ~0 when it ``reused`` the early one, none when the reply did not wait for it (``unneeded``:
    said on the end-of-turn event, the early transcript standing for the turn); ``reply`` says whether the
    reply played was made speculatively on the early transcript (``used``: agent ~0), or a speculation was
    thrown away first (``discarded``), or neither."""
    t = lat.timings
    return {
        "silence": lat.turn_detection_ms,
        "early": lat.early_ms,
        "decision": lat.decision_ms,
        "reason": t.end_reason,
        "stt": lat.stt_ms,
        "stt_how": _stt_how(t),
        "agent": lat.agent_ms,
        "reply": t.speculation,
        "tts": lat.tts_ms,
        "bus": lat.bus_overhead_ms,
        "processing": lat.processing_ms,
        "response": lat.response_ms,
    }


def _stt_how(t: Timings) -> str | None:
    if t.stt_finished_us is None:
        return "unneeded" if t.speculation == "used" and t.early_transcript_us is not None else None
    return "reused" if t.early_transcript_us is not None else "decoded"
