"""Post-call enrichment: when a call ends, summarise it, score the caller's
sentiment per turn and per call, name its intent and whether it reached its
goal or was handed off, and publish a ``CallSummary`` (topic ``summaries``)
that the sink folds into ClickHouse's ``calls`` table.
"""
