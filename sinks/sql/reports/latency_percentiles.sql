-- Latency percentiles per stage (ms), DESIGN.md vocabulary: response (end of speech → first agent audio),
-- processing (turn detected → first agent audio), turn detection, time inside each engine, bus overhead,
-- early_transcript and end_decision (from the pause, pause_ms into the silence, to the early transcript / the verdict).
SELECT
    stage,
    count() AS turns,
    round(quantileExact(0.5)(ms), 1) AS p50_ms,
    round(quantileExact(0.9)(ms), 1) AS p90_ms,
    round(quantileExact(0.95)(ms), 1) AS p95_ms,
    round(quantileExact(0.99)(ms), 1) AS p99_ms,
    round(max(ms), 1) AS max_ms
FROM turns FINAL
ARRAY JOIN
    ['response', 'processing', 'turn_detection', 'early_transcript', 'end_decision', 'stt', 'agent', 'tts',
     'bus_overhead'] AS stage,
    [response_ms, processing_ms, turn_detection_ms, early_ms, decision_ms, stt_ms, agent_ms, tts_ms,
     bus_overhead_ms] AS ms
WHERE ms IS NOT NULL
GROUP BY stage
ORDER BY indexOf(['response', 'processing', 'turn_detection', 'early_transcript', 'end_decision', 'stt', 'agent',
                  'tts', 'bus_overhead'], stage)
