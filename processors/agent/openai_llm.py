"""The LLM agent through the ``openai`` SDK: OpenAI, Azure OpenAI or any OpenAI-compatible endpoint.

Replies are streamed and cut into sentences as the tokens arrive, so TTS starts
on the first sentence while the model is still writing. Tool calls (find and
book slots, hand off, end the call) are executed and their results fed back in
a further round. The conversation is kept within a token budget
(``Conversation``). Closing the reply generator (barge-in) closes the HTTP
stream at once.

The SDK is imported only here, lazily; one client per process and endpoint
(``client_for``), built once with its credentials.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from processors.agent.conversation import Conversation, approx_tokens
from processors.agent.engine import ENDED
from processors.agent.policy import intent_of
from processors.agent.sentences import SentenceSplitter
from processors.agent.tools import ClinicTools
from processors.resilience import EngineGuard, Journal, Usage
from switchboard.records import DialogState

if TYPE_CHECKING:
    from openai import AsyncOpenAI

logger = logging.getLogger(__name__)

SYSTEM_PROMPT = (
    "You are the phone receptionist of {clinic}. You speak to callers on the phone: answer in one to three short "
    "spoken sentences, no lists, no markdown. You can look up free appointment slots (find_slots), book one once "
    "the caller confirms (book_slot), transfer the caller to staff (hand_off) and end the call after a goodbye "
    "(end_call). Opening hours: Monday to Friday 8 AM to 6 PM, Saturday 9 AM to 1 PM."
)

_clients: dict[tuple[Any, ...], AsyncOpenAI] = {}


def is_transient(exc: BaseException) -> bool:
    """Errors worth one more try before anything was said: rate limits, server errors, connection errors."""
    import openai

    if isinstance(exc, openai.APIStatusError):
        return exc.status_code == 429 or exc.status_code >= 500
    return isinstance(exc, openai.APIConnectionError)


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where the model lives. ``azure_endpoint`` set → Azure OpenAI; else ``base_url`` (None = api.openai.com)."""

    api_key: str | None = field(repr=False)
    base_url: str | None = None
    azure_endpoint: str | None = None
    azure_api_version: str = "2024-10-21"
    azure_entra: bool = False  # Entra ID (managed identity / az login) instead of a key
    timeout_s: float = 5.0


def client_for(ep: Endpoint) -> AsyncOpenAI:
    """The process's client for an endpoint: created once, so credentials and connections are reused by every call."""
    key = (ep.api_key, ep.base_url, ep.azure_endpoint, ep.azure_api_version, ep.azure_entra, ep.timeout_s)
    if key not in _clients:
        from openai import AsyncAzureOpenAI, AsyncOpenAI

        common: dict[str, Any] = {"max_retries": 0, "timeout": ep.timeout_s}  # retries are ours (EngineGuard)
        if ep.azure_endpoint:
            if ep.azure_entra:
                from azure.identity.aio import DefaultAzureCredential, get_bearer_token_provider

                # one credential per process: acquiring a token from a fresh credential takes seconds
                provider = get_bearer_token_provider(
                    DefaultAzureCredential(), "https://cognitiveservices.azure.com/.default"
                )
                _clients[key] = AsyncAzureOpenAI(
                    azure_endpoint=ep.azure_endpoint,
                    api_version=ep.azure_api_version,
                    azure_ad_token_provider=provider,
                    **common,
                )
            else:
                _clients[key] = AsyncAzureOpenAI(
                    azure_endpoint=ep.azure_endpoint, api_version=ep.azure_api_version, api_key=ep.api_key, **common
                )
        else:
            _clients[key] = AsyncOpenAI(api_key=ep.api_key or "unused", base_url=ep.base_url, **common)
    return _clients[key]


@dataclass(slots=True)
class _ToolCall:
    id: str = ""
    name: str = ""
    arguments: str = ""


class OpenAIAgent:
    def __init__(
        self,
        client: AsyncOpenAI,
        model: str,
        guard: EngineGuard,
        journal: Journal,
        *,
        name: str = "openai",
        clinic: str = "Riverside Clinic",
        system_prompt: str = SYSTEM_PROMPT,
        greeting: tuple[str, ...] = (),
        max_tokens: int = 200,
        temperature: float = 0.3,
        budget_tokens: int = 1500,
        max_tool_rounds: int = 3,
        tools: ClinicTools | None = None,
    ) -> None:
        self.name = name
        self.client = client
        self.model = model
        self.guard = guard
        self.journal = journal
        self.system_prompt = system_prompt.format(clinic=clinic)
        self.greeting = greeting or (f"Thank you for calling {clinic}.", "How can I help you today?")
        self.max_tokens = max_tokens
        self.temperature = temperature
        self.budget_tokens = budget_tokens
        self.max_tool_rounds = max_tool_rounds
        self.tools = tools or ClinicTools()

    async def greet(self, state: DialogState) -> AsyncIterator[str]:
        # A fixed greeting: no model round-trip on the first words, and the TTS phrase cache has it ready.
        state.stage = "await_intent"
        conv = Conversation(state, self.budget_tokens)
        conv.add({"role": "assistant", "content": " ".join(self.greeting)})
        conv.save()
        for sentence in self.greeting:
            yield sentence

    async def respond(self, state: DialogState, text: str) -> AsyncIterator[str]:
        conv = Conversation(state, self.budget_tokens)
        conv.add({"role": "user", "content": text})
        state.intent = intent_of(text) or state.intent
        said: list[str] = []
        usage = [0, 0]
        finished = False
        try:
            for _ in range(self.max_tool_rounds + 1):
                splitter = SentenceSplitter()
                content: list[str] = []
                calls: dict[int, _ToolCall] = {}
                messages = conv.messages(self.system_prompt)
                async for piece in self._stream(messages, content, calls, usage):
                    for sentence in splitter.feed(piece):
                        said.append(sentence)
                        yield sentence
                for sentence in splitter.flush():
                    said.append(sentence)
                    yield sentence
                if not calls:
                    break
                conv.add(
                    {
                        "role": "assistant",
                        "content": "".join(content) or None,
                        "tool_calls": [
                            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
                            for c in calls.values()
                        ],
                    }
                )
                for c in calls.values():
                    result = self.tools.run(state, c.name, c.arguments)
                    logger.info("tool call", extra={"fields": {"tool": c.name}})
                    conv.add({"role": "tool", "tool_call_id": c.id, "content": result})
            finished = True
        finally:
            reply = " ".join(said)
            if reply or finished:
                conv.add({"role": "assistant", "content": reply if finished else reply + " [interrupted]"})
            if state.stage != ENDED:
                state.stage = "await_intent"
            conv.save()
            self.journal.add(state.call_id, Usage("agent", self.name, state.last_turn_seq, usage[0], usage[1]))

    async def _stream(
        self, messages: list[dict[str, Any]], content: list[str], calls: dict[int, _ToolCall], usage: list[int]
    ) -> AsyncIterator[str]:
        """One streamed completion: yields text pieces; collects tool calls and token usage."""
        stream = await self.guard.retrying(
            lambda: self.client.chat.completions.create(
                model=self.model,
                messages=messages,
                tools=self.tools.schemas,
                stream=True,  # type: ignore[arg-type]
                stream_options={"include_usage": True},
                max_tokens=self.max_tokens,
                temperature=self.temperature,
            )
        )
        reported = False
        try:
            async with stream:
                async for chunk in stream:
                    if chunk.usage is not None:
                        usage[0] += chunk.usage.prompt_tokens
                        usage[1] += chunk.usage.completion_tokens
                        reported = True
                    if not chunk.choices:
                        continue
                    delta = chunk.choices[0].delta
                    for tc in delta.tool_calls or ():
                        call = calls.setdefault(tc.index, _ToolCall())
                        call.id = tc.id or call.id
                        if tc.function is not None:
                            call.name = tc.function.name or call.name
                            call.arguments += tc.function.arguments or ""
                    if delta.content:
                        content.append(delta.content)
                        yield delta.content
        finally:
            if not reported:  # endpoints that ignore stream_options, or a stream cut short (barge-in): estimate
                usage[0] += sum(approx_tokens(m) for m in messages)
                usage[1] += approx_tokens({"content": "".join(content)})
