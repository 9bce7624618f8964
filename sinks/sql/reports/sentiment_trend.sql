-- Sentiment trend: the callers' average sentiment per day (VADER compound, -1 … 1) and the mix of
-- positive (≥ 0.05) and negative (≤ -0.05) calls.
SELECT
    toDate(started_at) AS day,
    count() AS enriched_calls,
    round(avg(sentiment), 3) AS avg_sentiment,
    countIf(sentiment >= 0.05) AS positive,
    countIf(sentiment <= -0.05) AS negative
FROM calls FINAL
WHERE sentiment IS NOT NULL
GROUP BY day
ORDER BY day
