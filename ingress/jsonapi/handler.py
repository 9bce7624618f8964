"""The JSON API socket ``WS /ws/call/{session_id}``: audio chunks in; text, agent audio and latencies out."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

import numpy as np
from fastapi import WebSocket

from ingress.callparts import CallInfo
from ingress.calls import CallSession
from ingress.jsonapi import serializer as wire
from ingress.jsonapi.sessions import ApiSession, SessionRegistry, SessionState
from ingress.jsonapi.textfeed import TextFeed
from ingress.limits import TokenBucket
from ingress.protocol import ProtocolError, close_reason
from ingress.runtime import IngressRuntime, Rejected
from ingress.websocket import CallerWebSocket, Inbox
from switchboard import metrics
from switchboard.audio import BUS_RATE, Resampler, array_to_pcm16, pcm16_to_array
from switchboard.logs import bind
from switchboard.records import AgentReply, ReplyKind, Transcript, TurnLatency

logger = logging.getLogger(__name__)
LATENCY_FIELDS = ("response_ms", "processing_ms", "stt_ms", "agent_ms", "tts_ms", "bus_overhead_ms")


@dataclass
class JsonApi:
    """What the JSON API's routes share on one ingress node."""

    runtime: IngressRuntime
    sessions: SessionRegistry
    feed: TextFeed
    end_speech_ms: int  # silence appended on end_speech: longer than the turn detector's end-of-turn silence


def latency_fields(lat: TurnLatency) -> dict[str, float | None]:
    return {name: getattr(lat, name) for name in LATENCY_FIELDS}


class JsonSocket(CallerWebSocket):
    """CallerSocket for the JSON API: bus-rate PCM → ``agent_audio`` at the session's rate."""

    def __init__(self, ws: WebSocket, sample_rate: int) -> None:
        super().__init__(ws)
        self.sample_rate = sample_rate
        self.call: CallSession | None = None
        self._out = Resampler(BUS_RATE, sample_rate)
        self._latencies_sent = 0
        self._text: asyncio.Queue[str] = asyncio.Queue()
        self._writer = asyncio.create_task(self._write_text(), name="jsonapi-text")

    async def send_audio(self, frame: np.ndarray) -> None:
        await self.send_text(wire.agent_audio(array_to_pcm16(self._out.process(frame)), self.sample_rate, time.time()))
        if self.call is not None and len(self.call.turn_latencies) > self._latencies_sent:
            for lat in self.call.turn_latencies[self._latencies_sent :]:
                await self.send_text(wire.latency(lat.turn_seq, latency_fields(lat)))
            self._latencies_sent = len(self.call.turn_latencies)

    async def send_mark(self, name: str) -> None:
        if name.startswith("reply-"):  # a sentence's mark (ingress/heard.py) is Twilio's; this client has reply_end
            await self.send_text(wire.reply_end(name))

    async def send_clear(self) -> None:
        await self.send_text(wire.clear())

    async def close(self, code: int, reason: str) -> None:
        self._writer.cancel()
        await super().close(code, reason)

    def on_text(self, record: Transcript | AgentReply) -> None:
        """A transcript or reply of this call, from the text feed."""
        if isinstance(record, Transcript):
            self._text.put_nowait(wire.transcript(record.turn_seq, record.text, record.kind == "final", record.ts_us))
        elif record.kind is ReplyKind.SENTENCE:
            self._text.put_nowait(wire.agent_response(record.turn_seq, record.seq, record.text, record.ts_us))

    async def _write_text(self) -> None:
        while True:
            await self.send_text(await self._text.get())


async def _reject(ws: WebSocket, channel: str, code: int, reason: str, metric_reason: str) -> None:
    metrics.BAD_INPUT.labels(channel, metric_reason).inc()
    logger.warning("rejected websocket", extra={"fields": {"reason": reason, "code": code}})
    await ws.close(code, close_reason(reason))


async def handle(ws: WebSocket, session_id: str, api: JsonApi) -> None:
    await ws.accept()
    session = api.sessions.get(session_id)
    if session is None:
        await _reject(ws, "jsonapi", 1008, f"unknown session_id {session_id[:64]!r}: start one with "
                      "POST /api/v1/calls/start", "unknown_session")
        return
    if session.state is not SessionState.PENDING:
        await _reject(ws, session.channel, 1008, f"session {session_id} is {session.state}", "session_not_pending")
        return
    session.state = SessionState.ACTIVE
    sock = JsonSocket(ws, session.sample_rate)
    reason = "socket_closed"
    try:
        await api.feed.subscribe(session.call_id, sock.on_text)  # before call_started: the greeting's text too
        reason = await _converse(ws, session, sock, api)
    except ProtocolError as exc:
        metrics.BAD_INPUT.labels(session.channel, exc.metric_reason).inc()
        logger.warning("closing socket on bad input", extra={"fields": {"reason": exc.reason, "code": exc.code}})
        reason = f"protocol_error:{exc.metric_reason}"
        await sock.close(exc.code, exc.reason)
    except Rejected as exc:
        reason = "rejected"
        await sock.close(exc.code, exc.reason)
    except Exception:  # a failure of ours (e.g. the bus): end this call cleanly, never the node
        logger.exception("call failed")
        reason = "internal_error"
        await sock.close(1011, "internal error")
    finally:
        await api.feed.unsubscribe(session.call_id)
        if session.call is not None:
            await api.runtime.close_call(session.call, reason)
        session.state, session.end_reason = SessionState.ENDED, reason
        await sock.close(1000, "call ended")


async def _converse(ws: WebSocket, session: ApiSession, sock: JsonSocket, api: JsonApi) -> str:
    rt = api.runtime
    info = CallInfo(
        call_id=session.call_id,
        session_id=session.session_id,
        channel=session.channel,
        agent_id=session.agent_type,
        language=session.language,
        caller_number=session.caller_number,
        attributes={"agent_type": session.agent_type, "sample_rate": str(session.sample_rate), **session.choices},
    )
    bind(call_id=info.call_id, session_id=info.session_id, agent_id=info.agent_id)
    call = await rt.open_call(info, sock)
    session.call = sock.call = call
    await sock.send_text(wire.session_started(session.session_id, session.call_id, session.sample_rate))
    upsample = Resampler(session.sample_rate, BUS_RATE)
    end_silence = np.zeros(session.sample_rate * api.end_speech_ms // 1000, dtype=np.int16)
    # each end_speech publishes a second of silence: without a cap, 100 of them would publish 100 s
    end_speech_budget = TokenBucket(rt.settings.max_end_speech_per_s, max(1.0, rt.settings.max_end_speech_per_s))
    inbox = Inbox(ws, rt.settings.max_message_bytes, rt.settings.media_timeout_s)
    call.on_agent_audio = inbox.media
    try:
        while True:
            data = await inbox.next()
            if data is None:
                return "hangup"
            event = wire.parse(data)
            if call.ended.is_set():
                return call.end_reason
            if isinstance(event, wire.AudioChunk):
                if event.sample_rate is not None and event.sample_rate != session.sample_rate:
                    raise ProtocolError(1003, f"audio_chunk at {event.sample_rate} Hz, but the session streams "
                                        f"{session.sample_rate} Hz", "bad_sample_rate")
                inbox.media()
                await call.caller_audio(upsample.process(pcm16_to_array(event.pcm)))
            elif isinstance(event, wire.EndSpeech):
                if end_speech_budget.take() < 1.0:
                    metrics.BAD_INPUT.labels(session.channel, "end_speech_dropped").inc()
                    continue
                inbox.media()
                await call.caller_audio(upsample.process(end_silence))
            elif isinstance(event, wire.Hangup):
                return "hangup"
    finally:
        inbox.close()
