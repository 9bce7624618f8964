-- Turns of the 3 most recent calls with every per-stage latency (ms).
SELECT
    t.call_id AS call_id,
    t.turn_seq AS turn,
    round(t.response_ms) AS response_ms,
    round(t.processing_ms) AS processing_ms,
    round(t.turn_detection_ms) AS turn_detect_ms,
    round(t.stt_ms) AS stt_ms,
    round(t.agent_ms) AS agent_ms,
    round(t.tts_ms) AS tts_ms,
    round(t.bus_overhead_ms) AS bus_ms
FROM turns AS t FINAL
INNER JOIN (SELECT call_id, started_at FROM calls FINAL ORDER BY started_at DESC, call_id LIMIT 3) AS c
    ON c.call_id = t.call_id
ORDER BY c.started_at DESC, call_id, turn
