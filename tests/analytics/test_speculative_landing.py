"""A speculative reply is never recorded as said: only the confirmed SENTENCE records of a reply reach the
conversation (``transcripts``) in ClickHouse; the speculation and its DISCARD stay in the landing table alone."""

from __future__ import annotations

from sinks.landing import container, framed, landing_table, landing_value
from sinks.redact import Redactor
from sinks.store import Store
from switchboard import codec
from switchboard import records as r


def _reply(offset: int, kind: r.ReplyKind, text: str, seq: int = 0) -> bytes:
    reply = r.AgentReply("spec1", 3, seq, kind, text, 0, "policy", r.now_us() + offset)  # recent: within the TTL
    return framed(0, offset, landing_value(r.AgentReply, codec.encode(reply), Redactor()))


def test_only_the_reply_said_lands_in_the_conversation(store: Store) -> None:
    records = [
        _reply(1, r.ReplyKind.SPECULATIVE, "Which day would suit you?"),  # made at the pause, never said
        _reply(2, r.ReplyKind.DISCARD, "", seq=1),
        _reply(3, r.ReplyKind.SENTENCE, "What time on Friday works best for you?"),
        _reply(4, r.ReplyKind.END, "", seq=1),
    ]
    store.insert_avro(landing_table(r.AgentReply), container(r.AgentReply, records))
    _, rows = store.query("SELECT speaker, text FROM transcripts WHERE call_id = 'spec1' ORDER BY ts")
    assert rows == [("agent", "What time on Friday works best for you?")]
