"""The LLM's history holds what the caller heard of a reply cut off by a barge-in (the real ``openai`` client against
the local SSE server): the next request shows the model only the played words, flagged."""

from __future__ import annotations

import json
from typing import Any

import pytest

from processors.agent.heard import FLAG, HEARD_SLOT
from processors.agent.logic import AgentProcessor
from processors.agent.main import create_engine
from processors.agent.state import MemoryStore
from switchboard.bus import Correlation
from switchboard.records import CallEvent, CallEventKind, DialogState, Timings, Transcript, TranscriptKind
from switchboard.runner import Incoming
from switchboard.topics import AGENT_STATE, CALLS, REPLIES
from tests.engines.calls import of, run, said, started
from tests.engines.openai_server import Say
from tests.engines.test_cloud_agent_service import agent_service, collect, ended

THREE = ["We have slots on Monday morning. ", "Tuesday afternoon is also open for you. ", "Which day works for you?"]
HALF_OF_SECOND = "We have slots on Monday morning. Tuesday afternoon is also—"


def cleared(turn: int, **attributes: str) -> Incoming:
    e = CallEvent("c1", "s-c1", CallEventKind.PLAYBACK_CLEARED, 5, "twilio", "clinic", "en-US", "node-a", 3,
                  turn_seq=turn, attributes=attributes)
    return Incoming(e, Correlation(call_id="c1"), CALLS, 0, 50 + turn, 0)


CUT_IN_SECOND = {"sentences_heard": "1", "cut_sentence": "1", "cut_fraction": "0.50", "heard_ms": "2600"}


def assistant(body: dict[str, Any]) -> list[str]:
    return [m["content"] for m in body["messages"] if m["role"] == "assistant"]


async def test_a_reply_cut_in_its_second_sentence_reaches_the_model_as_heard_and_flagged(llm, make_agent):
    agent = make_agent()
    await run(agent, started("c1"))
    llm.then(Say(THREE))
    await run(agent, said("c1", 1, "Can I book an appointment?"))
    trimmed = of(await run(agent, cleared(1, **CUT_IN_SECOND)), DialogState)
    assert trimmed, "the trimmed state is published"
    llm.then(Say(["Sure, Monday it is."]))
    await run(agent, said("c1", 2, "Monday please."))  # the clear came first: this reply is made from what was heard
    body = llm.requests[1].body
    assert assistant(body)[-1] == HALF_OF_SECOND + FLAG
    assert "Which day works for you?" not in str(body["messages"]), "the unplayed remainder never reaches the model"
    assert all("turn" not in m for m in body["messages"]), "our turn tags are not sent to the API"


async def test_a_clear_after_the_next_transcript_trims_the_history_of_later_turns(llm, make_agent):
    agent = make_agent()
    await run(agent, started("c1"))
    llm.then(Say(THREE), Say(["Monday it is. "]), Say(["Goodbye."]))
    await run(agent, said("c1", 1, "Can I book an appointment?"))
    await run(agent, said("c1", 2, "Monday please."))  # the caller's words came before the clear of reply 1
    assert assistant(llm.requests[1].body)[-1].startswith("We have slots on Monday morning. Tuesday afternoon is also "
                                                          "open for you.")
    await run(agent, cleared(1, **CUT_IN_SECOND))
    await run(agent, said("c1", 3, "Thanks, bye."))
    later = assistant(llm.requests[2].body)
    assert later[-2:] == [HALF_OF_SECOND + FLAG, "Monday it is."]


async def test_a_queued_reply_that_never_started_is_not_in_the_history(llm, make_agent):
    agent = make_agent()
    await run(agent, started("c1"))
    llm.then(Say(THREE), Say(["Sure."]))
    await run(agent, said("c1", 1, "Can I book an appointment?"))
    await run(agent, cleared(1))  # an older ingress, and no PLAYBACK_STARTED: it never played
    await run(agent, said("c1", 2, "Hello?"))
    messages = llm.requests[1].body["messages"]
    assert "Monday morning" not in str(messages)
    assert [m["role"] for m in messages[-2:]] == ["user", "user"], "the caller's two turns, nothing said between"


async def test_after_a_rebalance_the_model_still_sees_only_what_was_heard(llm, agent_settings):
    store = MemoryStore()
    agent = AgentProcessor(create_engine(agent_settings()), store)
    await run(agent, started("c1"))
    llm.then(Say(THREE), Say(["Monday it is."]))
    store.saved["c1"] = of(await run(agent, said("c1", 1, "Can I book an appointment?")), DialogState)[-1]
    store.saved["c1"] = of(await run(agent, cleared(1, **CUT_IN_SECOND)), DialogState)[-1]
    restarted = AgentProcessor(create_engine(agent_settings()), store)  # another worker, from the changelog
    await restarted.on_assigned({0})
    await run(restarted, said("c1", 2, "Monday please."))
    assert assistant(llm.requests[1].body)[-1] == HALF_OF_SECOND + FLAG


@pytest.mark.slow
async def test_the_running_agent_service_trims_a_cut_reply_and_publishes_it_on_its_changelog(broker, llm, tmp_path):
    async with agent_service(broker, llm, tmp_path) as (settings, pub):
        corr = Correlation.new_call("c1", "s-c1", "clinic")
        llm.then(Say(THREE), Say(["Monday it is."]))
        start = CallEvent("c1", "s-c1", CallEventKind.CALL_STARTED, 1, "twilio", "clinic", "en-US", "node-a", 2)
        await (await pub.send(start, corr))
        await collect(settings, REPLIES, ended(0))

        def final(turn: int, text: str) -> Transcript:
            return Transcript("c1", turn, TranscriptKind.FINAL, text, "en-US", 900, "moonshine", 2,
                              timings=Timings(turn_detected_us=2))

        await (await pub.send(final(1, "Can I book an appointment?"), corr))
        await collect(settings, REPLIES, ended(1))
        await (await pub.send(cleared(1, **CUT_IN_SECOND).record, corr))
        states = await collect(settings, AGENT_STATE, lambda rs: any(HEARD_SLOT in s.slots for s in rs))
        trimmed = next(s for s in states if HEARD_SLOT in s.slots)
        assert json.loads(trimmed.slots[HEARD_SLOT])["heard"] == HALF_OF_SECOND
        await (await pub.send(final(2, "Monday please."), corr))
        await collect(settings, REPLIES, ended(2))
        assert assistant(llm.requests[1].body)[-1] == HALF_OF_SECOND + FLAG
