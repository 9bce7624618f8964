"""The OpenAI-compatible agent, driven through the real ``openai`` client against a local SSE server."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from processors.agent.fallback import AgentRouter
from processors.tts.logic import Synthesizer
from switchboard.records import AgentReply, AudioOut, CallEvent, CallEventKind, DialogState, EngineUsage, ReplyKind
from switchboard.runner import Incoming
from switchboard.topics import REPLIES
from tests.engines.calls import barge_in, of, run, said, started
from tests.engines.openai_server import CallTool, Fail, Hang, Say
from tests.engines.tones import ToneEngine

POLICY_BOOKING_PROMPT = "Which day would suit you?"


def sentences(records: list) -> list[str]:
    return [r.text for r in of(records, AgentReply) if r.kind is ReplyKind.SENTENCE]


async def test_greeting_is_local_and_a_reply_streams_from_the_model(llm, make_agent):
    agent = make_agent()
    greeting = await run(agent, started("c1"))
    assert sentences(greeting) == ["Thank you for calling Riverside Clinic.", "How can I help you today?"]
    assert llm.requests == []
    llm.then(Say(["We open at ", "8 AM. ", "Anything else?"]))
    reply = await run(agent, said("c1", 1, "When do you open?"))
    assert sentences(reply) == ["We open at 8 AM.", "Anything else?"]
    assert {r.engine for r in of(reply, AgentReply)} == {"openai"}
    body = llm.requests[0].body
    assert body["stream"] is True and body["messages"][-1] == {"role": "user", "content": "When do you open?"}
    assert body["messages"][1]["role"] == "assistant"  # the greeting is part of the conversation


async def test_streamed_sentences_reach_tts_before_the_reply_ends(llm, make_agent):
    agent = make_agent()
    await run(agent, started("c1"))
    llm.then(Say(["Sure. ", "Let me look ", "at the diary ", "for you. ", "One moment."], delay=0.15))
    tts = Synthesizer(ToneEngine())
    first_audio_at: float | None = None
    async for out in agent.handle(said("c1", 1, "Can I book?")):
        r = out.record
        if isinstance(r, AgentReply) and r.kind is ReplyKind.SENTENCE and first_audio_at is None:
            audio = [o.record async for o in tts.handle(Incoming(r, out.corr, REPLIES, 0, 0, 0))]
            assert of(audio, AudioOut), "the first sentence is synthesised"
            first_audio_at = time.perf_counter()
            assert not llm.requests[0].completed, "first audio while the model is still streaming"
    assert first_audio_at is not None and llm.requests[0].completed


async def test_a_tool_call_is_executed_and_its_result_fed_back(llm, make_agent):
    agent = make_agent()
    await run(agent, started("c1"))
    llm.then(CallTool("book_slot", {"day": "Tuesday", "time": "3 PM"}), Say(["You're booked for Tuesday at 3 PM."]))
    reply = await run(agent, said("c1", 1, "Book me Tuesday at 3 PM please."))
    assert sentences(reply) == ["You're booked for Tuesday at 3 PM."]
    follow_up = llm.requests[1].body["messages"]
    assert follow_up[-2]["tool_calls"][0]["function"]["name"] == "book_slot"
    assert follow_up[-1]["role"] == "tool" and json.loads(follow_up[-1]["content"])["booked"] is True
    state = of(reply, DialogState)[-1]
    assert (state.slots["day"], state.slots["time"], state.slots["outcome"]) == ("Tuesday", "3 PM", "resolved")


async def test_a_hand_off_tool_call_ends_the_call(llm, make_agent):
    agent = make_agent()
    await run(agent, started("c1"))
    llm.then(CallTool("hand_off", {"reason": "caller asked"}), Say(["Putting you through now."]))
    reply = await run(agent, said("c1", 1, "Let me talk to someone."))
    end = [r for r in of(reply, AgentReply) if r.kind is ReplyKind.END]
    assert end[0].end_call and of(reply, DialogState)[-1].slots["outcome"] == "handoff"


async def test_barge_in_cancels_the_stream_at_once(llm, make_agent):
    agent = make_agent()
    await run(agent, started("c1"))
    llm.then(Say(["First sentence. ", *[f"word{i} " for i in range(40)], "end."], delay=0.05))
    got: list = []
    first = asyncio.Event()

    async def reply() -> None:
        async for out in agent.handle(said("c1", 1, "Tell me everything.")):
            got.append(out.record)
            if isinstance(out.record, AgentReply) and out.record.kind is ReplyKind.SENTENCE:
                first.set()

    task = asyncio.create_task(reply())
    await asyncio.wait_for(first.wait(), 2)
    cancelled_at = time.perf_counter()
    cancel = await run(agent, barge_in("c1", 1))
    await asyncio.wait_for(task, 1)
    assert time.perf_counter() - cancelled_at < 0.5, "the reply stops at once, not after the 40 pieces left"
    assert [r.kind for r in of(cancel, AgentReply)] == [ReplyKind.CANCEL]
    assert ReplyKind.END not in [r.kind for r in of(got, AgentReply)], "a cancelled reply has no end"
    for _ in range(50):
        if llm.requests[0].disconnected:
            break
        await asyncio.sleep(0.02)
    assert llm.requests[0].disconnected and not llm.requests[0].completed
    history = json.loads(of(got, DialogState)[-1].slots["llm.history"])
    assert history[-1]["content"].endswith("[interrupted]")
    usage = of(got, EngineUsage)[0]
    assert usage.llm_tokens_in > 0 and 0 < usage.llm_tokens_out < 40, "estimated for what was streamed before the cut"


@pytest.mark.parametrize(("failure", "reason"), [(Fail(429), "429"), (Fail(500), "500"), (Hang(), "EngineTimeout"),
                                               (Hang(headers_first=False), "Timeout")],
                         ids=["rate-limited", "server-error", "hung-stream", "hung-before-headers"])
async def test_a_failing_model_gives_the_fallback_utterance_then_the_offline_agent(llm, make_agent, failure, reason):
    agent = make_agent()
    await run(agent, started("c1"))
    llm.then(failure, failure)
    t0 = time.perf_counter()
    reply = await run(agent, said("c1", 1, "I'd like to book an appointment."))
    assert time.perf_counter() - t0 < 1.0 + 0.8, "within the first-sentence deadline"
    assert sentences(reply) == ["Sorry, give me a moment.", POLICY_BOOKING_PROMPT]
    event = of(reply, CallEvent)[0]
    assert event.kind is CallEventKind.ENGINE_FALLBACK and reason in (event.reason or "")
    assert event.attributes == {"stage": "agent", "from": "openai", "to": "policy"} and event.session_id == "s-c1"
    if isinstance(failure, Fail):
        assert len(llm.requests) == 2, "one retry with backoff before giving up"
    # the rest of the call stays on the offline agent, even though the model is healthy again
    calls_before = len(llm.requests)
    nxt = await run(agent, said("c1", 2, "Tuesday at 10 AM."))
    assert sentences(nxt) == ["Just to confirm, I'll book you in for Tuesday at 10 AM.", "Is that right?"]
    assert {r.engine for r in of(nxt, AgentReply)} == {"policy"} and len(llm.requests) == calls_before


async def test_a_single_rate_limit_is_retried_and_the_caller_never_notices(llm, make_agent):
    agent = make_agent()
    await run(agent, started("c1"))
    llm.then(Fail(429), Say(["Of course."]))
    reply = await run(agent, said("c1", 1, "Can you help?"))
    assert sentences(reply) == ["Of course."] and not of(reply, CallEvent)


async def test_the_breaker_opens_sends_new_calls_offline_and_later_closes(llm, make_agent):
    agent = make_agent()  # breaker: 2 failed replies in a row, open for 1 s
    router = agent.engine
    assert isinstance(router, AgentRouter)
    guard = router.agents["openai"].guard
    llm.default = Fail(500)
    for call in ("a", "b"):
        await run(agent, started(call))
        await run(agent, said(call, 1, "Hello?"))
    assert guard.state == "open"
    # a new call while the breaker is open starts on the offline agent, without a request
    n = len(llm.requests)
    greeting = await run(agent, started("c"))
    assert {r.engine for r in of(greeting, AgentReply)} == {"policy"}
    assert of(greeting, CallEvent)[0].reason.endswith("agent breaker open")
    await run(agent, said("c", 1, "What are your opening hours?"))
    assert len(llm.requests) == n
    # after the reset time, a new call's trial request succeeds and closes the breaker
    llm.default = Say(["Hi again."])
    await asyncio.sleep(1.05)
    await run(agent, started("d"))
    reply = await run(agent, said("d", 1, "Hello?"))
    assert sentences(reply) == ["Hi again."] and guard.state == "closed"


async def test_usage_is_published_with_its_cost_from_the_price_table(llm, make_agent):
    agent = make_agent()
    await run(agent, started("c1"))
    llm.then(Say(["Sure."], usage=(1000, 100)))
    reply = await run(agent, said("c1", 1, "Hi"))
    usage = of(reply, EngineUsage)[0]
    assert (usage.stage, usage.engine, usage.turn_seq) == ("agent", "openai", 1)
    assert (usage.llm_tokens_in, usage.llm_tokens_out) == (1000, 100)
    assert usage.cost_usd == pytest.approx(1000 * 0.15e-6 + 100 * 0.60e-6)


async def test_a_call_can_ask_for_the_offline_engine_at_call_start(llm, make_agent):
    agent = make_agent()
    await run(agent, started("c1", engines="agent=policy,tts=piper"))
    reply = await run(agent, said("c1", 1, "What are your opening hours?"))
    assert {r.engine for r in of(reply, AgentReply)} == {"policy"} and llm.requests == []
    assert {r.voice for r in of(reply, AgentReply)} == {"piper:"}


async def test_long_calls_keep_the_conversation_within_the_token_budget(llm, make_agent):
    agent = make_agent(llm_budget_tokens=120)
    await run(agent, started("c1"))
    llm.default = Say(["That is noted, thank you very much for telling me all of that."])
    for turn in range(1, 9):
        await run(agent, said("c1", turn, f"Turn {turn}: my name is Alex and I have a question about my bill."))
    last = llm.requests[-1].body["messages"]
    assert sum(len(m.get("content") or "") for m in last[1:]) // 4 <= 120 + 40
    assert "Earlier in this call" in last[0]["content"] and "Turn 1:" in last[0]["content"]
    assert last[-1]["content"].startswith("Turn 8:")


async def test_azure_openai_is_reached_through_its_deployment_route_with_the_key_header(llm, make_agent):
    agent = make_agent(agent_engine="azure_openai", azure_openai_endpoint=llm.root, llm_model="clinic-gpt4o-mini",
                       llm_api_key="azure-test-key")
    await run(agent, started("c1"))
    llm.then(Say(["Hello from Azure."]))
    reply = await run(agent, said("c1", 1, "Hi"))
    assert sentences(reply) == ["Hello from Azure."] and {r.engine for r in of(reply, AgentReply)} == {"azure_openai"}
    seen = llm.requests[0]
    assert seen.path.startswith("/openai/deployments/clinic-gpt4o-mini/chat/completions?api-version=")
    assert seen.headers["api-key"] == "azure-test-key"


async def test_a_call_asking_for_an_engine_this_deployment_lacks_gets_the_default(llm, make_agent):
    agent = make_agent()
    await run(agent, started("c1", engines="claude"))
    llm.then(Say(["Hello."]))
    reply = await run(agent, said("c1", 1, "Hi"))
    assert {r.engine for r in of(reply, AgentReply)} == {"openai"} and len(llm.requests) == 1
