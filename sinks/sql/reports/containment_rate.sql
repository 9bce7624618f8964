-- Containment rate: share of ended calls the agent handled without handing off to a human,
-- and resolution rate: share of ended calls whose goal was reached.
SELECT
    toDate(started_at) AS day,
    count() AS ended_calls,
    countIf(ifNull(handed_off, false)) AS handed_off_calls,
    countIf(outcome = 'resolved') AS resolved_calls,
    round(countIf(NOT ifNull(handed_off, false)) / count(), 3) AS containment_rate,
    round(countIf(outcome = 'resolved') / count(), 3) AS resolution_rate
FROM calls FINAL
WHERE ended_at IS NOT NULL
GROUP BY day
ORDER BY day
