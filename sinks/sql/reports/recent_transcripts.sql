-- Redacted transcript of the 3 most recent calls: caller and agent text per turn.
SELECT
    x.call_id AS call_id,
    x.turn_seq AS turn,
    x.speaker AS speaker,
    arrayStringConcat(arrayMap(p -> p.2, arraySort(groupArray((x.seq, x.text)))), ' ') AS text
FROM transcripts AS x FINAL
INNER JOIN (SELECT call_id, started_at FROM calls FINAL ORDER BY started_at DESC, call_id LIMIT 3) AS c
    ON c.call_id = x.call_id
GROUP BY c.started_at, call_id, turn, speaker
ORDER BY c.started_at DESC, call_id, turn, speaker = 'agent'
