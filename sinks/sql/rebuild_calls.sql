-- Recompute the calls rows of {ids} from the deduplicated facts. Idempotent: running it twice
-- (after a redelivered batch) writes the same row again, with a newer version.
INSERT INTO calls
SELECT
    e.call_id, e.session_id, e.agent_id, e.channel, e.language, e.caller, e.caller_hash, e.ingress_node,
    e.started_at,
    e.ended_at,
    if(e.ended_at IS NULL, NULL, dateDiff('microsecond', e.started_at, assumeNotNull(e.ended_at)) / 1e6),
    e.end_reason, e.turns, e.barge_ins, e.fallbacks, e.errors,
    multiIf(
        e.ended_at IS NULL, 'in_progress',
        s.enriched = 1 AND s.outcome != '', s.outcome,
        e.end_reason = 'ingress_lost', 'dropped',
        'ended'),
    s.intent,
    if(s.enriched = 1, s.goal_reached, NULL),
    if(s.enriched = 1, s.handed_off, NULL),
    s.summary,
    if(s.enriched = 1, s.sentiment, NULL),
    s.turn_sentiment,
    u.engines,
    u.cost_usd,
    now64(6)
FROM
(
    SELECT
        call_id,
        argMinIf(session_id, ts, kind = 'call_started') AS session_id,
        argMinIf(agent_id, ts, kind = 'call_started') AS agent_id,
        argMinIf(channel, ts, kind = 'call_started') AS channel,
        argMinIf(language, ts, kind = 'call_started') AS language,
        argMinIf(caller, ts, kind = 'call_started') AS caller,
        argMinIf(caller_hash, ts, kind = 'call_started') AS caller_hash,
        argMinIf(ingress_node, ts, kind = 'call_started') AS ingress_node,
        minIf(ts, kind = 'call_started') AS started_at,
        if(countIf(kind = 'call_ended') > 0, toNullable(maxIf(ts, kind = 'call_ended')), NULL) AS ended_at,
        argMaxIf(reason, ts, kind = 'call_ended') AS end_reason,
        toUInt32(countIf(kind = 'end_of_turn')) AS turns,
        toUInt32(countIf(kind = 'barge_in')) AS barge_ins,
        toUInt32(countIf(kind = 'engine_fallback')) AS fallbacks,
        toUInt32(countIf(kind = 'engine_error')) AS errors
    FROM events FINAL
    WHERE call_id IN {ids}
    GROUP BY call_id
    HAVING countIf(kind = 'call_started') > 0
) AS e
LEFT JOIN
(
    SELECT call_id, arraySort(groupUniqArray(concat(stage, ':', engine))) AS engines, sum(cost_usd) AS cost_usd
    FROM engine_usage FINAL
    WHERE call_id IN {ids}
    GROUP BY call_id
) AS u ON u.call_id = e.call_id
LEFT JOIN
(
    SELECT call_id, 1 AS enriched, summary, intent, outcome, goal_reached, handed_off, sentiment, turn_sentiment
    FROM call_summaries FINAL
    WHERE call_id IN {ids}
) AS s ON s.call_id = e.call_id
