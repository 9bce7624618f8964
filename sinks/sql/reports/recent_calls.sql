-- The 10 most recent calls.
SELECT
    call_id,
    started_at,
    round(duration_s, 1) AS duration_s,
    channel,
    caller,
    outcome,
    intent,
    turns,
    barge_ins,
    round(sentiment, 2) AS sentiment,
    round(cost_usd, 4) AS cost_usd,
    summary
FROM calls FINAL
ORDER BY started_at DESC, call_id
LIMIT 10
