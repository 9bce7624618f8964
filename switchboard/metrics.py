"""Prometheus metrics shared across services. Names follow DESIGN.md's latency vocabulary."""

from __future__ import annotations

import logging
import sys

from prometheus_client import Counter, Gauge, Histogram, start_http_server

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 7.5, 10.0)
HOP_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0)

RECORDS_PRODUCED = Counter("switchboard_records_produced_total", "records produced", ["service", "topic"])
RECORDS_CONSUMED = Counter("switchboard_records_consumed_total", "records consumed", ["service", "topic"])
DEAD_LETTERS = Counter("switchboard_dead_letters_total", "records sent to the dead-letter topic", ["service", "topic"])
BUS_HOP = Histogram(
    "switchboard_bus_hop_seconds", "record produce → consume time", ["service", "topic"], buckets=HOP_BUCKETS
)
STAGE_LATENCY = Histogram(
    "switchboard_stage_seconds", "time inside one engine per turn", ["stage", "engine"], buckets=LATENCY_BUCKETS
)
RESPONSE_LATENCY = Histogram(
    "switchboard_response_latency_seconds", "end of speech → first agent audio written", buckets=LATENCY_BUCKETS
)
PROCESSING_LATENCY = Histogram(
    "switchboard_processing_latency_seconds", "turn detected → first agent audio written", buckets=LATENCY_BUCKETS
)
BUS_OVERHEAD = Histogram(
    "switchboard_bus_overhead_seconds", "processing latency not spent inside an engine", buckets=LATENCY_BUCKETS
)
BARGE_IN_REACTION = Histogram(
    "switchboard_barge_in_reaction_seconds",
    "caller speech onset → playback cleared on the socket",
    buckets=LATENCY_BUCKETS,
)
BARGE_INS = Counter("switchboard_barge_ins_total", "barge-ins detected")
FALSE_INTERRUPTIONS = Counter(
    "switchboard_false_interruptions_total",
    "caller voice that paused a reply and was no interruption: the reply resumed (backchannel, no_words, "
    "no_transcript)",
    ["reason"],
)
PLAYBACK_HOLDS = Counter(
    "switchboard_playback_holds_total",
    "pause commands at the ingress by outcome (paused, near_end: the reply was ending and played on, resumed, "
    "grace: no resume or clear came in time and the reply played on, cleared)",
    ["outcome"],
)
TURNS = Counter("switchboard_turns_total", "caller turns detected")
ACTIVE_CALLS = Gauge("switchboard_active_calls", "calls with an open socket on this ingress node", ["channel"])
CALLS = Counter("switchboard_calls_total", "calls started", ["channel"])
# what /ready says, per process: with several ingress processes on one port (SO_REUSEPORT) the shared port answers
# for whichever process the kernel picks, so each one's own metrics port tells whether it is up
INGRESS_READY = Gauge("switchboard_ingress_ready", "1 while this ingress node listens and takes calls, else 0")
BAD_INPUT = Counter("switchboard_bad_input_total", "rejected caller-side messages", ["channel", "reason"])
CALLER_AUDIO_DROPPED = Counter(
    "switchboard_caller_audio_dropped_seconds_total", "caller audio dropped for arriving faster than the cap",
    ["channel"]
)
# the ingress's send path (ingress/sendpath.py): caller audio waiting for, or lost on the way to, the producer
AUDIO_SEND_QUEUED = Gauge("switchboard_audio_send_queued_records", "caller audio records waiting for the producer")
AUDIO_SEND_DROPPED = Counter(
    "switchboard_audio_send_dropped_seconds_total", "caller audio dropped because its call's send backlog was full",
    ["channel"]
)
AUDIO_SEND_FAILED = Counter("switchboard_audio_send_failed_total", "caller audio records the producer refused")
# an audio.in record carries N × 20 ms (SWITCHBOARD_AUDIO_RECORD_MS): what was consumed, in caller frames
CALLER_FRAMES_CONSUMED = Counter(
    "switchboard_caller_frames_consumed_total", "20 ms caller audio frames consumed from audio.in", ["service"]
)
AUTH_REFUSED = Counter(
    "switchboard_auth_refused_total", "requests refused by authentication (ingress/auth.py)", ["entry", "reason"]
)
ENGINE_ERRORS = Counter("switchboard_engine_errors_total", "engine failures", ["stage", "engine"])
ASSIGNED_PARTITIONS = Gauge("switchboard_assigned_partitions", "input partitions this worker holds", ["service"])
# switchboard/recovery.py: a restarted worker or broker put right (README "Operations")
BROKER_RECOVERIES = Counter(
    "switchboard_broker_recoveries_total", "recoveries of a worker's Kafka clients, by action: stale_member_dropped, "
    "topics_recreated, positions_reset, commit_failed; the ingress also egress_restarted, producer_replaced",
    ["service", "action"]
)
IN_FLIGHT = Gauge(
    "switchboard_records_in_flight", "records handed to the processor and not yet done (all calls)", ["service"]
)
PAUSES = Counter(
    "switchboard_partition_pauses_total", "times the in-flight limit paused this worker's partitions", ["service"]
)
RECORDS_DROPPED = Counter(
    "switchboard_records_dropped_total",
    "records of revoked partitions left to their new owner: queued (revoked) or cut short (abandoned)",
    ["service", "reason"],
)
ENDED_CALL_SKIPS = Counter(
    "switchboard_ended_call_work_skipped_total", "work not done because its call had ended", ["service", "what"]
)
INFERENCE_THREADS = Gauge("switchboard_inference_threads", "size of this worker's inference pool (model calls at once)")
INFERENCE_QUEUED = Gauge("switchboard_inference_queued", "model calls waiting for a thread of the inference pool")
INFERENCE_BUSY = Gauge("switchboard_inference_busy", "inference pool threads running a model call")
INFERENCE_DROPPED = Counter(
    "switchboard_inference_dropped_total", "queued model calls dropped before they ran (their call or reply ended)"
)
# -- agent playback at the ingress (ingress/calls.py, ingress/filler.py; README "Faults the caller hears") --
FILLERS = Counter(
    "switchboard_fillers_total", "fillers due because a caller who spoke heard no agent audio in time, by outcome: "
    "no_agent_audio (played), unavailable (due, but the TTS never sent this call a filler)", ["reason"]
)
SILENCE_EVENTS = Counter(
    "switchboard_silence_events_total", "silent callers (ingress): prompt (asked if still there), hangup (let go)",
    ["stage"]
)
KEYPAD = Counter(
    "switchboard_keypad_total",
    "DTMF keys the agent acted on: handoff (0), yes (1), no (2), ignored (nothing expected)", ["action"]
)
REPLY_SENTENCES = Counter(
    "switchboard_reply_sentences_total",
    "agent reply sentences by what the caller heard of them (the agent, from playback events): heard (to its end), "
    "cut (partly), unplayed (none of it), unknown (cut off, the ingress gave no positions)",
    ["outcome"],
)
PLAYBACK_REPORTS = Counter(
    "switchboard_playback_reports_total",
    "PLAYBACK_CLEARED events of its replies the agent read: positions, no_positions (older ingress), malformed",
    ["kind"],
)
AGENT_AUDIO_DROPPED = Counter(
    "switchboard_agent_audio_dropped_total", "audio.out records not played: duplicate (a replayed (turn_seq, seq)), "
    "stale (a reply older than one already started), late (the rest of a reply finished by the drain, after the "
    "caller spoke)", ["reason"]
)
PLAYBACK_DRAINED = Counter(
    "switchboard_playback_drained_total", "replies whose playback was finished by the drain grace, their END never came"
)
# -- end of turn by meaning (processors/turns/logic.py, processors/stt/logic.py; README "turn-taking") --
END_OF_TURN = Counter(
    "switchboard_end_of_turn_total", "turns ended, by why: complete, prosody, dangling (the early transcript hangs), "
    "timeout (no verdict in time) or max_length", ["reason"]
)
TURN_DETECTION = Histogram(
    "switchboard_turn_detection_seconds", "end of speech → turn detected (the silence waited), by end reason",
    ["reason"], buckets=LATENCY_BUCKETS
)
END_DECISION = Histogram(
    "switchboard_end_decision_seconds", "pause detected → end-of-turn verdict known (Smart Turn + early transcript)",
    buckets=LATENCY_BUCKETS
)
STT_BATCH_TURNS = Histogram(
    "switchboard_stt_batch_turns", "turns decoded together in one batch (processors/stt/batching.py)", ["engine"],
    buckets=(1, 2, 3, 4, 6, 8, 12, 16)
)
EARLY_TRANSCRIPT = Histogram(
    "switchboard_early_transcript_seconds", "pause chunk in STT → early transcript ready (the turn so far decoded)",
    ["engine"], buckets=LATENCY_BUCKETS
)
STT_FINALS = Counter(
    "switchboard_stt_finals_total", "final transcripts, by how: early (the pause's early transcript reused, no decode "
    "after the turn ended) or decoded; backchannel: a turn over the agent's reply that takes no turn, closed without "
    "a transcript", ["engine", "how"]
)
# -- speculative reply (processors/agent/speculation.py, processors/tts/hold.py; README "Speculative reply") --
SPECULATION = Counter(
    "switchboard_speculation_total", "replies made on an early transcript, by outcome: used (the turn was confirmed "
    "with the same text), mismatch (the final text differed), discarded (the caller went on, barged in, hung up)",
    ["outcome"],
)
SPECULATION_CONFIRMED = Counter(
    "switchboard_speculation_confirmed_total", "speculative replies used, by what confirmed them: end_of_turn (the "
    "turn ended silent after the pause answered, one bus hop after the end of the turn) or final (the final "
    "transcript had the same words)", ["by"],
)
SPECULATION_DISCARDED_TOKENS = Counter(
    "switchboard_speculation_discarded_tokens_total", "LLM tokens (in + out) spent on speculative replies that were "
    "thrown away (their usage records are published as any other: the cost was real)", ["engine"],
)
TTS_HOLD = Counter(
    "switchboard_tts_hold_total", "speculative sentences synthesised and held by TTS, by fate: released (played once "
    "confirmed), dropped (discarded), expired (held past the timeout or the bound), unused (confirmed but not held)",
    ["fate"],
)
# -- event loop and call admission (switchboard/looplag.py, ingress/runtime.py; README "Load testing") --
LOOP_LAG = Histogram(
    "switchboard_event_loop_lag_seconds", "how late the event loop ran a timer (sampled every 50 ms): CPU-bound "
    "loops show it first, before any socket times out", ["service"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
CALL_START_STEP = Histogram(
    "switchboard_call_start_step_seconds", "time spent in one step of admitting a call: webhook (the Twilio voice "
    "webhook's handler), call_started (the call_started record produced and acknowledged)", ["step"],
    buckets=LATENCY_BUCKETS,
)


def serve(port: int, host: str, service: str) -> None:
    """Start the scrape endpoint, if ``port`` is set (0: none). A port already taken (another service, a second
    copy) ends the process with the reason and exit code 2, not a traceback: it is a configuration error, and a
    restart would not mend it."""
    if not port:
        return
    try:
        start_http_server(port, addr=host)
    except OSError as exc:
        reason = f"cannot serve metrics on {host}:{port}: {exc.strerror or exc}; set SWITCHBOARD_METRICS_PORT"
        logging.getLogger(__name__).error("metrics port unavailable", extra={"fields": {"reason": reason}})
        print(f"switchboard {service}: {reason}", file=sys.stderr)
        raise SystemExit(2) from None
