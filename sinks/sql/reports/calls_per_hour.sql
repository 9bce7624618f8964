-- Calls per hour: calls started in each hour, by channel.
SELECT
    toStartOfHour(started_at) AS hour,
    channel,
    count() AS calls
FROM calls FINAL
GROUP BY hour, channel
ORDER BY hour, channel
