-- Cost per call: engine cost (USD) per day, per call and per minute of call.
SELECT
    toDate(started_at) AS day,
    count() AS calls,
    round(sum(cost_usd), 4) AS total_usd,
    round(avg(cost_usd), 4) AS usd_per_call,
    round(sum(cost_usd) / nullIf(sumIf(duration_s, duration_s IS NOT NULL) / 60, 0), 4) AS usd_per_minute
FROM calls FINAL
GROUP BY day
ORDER BY day
