-- Top intents: what callers called about, how often the agent resolved it or handed off.
SELECT
    intent,
    count() AS calls,
    countIf(outcome = 'resolved') AS resolved_calls,
    countIf(ifNull(handed_off, false)) AS handed_off_calls,
    round(avg(sentiment), 3) AS avg_sentiment
FROM calls FINAL
WHERE intent != ''
GROUP BY intent
ORDER BY calls DESC, intent
LIMIT 20
