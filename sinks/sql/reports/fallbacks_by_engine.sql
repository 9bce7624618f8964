-- Engine fallbacks by stage and engine pair (which engine failed over to which).
SELECT
    attributes['stage'] AS stage,
    attributes['from'] AS from_engine,
    attributes['to'] AS to_engine,
    count() AS fallbacks,
    uniqExact(call_id) AS calls
FROM events FINAL
WHERE kind = 'engine_fallback'
GROUP BY stage, from_engine, to_engine
ORDER BY fallbacks DESC, stage, from_engine, to_engine
