"""A simulated caller speaking the Twilio Media Streams protocol, for demos and tests.

It plays each utterance in real time as 20 ms μ-law frames (and silence in
between, as a phone line does), echoes ``mark``s as Twilio does once the audio
sent before them has played in real time (and at once those a ``clear`` drops),
records the agent's audio, and reads what the pipeline heard and said
from the bus (transcripts, replies, latency topics) for its call ID.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import websockets
from aiokafka import AIOKafkaConsumer, TopicPartition

from switchboard import codec
from switchboard.audio import BUS_RATE, Resampler, mulaw_decode, mulaw_encode, rms_dbfs
from switchboard.bus import consumer_options, topic_name
from switchboard.credentials import ClientCredentials
from switchboard.records import AgentReply, ReplyKind, Transcript, TranscriptKind, TurnLatency
from switchboard.settings import ServiceSettings
from switchboard.topics import LATENCY, REPLIES, TRANSCRIPTS
from switchboard.twilio_client import open_media_stream

FRAME = 160  # 20 ms of 8 kHz μ-law


@dataclass
class Utterance:
    samples: np.ndarray  # bus-rate int16
    label: str = ""
    over_reply_s: float | None = None
    """Say it this long into the agent's answer to the utterance before (over the reply: a barge-in or a backchannel),
    instead of after that answer has ended."""


@dataclass
class CallResult:
    call_id: str
    transcripts: dict[int, str] = field(default_factory=dict)
    replies: dict[int, list[str]] = field(default_factory=dict)
    latencies: dict[int, TurnLatency] = field(default_factory=dict)
    agent_audio: list[np.ndarray] = field(default_factory=list)  # 8 kHz int16, per reply heard
    clears: int = 0
    clear_times: list[float] = field(default_factory=list)  # monotonic, as each clear arrived
    spoke_at: list[float] = field(default_factory=list)  # monotonic, each utterance's first frame sent
    marks: list[str] = field(default_factory=list)  # in the order echoed: once the audio before each had played
    heard_after_speech_s: list[float | None] = field(default_factory=list)  # client-side response time per utterance
    close_code: int | None = None
    close_reason: str = ""

    def agent_wav(self) -> np.ndarray:
        return np.concatenate(self.agent_audio) if self.agent_audio else np.zeros(0, dtype=np.int16)


class BusObserver:
    """Reads transcripts, replies and latencies of one call from the bus (from now on)."""

    def __init__(self, settings: ServiceSettings, call_id: str, result: CallResult) -> None:
        self.settings, self.call_id, self.result = settings, call_id, result
        self.consumer = AIOKafkaConsumer(group_id=None, **consumer_options(settings))
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        try:
            await self.consumer.start()
        except BaseException:  # no broker: close what start() opened before the error reaches the command
            await self.consumer.stop()
            raise
        tps = []
        for t in (TRANSCRIPTS, REPLIES, LATENCY):
            name = topic_name(self.settings, t)
            parts = self.consumer.partitions_for_topic(name) or set()
            if not parts:
                await self.consumer._client.force_metadata_update()
                parts = self.consumer.partitions_for_topic(name) or set()
            tps += [TopicPartition(name, p) for p in parts]
        self.consumer.assign(tps)
        await self.consumer.seek_to_end(*tps)
        for tp in tps:  # resolve positions now, before the call produces anything
            await self.consumer.position(tp)
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        kinds = {topic_name(self.settings, t): t.record for t in (TRANSCRIPTS, REPLIES, LATENCY)}
        while True:
            for tp, msgs in (await self.consumer.getmany(timeout_ms=100)).items():
                for msg in msgs:
                    if msg.key != self.call_id.encode():
                        continue
                    rec: Any = codec.decode(kinds[tp.topic], msg.value)
                    if isinstance(rec, Transcript) and rec.kind is TranscriptKind.FINAL:
                        self.result.transcripts[rec.turn_seq] = rec.text
                    elif isinstance(rec, AgentReply) and rec.kind is ReplyKind.SENTENCE:
                        self.result.replies.setdefault(rec.turn_seq, []).append(rec.text)
                    elif isinstance(rec, TurnLatency):
                        self.result.latencies[rec.turn_seq] = rec

    async def stop(self) -> None:
        if self.task:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
        await self.consumer.stop()


def http_base(url: str) -> str:
    """``ws://host:port/twilio/media`` → ``http://host:port`` (where the voice webhook is)."""
    base = url.replace("wss://", "https://", 1).replace("ws://", "http://", 1)
    return base.removesuffix("/").removesuffix("/twilio/media")


class TwilioCaller:
    """``url`` is the ingress's media-stream URL or its http base; the call starts as Twilio's would, at the signed
    voice webhook, and the stream is the one its TwiML names (with ``credentials``, else anonymously)."""

    def __init__(self, url: str, settings: ServiceSettings, call_id: str | None = None,
                 credentials: ClientCredentials | None = None) -> None:
        self.url = url
        self.http_base = http_base(url)
        self.credentials = credentials
        self.settings = settings
        self.call_id = call_id or f"CA{secrets.token_hex(16)}"
        self.stream_sid = f"MZ{secrets.token_hex(16)}"
        self.result = CallResult(self.call_id)
        self._ws: Any = None
        self._seq = 0
        self._last_media = 0.0
        self._reply_audio: list[np.ndarray] = []
        self._first_media_after: float | None = None
        self._speech_end: float | None = None
        self._play_until = 0.0  # when the agent audio received so far will have played (the phone plays in real time)
        self._echoes: dict[asyncio.Task[None], str] = {}  # marks waiting for the audio before them to play

    def _msg(self, event: str, **body: Any) -> str:
        self._seq += 1
        return json.dumps({"event": event, "sequenceNumber": str(self._seq), "streamSid": self.stream_sid, **body})

    async def _receive(self) -> None:
        try:
            async for raw in self._ws:
                msg = json.loads(raw)
                ev = msg.get("event")
                if ev == "media":
                    now = time.monotonic()
                    if self._speech_end is not None and self._first_media_after is None:
                        self._first_media_after = now
                    self._last_media = now
                    audio = mulaw_decode(base64.b64decode(msg["media"]["payload"]))
                    self._play_until = max(now, self._play_until) + len(audio) / 8000
                    self._reply_audio.append(audio)
                elif ev == "mark":
                    name = msg["mark"]["name"]
                    if name.startswith("reply-"):  # a reply's end (a sentence's end is s{turn}.{sentence})
                        self._flush_reply()
                    task = asyncio.create_task(self._echo(name, max(0.0, self._play_until - time.monotonic())))
                    self._echoes[task] = name
                elif ev == "clear":
                    self.result.clears += 1
                    self.result.clear_times.append(time.monotonic())
                    self._flush_reply()
                    self._play_until = time.monotonic()
                    dropped, self._echoes = list(self._echoes.items()), {}
                    for task, name in dropped:  # Twilio echoes the marks a clear drops, at once
                        task.cancel()
                        await self._echoed(name)
        except websockets.ConnectionClosed:
            pass  # an abnormal close; a clean one (1000) just ends the iteration
        self.result.close_code, self.result.close_reason = self._ws.close_code, self._ws.close_reason or ""

    async def _echo(self, name: str, after_s: float) -> None:
        """Twilio echoes a mark once the audio sent before it has played."""
        await asyncio.sleep(after_s)
        self._echoes.pop(asyncio.current_task(), None)  # type: ignore[arg-type]
        await self._echoed(name)

    async def _echoed(self, name: str) -> None:
        self.result.marks.append(name)
        with contextlib.suppress(websockets.ConnectionClosed):
            await self._ws.send(self._msg("mark", mark={"name": name}))

    def _flush_reply(self) -> None:
        if self._reply_audio:
            self.result.agent_audio.append(np.concatenate(self._reply_audio))
            self._reply_audio = []

    async def _send_audio(self, samples_8k: np.ndarray, start: float) -> float:
        """Send in real time; returns the clock after the last frame."""
        payload = mulaw_encode(samples_8k)
        clock = start
        for i in range(0, len(payload), FRAME):
            await asyncio.sleep(max(0.0, clock - time.monotonic()))
            media = {
                "track": "inbound",
                "chunk": str(i // FRAME),
                "timestamp": str(int(i / 8)),
                "payload": base64.b64encode(payload[i : i + FRAME]).decode(),
            }
            try:
                await self._ws.send(self._msg("media", media=media))
            except websockets.ConnectionClosed:
                return clock  # the agent hung up; the receiver records how
            clock += 0.02
        return clock

    async def _wait_reply(self, clock: float, timeout_s: float, greeting: bool, quiet_s: float = 0.6) -> float:
        """Keep the line open (silence) until a reply has been heard and has ended, or timeout.

        The greeting's end is its ``reply-0`` mark; an answer's is any later mark of another reply.
        """
        silence = np.zeros(FRAME * 5, dtype=np.int16)  # 100 ms
        deadline = time.monotonic() + timeout_s
        seen = len(self.result.marks)

        def done() -> bool:
            new = self.result.marks[seen:] if not greeting else self.result.marks
            return any(m.startswith("reply-") and (m == "reply-0") == greeting for m in new)

        while time.monotonic() < deadline and self.result.close_code is None:
            clock = await self._send_audio(silence, clock)
            if done() and time.monotonic() - self._last_media > quiet_s:
                break
        return clock

    async def _wait_into_reply(self, clock: float, into_s: float, timeout_s: float) -> float:
        """Keep the line open (silence) until the answer to the last utterance has played ``into_s``."""
        silence = np.zeros(FRAME, dtype=np.int16)  # 20 ms: the next utterance starts on time
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and self.result.close_code is None:
            first = self._first_media_after
            if first is not None and time.monotonic() - first >= into_s:
                break
            clock = await self._send_audio(silence, clock)
        first, end = self._first_media_after, self._speech_end
        self.result.heard_after_speech_s.append(first - end if first is not None and end is not None else None)
        return clock

    async def run(
        self, utterances: list[Utterance], *, wait_greeting: bool = True, timeout_s: float = 20.0, hang_up: bool = True
    ) -> CallResult:
        observer = BusObserver(self.settings, self.call_id, self.result)
        await observer.start()
        down = Resampler(BUS_RATE, 8000)
        try:
            ws, params = await open_media_stream(self.http_base, self.credentials, call_sid=self.call_id)
            async with ws:
                self._ws = ws
                receiver = asyncio.create_task(self._receive())
                await ws.send(json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}))
                start = {
                    "accountSid": "AC" + "0" * 32,
                    "streamSid": self.stream_sid,
                    "callSid": self.call_id,
                    "tracks": ["inbound"],
                    "customParameters": params,  # the TwiML's <Parameter>s: From, CallSid, the stream token
                    "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
                }
                await ws.send(self._msg("start", start=start))
                clock = time.monotonic()
                if wait_greeting:
                    clock = await self._wait_reply(clock, timeout_s, greeting=True)
                for i, u in enumerate(utterances):
                    if u.over_reply_s is not None:  # into the answer to the utterance before
                        clock = await self._wait_into_reply(clock, u.over_reply_s, timeout_s)
                    self._first_media_after, self._speech_end = None, None
                    self.result.spoke_at.append(max(clock, time.monotonic()))
                    clock = await self._send_audio(down.process(u.samples), clock)
                    self._speech_end = clock
                    if i + 1 < len(utterances) and utterances[i + 1].over_reply_s is not None:
                        continue  # the next one is said over this one's answer: its answer is not awaited to its end
                    clock = await self._wait_reply(clock, timeout_s, greeting=False)
                    first = self._first_media_after
                    self.result.heard_after_speech_s.append(first - self._speech_end if first else None)
                await asyncio.sleep(0.5)  # let the last latency record arrive
                if hang_up and self.result.close_code is None:
                    with contextlib.suppress(websockets.ConnectionClosed):
                        stop = {"accountSid": start["accountSid"], "callSid": self.call_id}
                        await ws.send(self._msg("stop", stop=stop))
                        await ws.close()
                await asyncio.wait_for(receiver, 5)
                for task in self._echoes:  # the call is over: marks still waiting for their audio are never echoed
                    task.cancel()
                self._flush_reply()
        finally:
            await observer.stop()
        return self.result


def non_silent(samples: np.ndarray, threshold_dbfs: float = -45.0) -> bool:
    return len(samples) > 0 and rms_dbfs(samples) > threshold_dbfs
