-- Average handle time: duration of ended calls per day (seconds), mean and median.
SELECT
    toDate(started_at) AS day,
    count() AS ended_calls,
    round(avg(duration_s), 1) AS avg_handle_s,
    round(median(duration_s), 1) AS median_handle_s,
    round(max(duration_s), 1) AS max_handle_s
FROM calls FINAL
WHERE ended_at IS NOT NULL
GROUP BY day
ORDER BY day
