-- Redacted transcript of the 3 most recent calls: caller and agent text per turn, the agent's as the caller heard it.
SELECT
    x.call_id AS call_id,
    x.turn AS turn,
    x.who AS speaker,
    x.words AS text
FROM
(
    SELECT call_id, turn_seq AS turn, 'caller' AS who,
           arrayStringConcat(arrayMap(p -> p.2, arraySort(groupArray((seq, text)))), ' ') AS words
    FROM transcripts FINAL
    WHERE speaker = 'caller'
    GROUP BY call_id, turn_seq
    UNION ALL
    SELECT call_id, turn_seq AS turn, 'agent' AS who,
           if(interrupted, trimLeft(concat(heard, ' [interrupted]')), heard) AS words
    FROM agent_turns
) AS x
INNER JOIN (SELECT call_id, started_at FROM calls FINAL ORDER BY started_at DESC, call_id LIMIT 3) AS c
    ON c.call_id = x.call_id
ORDER BY c.started_at DESC, call_id, turn, speaker = 'agent'
