-- Fallback rate: engine fallbacks and errors per day; share of calls that needed a fallback,
-- and fallbacks per caller turn.
SELECT
    toDate(started_at) AS day,
    count() AS calls,
    sum(fallbacks) AS total_fallbacks,
    sum(errors) AS total_errors,
    round(countIf(fallbacks > 0) / count(), 3) AS calls_with_fallback_rate,
    round(sum(fallbacks) / nullIf(sum(turns), 0), 3) AS fallbacks_per_turn
FROM calls FINAL
GROUP BY day
ORDER BY day
