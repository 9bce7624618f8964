-- Rows per table: as stored (a replay's duplicates until merges remove them) and after deduplication.
SELECT table_name, stored_rows, rows FROM (
    SELECT 'calls' AS table_name, (SELECT count() FROM calls) AS stored_rows, (SELECT count() FROM calls FINAL) AS rows
    UNION ALL
    SELECT 'turns', (SELECT count() FROM turns), (SELECT count() FROM turns FINAL)
    UNION ALL
    SELECT 'transcripts', (SELECT count() FROM transcripts), (SELECT count() FROM transcripts FINAL)
    UNION ALL
    SELECT 'events', (SELECT count() FROM events), (SELECT count() FROM events FINAL)
    UNION ALL
    SELECT 'engine_usage', (SELECT count() FROM engine_usage), (SELECT count() FROM engine_usage FINAL)
    UNION ALL
    SELECT 'call_summaries', (SELECT count() FROM call_summaries), (SELECT count() FROM call_summaries FINAL)
    UNION ALL
    SELECT 'reply_playback', (SELECT count() FROM reply_playback), (SELECT count() FROM reply_playback FINAL)
)
ORDER BY table_name
