-- Latency samples: one row per turn and stage (the box plot of `switchboard report --plot`).
SELECT stage, ms FROM turns FINAL
ARRAY JOIN
    ['response', 'processing', 'turn_detection', 'stt', 'agent', 'tts', 'bus_overhead'] AS stage,
    [response_ms, processing_ms, turn_detection_ms, stt_ms, agent_ms, tts_ms, bus_overhead_ms] AS ms
WHERE ms IS NOT NULL
