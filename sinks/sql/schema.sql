-- Analytics tables of Switchboard. Applied at sink start-up, idempotently.
-- {retention_days} and {transcript_retention_days} come from the sink's settings.
-- Facts are ReplacingMergeTree tables whose sorting key holds the identity of the Kafka record
-- they came from, so a batch redelivered after a crash or rebalance collapses into the rows
-- already there. Read them with FINAL (the report queries do) or with the setting final=1.

CREATE TABLE IF NOT EXISTS events
(
    ts              DateTime64(6, 'UTC')        COMMENT 'when it happened',
    call_id         String                      COMMENT 'call identifier',
    source          LowCardinality(String)      COMMENT 'topic it came from: calls | turns | replies | deadletter',
    kind            LowCardinality(String)      COMMENT 'call_started, call_ended, playback_*, dtmf, engine_fallback, engine_error, speech_started, end_of_turn, barge_in, reply_cancelled, dead_letter',
    turn_seq        Nullable(Int32)             COMMENT 'turn the event refers to',
    session_id      String                      COMMENT 'media session (call events)',
    agent_id        LowCardinality(String)      COMMENT 'agent persona (call events)',
    channel         LowCardinality(String)      COMMENT 'twilio | acs | json | softphone (call events)',
    language        LowCardinality(String)      COMMENT 'BCP-47 language (call events)',
    ingress_node    LowCardinality(String)      COMMENT 'ingress node owning the socket (call events)',
    caller          String                      COMMENT 'caller number masked to its last 4 digits (call_started)',
    caller_hash     String                      COMMENT 'salted hash of the caller number (repeat callers)',
    reason          String                      COMMENT 'detail: end reason (of the call, or of the turn on end_of_turn), DTMF key (digits masked as # under redaction), error text (redacted)',
    value_ms        Nullable(Float64)           COMMENT 'a duration carried by the event: barge-in reaction (playback_cleared), caller speech length (end_of_turn)',
    attributes      Map(String, String)         COMMENT 'channel and engine extras (redacted)',
    kafka_partition UInt16                      COMMENT 'source record partition (deduplication key)',
    kafka_offset    UInt64                      COMMENT 'source record offset (deduplication key)',
    inserted_at     DateTime64(3, 'UTC') DEFAULT now64(3) COMMENT 'when the sink wrote the row'
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(ts)
ORDER BY (kind, call_id, ts, source, kafka_partition, kafka_offset)
TTL toDateTime(ts) + INTERVAL {retention_days} DAY
COMMENT 'call lifecycle, playback, DTMF, turn-taking, barge-ins, engine errors and fallbacks, dead letters';

CREATE TABLE IF NOT EXISTS turns
(
    call_id                 String                          COMMENT 'call identifier',
    turn_seq                Int32                           COMMENT 'reply number within the call (0 = greeting)',
    ts                      DateTime64(6, 'UTC')            COMMENT 'when the latency was measured (first agent audio written)',
    speech_start            Nullable(DateTime64(6, 'UTC'))  COMMENT 'first voiced caller frame, at ingress',
    speech_end              Nullable(DateTime64(6, 'UTC'))  COMMENT 'end of speech: last voiced caller frame, at ingress',
    turn_detected           Nullable(DateTime64(6, 'UTC'))  COMMENT 'turn processor decided the caller finished',
    stt_started             Nullable(DateTime64(6, 'UTC'))  COMMENT 'STT started on the final audio',
    stt_finished            Nullable(DateTime64(6, 'UTC'))  COMMENT 'final transcript ready',
    agent_started           Nullable(DateTime64(6, 'UTC'))  COMMENT 'agent started on the transcript',
    agent_first_sentence    Nullable(DateTime64(6, 'UTC'))  COMMENT 'first reply sentence ready',
    tts_started             Nullable(DateTime64(6, 'UTC'))  COMMENT 'TTS started on the first sentence',
    tts_first_audio         Nullable(DateTime64(6, 'UTC'))  COMMENT 'first synthesized audio ready',
    egress_first_audio      Nullable(DateTime64(6, 'UTC'))  COMMENT 'first agent audio frame written to the socket',
    response_ms             Nullable(Float64)               COMMENT 'response latency: end of speech → first agent audio written',
    processing_ms           Nullable(Float64)               COMMENT 'processing latency: turn detected → first agent audio written',
    turn_detection_ms       Nullable(Float64)               COMMENT 'end of speech → turn detected (end-of-turn silence + VAD)',
    stt_ms                  Nullable(Float64)               COMMENT 'time inside the STT engine',
    agent_ms                Nullable(Float64)               COMMENT 'time inside the agent engine to its first sentence',
    tts_ms                  Nullable(Float64)               COMMENT 'time inside the TTS engine to first audio',
    bus_overhead_ms         Nullable(Float64)               COMMENT 'bus overhead: processing latency not spent inside an engine',
    pause_detected          Nullable(DateTime64(6, 'UTC'))  COMMENT 'the last pause of the turn reached pause_ms of silence: early transcript and Smart Turn requested',
    early_transcript        Nullable(DateTime64(6, 'UTC'))  COMMENT 'early transcript of that pause ready (only when the final reused it: no decode after the turn ended)',
    end_decision            Nullable(DateTime64(6, 'UTC'))  COMMENT 'end-of-turn verdict known (Smart Turn + early transcript), NULL when none came in time',
    end_reason              LowCardinality(String)          COMMENT 'why the turn ended: complete, prosody, dangling:<word>, timeout, max_length (empty in older rows)',
    early_ms                Nullable(Float64)               COMMENT 'pause detected → early transcript ready (the early decode, when the final reused it)',
    decision_ms             Nullable(Float64)               COMMENT 'pause detected → end-of-turn verdict known',
    kafka_partition         UInt16                          COMMENT 'source record partition',
    kafka_offset            UInt64                          COMMENT 'source record offset',
    inserted_at             DateTime64(3, 'UTC') DEFAULT now64(3) COMMENT 'when the sink wrote the row'
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(ts)
ORDER BY (call_id, turn_seq)
TTL toDateTime(ts) + INTERVAL {retention_days} DAY
COMMENT 'one row per answered turn with every latency of the DESIGN.md vocabulary';

-- Columns added after the first release: a database made by an older sink gets them here.
ALTER TABLE turns ADD COLUMN IF NOT EXISTS pause_detected Nullable(DateTime64(6, 'UTC')) AFTER bus_overhead_ms;
ALTER TABLE turns ADD COLUMN IF NOT EXISTS early_transcript Nullable(DateTime64(6, 'UTC')) AFTER pause_detected;
ALTER TABLE turns ADD COLUMN IF NOT EXISTS end_decision Nullable(DateTime64(6, 'UTC')) AFTER early_transcript;
ALTER TABLE turns ADD COLUMN IF NOT EXISTS end_reason LowCardinality(String) AFTER end_decision;
ALTER TABLE turns ADD COLUMN IF NOT EXISTS early_ms Nullable(Float64) AFTER end_reason;
ALTER TABLE turns ADD COLUMN IF NOT EXISTS decision_ms Nullable(Float64) AFTER early_ms;

CREATE TABLE IF NOT EXISTS transcripts
(
    ts              DateTime64(6, 'UTC')        COMMENT 'when the text was produced',
    call_id         String                      COMMENT 'call identifier',
    turn_seq        Int32                       COMMENT 'turn the text belongs to',
    speaker         LowCardinality(String)      COMMENT 'caller (final STT transcript) | agent (reply sentence)',
    seq             UInt32                      COMMENT 'sentence number within the agent reply (0 for the caller)',
    text            String                      COMMENT 'the words, PII redacted',
    redactions      Array(LowCardinality(String)) COMMENT 'PII kinds masked in text (card, ssn, phone, email, dob)',
    language        LowCardinality(String)      COMMENT 'language of the text',
    engine          LowCardinality(String)      COMMENT 'STT or agent engine that produced it',
    intent          LowCardinality(String)      COMMENT 'agent intent at this reply (agent rows)',
    confidence      Nullable(Float32)           COMMENT 'STT confidence (caller rows)',
    audio_ms        UInt32                      COMMENT 'length of the caller audio transcribed (caller rows)',
    kafka_partition UInt16                      COMMENT 'source record partition',
    kafka_offset    UInt64                      COMMENT 'source record offset',
    inserted_at     DateTime64(3, 'UTC') DEFAULT now64(3) COMMENT 'when the sink wrote the row'
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(ts)
ORDER BY (call_id, turn_seq, speaker, seq, kafka_offset)
TTL toDateTime(ts) + INTERVAL {transcript_retention_days} DAY
COMMENT 'caller and agent text per turn, redacted';

CREATE TABLE IF NOT EXISTS reply_playback
(
    ts              DateTime64(6, 'UTC')        COMMENT 'when the ingress cleared the reply''s playback (PLAYBACK_CLEARED)',
    call_id         String                      COMMENT 'call identifier',
    turn_seq        Int32                       COMMENT 'turn of the reply cut off',
    sentences_heard Nullable(UInt32)            COMMENT 'sentences of the reply (seq 0, 1, ...) played to their end, NULL = the ingress did not say',
    cut_sentence    Nullable(UInt32)            COMMENT 'seq of the sentence playing when cut, NULL = cut between sentences (or not said)',
    cut_fraction    Nullable(Float64)           COMMENT 'share of the cut sentence''s audio played, 0 to 1',
    heard_ms        Nullable(UInt32)            COMMENT 'audio of the reply played before the cut, ms',
    kafka_partition UInt16                      COMMENT 'source record partition (deduplication key)',
    kafka_offset    UInt64                      COMMENT 'source record offset (deduplication key)',
    inserted_at     DateTime64(3, 'UTC') DEFAULT now64(3) COMMENT 'when the sink wrote the row'
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(ts)
ORDER BY (call_id, turn_seq, kafka_partition, kafka_offset)
TTL toDateTime(ts) + INTERVAL {retention_days} DAY
COMMENT 'how far each agent reply cut off by the caller played (view agent_turns: the text heard)';

CREATE TABLE IF NOT EXISTS engine_usage
(
    ts                DateTime64(6, 'UTC')      COMMENT 'when the engine was used',
    call_id           String                    COMMENT 'call identifier',
    turn_seq          Nullable(Int32)           COMMENT 'turn, if any',
    stage             LowCardinality(String)    COMMENT 'stt | agent | tts',
    engine            LowCardinality(String)    COMMENT 'engine name (whisper, azure, openai, policy, piper, ...)',
    llm_tokens_in     UInt32                    COMMENT 'prompt tokens',
    llm_tokens_out    UInt32                    COMMENT 'completion tokens',
    stt_audio_seconds Float64                   COMMENT 'audio seconds transcribed',
    tts_characters    UInt32                    COMMENT 'characters synthesized',
    cost_usd          Float64                   COMMENT 'cost of this step in USD (0 for offline engines)',
    kafka_partition   UInt16                    COMMENT 'source record partition',
    kafka_offset      UInt64                    COMMENT 'source record offset',
    inserted_at       DateTime64(3, 'UTC') DEFAULT now64(3) COMMENT 'when the sink wrote the row'
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(ts)
ORDER BY (stage, engine, call_id, ts, kafka_partition, kafka_offset)
TTL toDateTime(ts) + INTERVAL {retention_days} DAY
COMMENT 'engine usage and cost per call step';

CREATE TABLE IF NOT EXISTS call_summaries
(
    call_id         String                      COMMENT 'call identifier',
    ts              DateTime64(6, 'UTC')        COMMENT 'when the enrichment ran',
    summary         String                      COMMENT 'short summary, PII redacted',
    intent          LowCardinality(String)      COMMENT 'main recognised intent',
    outcome         LowCardinality(String)      COMMENT 'resolved | handoff | abandoned | unresolved',
    goal_reached    Bool                        COMMENT 'the caller''s request was completed by the agent',
    handed_off      Bool                        COMMENT 'handed off to a human',
    sentiment       Float32                     COMMENT 'caller sentiment of the call, VADER compound in [-1, 1]',
    caller_turns    UInt16                      COMMENT 'caller turns with a final transcript',
    turn_sentiment  Map(Int32, Float32)         COMMENT 'caller turn_seq → VADER compound of that turn',
    model           LowCardinality(String)      COMMENT 'enrichment model and version',
    kafka_partition UInt16                      COMMENT 'source record partition',
    kafka_offset    UInt64                      COMMENT 'source record offset'
)
ENGINE = ReplacingMergeTree(ts)
PARTITION BY toYYYYMM(ts)
ORDER BY call_id
TTL toDateTime(ts) + INTERVAL {retention_days} DAY
COMMENT 'post-call enrichment from the enrich processor (also folded into calls)';

CREATE TABLE IF NOT EXISTS calls
(
    call_id         String                      COMMENT 'call identifier',
    session_id      String                      COMMENT 'media session identifier',
    agent_id        LowCardinality(String)      COMMENT 'agent persona',
    channel         LowCardinality(String)      COMMENT 'twilio | acs | json | softphone',
    language        LowCardinality(String)      COMMENT 'BCP-47 language',
    caller          String                      COMMENT 'caller number masked to its last 4 digits',
    caller_hash     String                      COMMENT 'salted hash of the caller number (repeat callers)',
    ingress_node    LowCardinality(String)      COMMENT 'ingress node that held the socket',
    started_at      DateTime64(6, 'UTC')        COMMENT 'call_started',
    ended_at        Nullable(DateTime64(6, 'UTC')) COMMENT 'call_ended (NULL while in progress)',
    duration_s      Nullable(Float64)           COMMENT 'handle time: ended_at - started_at, seconds',
    end_reason      LowCardinality(String)      COMMENT 'why it ended (hangup, agent_end, ingress_lost, ...)',
    turns           UInt32                      COMMENT 'caller turns detected',
    barge_ins       UInt32                      COMMENT 'barge-ins (caller spoke over the agent)',
    fallbacks       UInt32                      COMMENT 'engine fallbacks',
    errors          UInt32                      COMMENT 'engine errors',
    outcome         LowCardinality(String)      COMMENT 'resolved | handoff | abandoned | unresolved | dropped | ended | in_progress',
    intent          LowCardinality(String)      COMMENT 'main recognised intent (enrichment)',
    goal_reached    Nullable(Bool)              COMMENT 'request completed by the agent (NULL until enriched)',
    handed_off      Nullable(Bool)              COMMENT 'handed off to a human (NULL until enriched)',
    summary         String                      COMMENT 'short summary, PII redacted (enrichment)',
    sentiment       Nullable(Float32)           COMMENT 'caller sentiment of the call, VADER compound (enrichment)',
    turn_sentiment  Map(Int32, Float32)         COMMENT 'sentiment per caller turn (enrichment)',
    engines         Array(LowCardinality(String)) COMMENT 'stage:engine pairs used (from engine_usage)',
    cost_usd        Float64                     COMMENT 'total engine cost in USD',
    updated_at      DateTime64(6, 'UTC')        COMMENT 'version: when the row was recomputed'
)
ENGINE = ReplacingMergeTree(updated_at)
PARTITION BY toYYYYMM(started_at)
ORDER BY call_id
TTL toDateTime(started_at) + INTERVAL {retention_days} DAY
COMMENT 'one row per call, recomputed from the deduplicated facts whenever one of its records arrives';

-- The sink inserts the Avro values of turn events, turn latencies, engine usage, transcripts and
-- agent replies into Null-engine landing tables (named by a fingerprint of their schema, see
-- sinks/landing.py) and these views build the rows inside ClickHouse. Transcripts and replies
-- arrive with their text already redacted (text_redacted, redactions) and the original cut out.
CREATE MATERIALIZED VIEW IF NOT EXISTS {turn_events_landing}_to_events TO events AS
SELECT
    fromUnixTimestamp64Micro(ts_us, 'UTC')                                    AS ts,
    call_id,
    'turns'                                                                   AS source,
    kind,
    turn_seq,
    if(cancelled_turn_seq IS NULL, ifNull(end_reason, ''), concat('cancelled turn ', toString(cancelled_turn_seq))) AS reason,
    (speech_end_us - speech_start_us) / 1000.0                                AS value_ms,
    kafka_partition,
    kafka_offset
FROM {turn_events_landing};

CREATE MATERIALIZED VIEW IF NOT EXISTS {turn_latency_landing}_to_turns TO turns AS
SELECT
    call_id,
    turn_seq,
    fromUnixTimestamp64Micro(ts_us, 'UTC')                                    AS ts,
    fromUnixTimestamp64Micro(timings.speech_start_us, 'UTC')                  AS speech_start,
    fromUnixTimestamp64Micro(timings.speech_end_us, 'UTC')                    AS speech_end,
    fromUnixTimestamp64Micro(timings.turn_detected_us, 'UTC')                 AS turn_detected,
    fromUnixTimestamp64Micro(timings.stt_started_us, 'UTC')                   AS stt_started,
    fromUnixTimestamp64Micro(timings.stt_finished_us, 'UTC')                  AS stt_finished,
    fromUnixTimestamp64Micro(timings.agent_started_us, 'UTC')                 AS agent_started,
    fromUnixTimestamp64Micro(timings.agent_first_sentence_us, 'UTC')          AS agent_first_sentence,
    fromUnixTimestamp64Micro(timings.tts_started_us, 'UTC')                   AS tts_started,
    fromUnixTimestamp64Micro(timings.tts_first_audio_us, 'UTC')               AS tts_first_audio,
    fromUnixTimestamp64Micro(timings.egress_first_audio_us, 'UTC')            AS egress_first_audio,
    response_ms,
    processing_ms,
    (timings.turn_detected_us - timings.speech_end_us) / 1000.0               AS turn_detection_ms,
    stt_ms,
    agent_ms,
    tts_ms,
    bus_overhead_ms,
    fromUnixTimestamp64Micro(timings.pause_detected_us, 'UTC')                AS pause_detected,
    fromUnixTimestamp64Micro(timings.early_transcript_us, 'UTC')              AS early_transcript,
    fromUnixTimestamp64Micro(timings.end_decision_us, 'UTC')                  AS end_decision,
    ifNull(timings.end_reason, '')                                            AS end_reason,
    early_ms,
    decision_ms,
    kafka_partition,
    kafka_offset
FROM {turn_latency_landing};

CREATE MATERIALIZED VIEW IF NOT EXISTS {engine_usage_landing}_to_engine_usage TO engine_usage AS
SELECT
    fromUnixTimestamp64Micro(ts_us, 'UTC')                                    AS ts,
    call_id,
    turn_seq,
    stage,
    engine,
    toUInt32(greatest(0, llm_tokens_in))                                      AS llm_tokens_in,
    toUInt32(greatest(0, llm_tokens_out))                                     AS llm_tokens_out,
    stt_audio_seconds,
    toUInt32(greatest(0, tts_characters))                                     AS tts_characters,
    cost_usd,
    kafka_partition,
    kafka_offset
FROM {engine_usage_landing};

CREATE MATERIALIZED VIEW IF NOT EXISTS {transcripts_landing}_to_transcripts TO transcripts AS
SELECT
    fromUnixTimestamp64Micro(ts_us, 'UTC')                                    AS ts,
    call_id,
    turn_seq,
    'caller'                                                                  AS speaker,
    0                                                                         AS seq,
    text_redacted                                                             AS text,
    redactions,
    language,
    engine,
    ''                                                                        AS intent,
    confidence,
    toUInt32(greatest(0, audio_ms))                                           AS audio_ms,
    kafka_partition,
    kafka_offset
FROM {transcripts_landing}
WHERE kind = 'final';

CREATE MATERIALIZED VIEW IF NOT EXISTS {agent_replies_landing}_to_transcripts TO transcripts AS
SELECT
    fromUnixTimestamp64Micro(ts_us, 'UTC')                                    AS ts,
    call_id,
    turn_seq,
    'agent'                                                                   AS speaker,
    toUInt32(greatest(0, seq))                                                AS seq,
    text_redacted                                                             AS text,
    redactions,
    ''                                                                        AS language,
    engine,
    ifNull(intent, '')                                                        AS intent,
    CAST(NULL AS Nullable(Float32))                                           AS confidence,
    0                                                                         AS audio_ms,
    kafka_partition,
    kafka_offset
FROM {agent_replies_landing}
WHERE kind = 'sentence';

CREATE MATERIALIZED VIEW IF NOT EXISTS {agent_replies_landing}_to_events TO events AS
SELECT
    fromUnixTimestamp64Micro(ts_us, 'UTC')                                    AS ts,
    call_id,
    'replies'                                                                 AS source,
    'reply_cancelled'                                                         AS kind,
    turn_seq,
    kafka_partition,
    kafka_offset
FROM {agent_replies_landing}
WHERE kind = 'cancel';

-- Per agent reply: the text generated and the text the caller heard. A reply cut off (reply_playback) keeps the
-- sentences played to their end and the first round(words x cut_fraction) words of the cut one (half up, then a
-- dash), as the agent trims its own history (processors/agent/heard.py). Without positions (an older ingress): nothing
-- heard if the reply never started playing, else all of it, flagged. Not cut off: all of it. The text is the
-- redacted one, so a redaction tag counts as one word.
CREATE OR REPLACE VIEW agent_turns AS
SELECT
    s.call_id                                                                 AS call_id,
    s.turn_seq                                                                AS turn_seq,
    min(s.t_ts)                                                               AS ts,
    any(s.t_engine)                                                           AS engine,
    any(s.t_intent)                                                           AS intent,
    toUInt32(count())                                                         AS sentences,
    arrayStringConcat(arrayMap(x -> x.2, arraySort(groupArray((s.t_seq, s.t_text)))), ' ') AS generated,
    arrayStringConcat(arrayFilter(w -> w != '', arrayMap(x -> x.2, arraySort(groupArray((s.t_seq, s.part))))), ' ')
                                                                              AS heard,
    toBool(max(s.p_cleared))                                                  AS interrupted,
    any(s.p_heard)                                                            AS sentences_heard,
    any(s.p_ms)                                                               AS heard_ms
FROM
(
    SELECT
        t.call_id                                                             AS call_id,
        t.turn_seq                                                            AS turn_seq,
        t.ts                                                                  AS t_ts,
        t.seq                                                                 AS t_seq,
        t.text                                                                AS t_text,
        t.engine                                                              AS t_engine,
        t.intent                                                              AS t_intent,
        p.cleared                                                             AS p_cleared,
        p.pos.1                                                               AS p_heard,
        p.pos.4                                                               AS p_ms,
        length(splitByWhitespace(t.text))                                     AS n_words,
        toUInt32(floor(n_words * ifNull(p.pos.3, 0) + 0.5))                   AS n_cut,
        multiIf(
            p.cleared = 0, t.text,
            p.pos.1 IS NULL, if(st.started = 1, t.text, ''),
            t.seq < assumeNotNull(p.pos.1), t.text,
            t.seq = assumeNotNull(p.pos.1) AND p.pos.2 IS NOT NULL AND assumeNotNull(p.pos.2) = t.seq AND n_cut > 0,
                concat(arrayStringConcat(arraySlice(splitByWhitespace(t.text), 1, n_cut), ' '), '—'),
            '')                                                               AS part
    FROM (SELECT * FROM transcripts FINAL WHERE speaker = 'agent') AS t
    LEFT JOIN
    (
        SELECT call_id, turn_seq, toUInt8(1) AS cleared,
               argMax(tuple(sentences_heard, cut_sentence, cut_fraction, heard_ms), ts) AS pos
        FROM reply_playback FINAL
        GROUP BY call_id, turn_seq
    ) AS p ON p.call_id = t.call_id AND p.turn_seq = t.turn_seq
    LEFT JOIN
    (
        SELECT DISTINCT call_id, assumeNotNull(turn_seq) AS turn_seq, toUInt8(1) AS started
        FROM events FINAL
        WHERE kind = 'playback_started' AND turn_seq IS NOT NULL
    ) AS st ON st.call_id = t.call_id AND st.turn_seq = t.turn_seq
) AS s
GROUP BY s.call_id, s.turn_seq;
