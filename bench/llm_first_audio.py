"""Benchmark: processing latency our side adds between the LLM's first token and the first agent audio.

    .venv/bin/python bench/llm_first_audio.py [--turns 40] [--first-token-ms 300] [--tts tone|piper]

A local OpenAI-compatible server (real HTTP, server-sent events, loopback)
answers every turn after a configured first-token delay; its first event
carries a complete first sentence, the rest follows in small pieces. The real
``openai`` client, the OpenAI agent engine behind its breaker, the agent
processor and the TTS processor run in this process, as the pipeline chains
them (without the Kafka hops between them, measured separately in DESIGN.md).

Reported per turn, p50/p95/max over ``--turns`` turns after a warm-up:
- **our latency**: first token sent by the server → first ``audio.out`` record
  yielded by the TTS processor (SSE parse, sentence cut, breaker/deadline task,
  agent record, TTS logic, synthesis of the first sentence, PCM chunking);
- **first sentence**: first token sent → first agent sentence record (the agent side alone);
- **turn**: request sent → first audio (includes the configured model delay).

``--tts tone`` synthesises a 100 ms tone (pipeline overhead only); ``--tts piper``
the real offline voice (adds the synthesis of the first sentence).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from processors.agent.logic import AgentProcessor
from processors.agent.main import create_engine
from processors.agent.settings import AgentSettings
from processors.agent.state import MemoryStore
from processors.tts.logic import Synthesizer
from switchboard.records import AgentReply, AudioOut, ReplyKind
from switchboard.runner import Incoming
from switchboard.topics import REPLIES
from tests.engines.calls import said, started
from tests.engines.openai_server import OpenAIServer, Say
from tests.engines.tones import ToneEngine

REPLY = ["Sure, I can help you with that. ", "Let me ", "look at ", "the diary ", "for Tuesday. ", "One moment."]


async def one_turn(agent: AgentProcessor, tts: Synthesizer, server: OpenAIServer, call_id: str) -> dict[str, float]:
    await _drain(agent, started(call_id))
    sent = time.perf_counter()
    sentence_at = audio_at = None
    async for out in agent.handle(said(call_id, 1, "Can I book an appointment on Tuesday?")):
        r = out.record
        if isinstance(r, AgentReply) and r.kind is ReplyKind.SENTENCE and sentence_at is None:
            sentence_at = time.perf_counter()
            async for a in tts.handle(Incoming(r, out.corr, REPLIES, 0, 0, 0)):
                if isinstance(a.record, AudioOut) and audio_at is None:
                    audio_at = time.perf_counter()
    first_token = server.requests[-1].first_byte
    assert first_token is not None and sentence_at is not None and audio_at is not None
    return {"ours_ms": (audio_at - first_token) * 1000, "first_sentence_ms": (sentence_at - first_token) * 1000,
            "turn_ms": (audio_at - sent) * 1000}


async def _drain(agent: AgentProcessor, msg: Incoming) -> None:
    async for _ in agent.handle(msg):
        pass


def summary(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {"p50": round(statistics.median(ordered), 2), "p95": round(ordered[int(0.95 * (len(ordered) - 1))], 2),
            "max": round(ordered[-1], 2)}


async def main(turns: int, first_token_ms: float, tts_name: str) -> dict[str, object]:
    server = await OpenAIServer(default=Say(REPLY, first_delay=first_token_ms / 1000, delay=0.02)).start()
    try:
        settings = AgentSettings(agent_engine="openai", llm_base_url=server.url, llm_api_key="bench",
                                 llm_first_sentence_s=5 + first_token_ms / 1000)
        agent = AgentProcessor(create_engine(settings), MemoryStore())
        if tts_name == "piper":
            from processors.tts.piper import PiperEngine

            tts = Synthesizer(PiperEngine())
        else:
            tts = Synthesizer(ToneEngine())
        for i in range(3):  # warm-up: connection pool, imports, first synthesis
            await one_turn(agent, tts, server, f"warm{i}")
        rows = [await one_turn(agent, tts, server, f"c{i}") for i in range(turns)]
    finally:
        await server.stop()
    return {"turns": turns, "first_token_delay_ms": first_token_ms, "tts": tts_name,
            **{k: summary([r[k] for r in rows]) for k in ("ours_ms", "first_sentence_ms", "turn_ms")}}


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--turns", type=int, default=40)
    ap.add_argument("--first-token-ms", type=float, default=300.0)
    ap.add_argument("--tts", choices=("tone", "piper"), default="tone")
    a = ap.parse_args()
    print(json.dumps(asyncio.run(main(a.turns, a.first_token_ms, a.tts)), indent=2))
