-- Barge-in rate: barge-ins per caller turn, per day, with the barge-in reaction
-- (caller speech onset → playback cleared on the socket) percentiles.
SELECT
    toDate(ts) AS day,
    countIf(kind = 'end_of_turn') AS turns,
    countIf(kind = 'barge_in') AS barge_ins,
    round(barge_ins / nullIf(turns, 0), 3) AS barge_in_rate,
    round(quantileExactIf(0.5)(value_ms, kind = 'playback_cleared' AND value_ms IS NOT NULL), 0) AS reaction_p50_ms,
    round(quantileExactIf(0.95)(value_ms, kind = 'playback_cleared' AND value_ms IS NOT NULL), 0) AS reaction_p95_ms
FROM events FINAL
WHERE kind IN ('end_of_turn', 'barge_in', 'playback_cleared')
GROUP BY day
ORDER BY day
