-- Engine usage and cost by stage and engine.
SELECT
    stage,
    engine,
    uniqExact(call_id) AS calls,
    sum(llm_tokens_in + llm_tokens_out) AS llm_tokens,
    round(sum(stt_audio_seconds), 1) AS stt_audio_s,
    sum(tts_characters) AS tts_chars,
    round(sum(cost_usd), 4) AS cost_usd
FROM engine_usage FINAL
GROUP BY stage, engine
ORDER BY stage, engine
