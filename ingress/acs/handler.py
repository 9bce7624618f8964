"""The ACS media streaming socket: wire events in, a call session, agent audio out."""

from __future__ import annotations

import logging
import time

import numpy as np
from fastapi import WebSocket

from ingress import protocol as p
from ingress.acs import serializer as wire
from ingress.callparts import CallInfo
from ingress.calls import CallSession
from ingress.protocol import ProtocolError
from ingress.runtime import IngressRuntime, Rejected
from ingress.websocket import CallerWebSocket, Inbox
from switchboard import metrics
from switchboard.audio import BUS_RATE, Resampler, array_to_pcm16, pcm16_to_array
from switchboard.logs import bind

logger = logging.getLogger(__name__)
CHANNEL = "acs"
CONNECTION_HEADER = "x-ms-call-connection-id"
CORRELATION_HEADER = "x-ms-call-correlation-id"


class AcsSocket(CallerWebSocket):
    """CallerSocket for ACS: bus-rate PCM → ``AudioData`` at the call's rate; barge-in → ``StopAudio``."""

    def __init__(self, ws: WebSocket, sample_rate: int) -> None:
        super().__init__(ws)
        self._out = Resampler(BUS_RATE, sample_rate)

    async def send_audio(self, frame: np.ndarray) -> None:
        await self.send_text(wire.audio_data(array_to_pcm16(self._out.process(frame))))

    async def send_mark(self, name: str) -> None:
        """ACS has no marks: playback position is not echoed."""

    async def send_clear(self) -> None:
        await self.send_text(wire.stop_audio())


def call_info(ws: WebSocket, meta: wire.AudioMetadata, rt: IngressRuntime) -> CallInfo:
    """ACS correlation IDs → the call's identity: ``callConnectionId`` (header or query) else the subscription ID."""
    q = ws.query_params
    # headers and query are the caller's text like any message: checked before they become record keys
    connection_id = p.identifier(ws.headers.get(CONNECTION_HEADER) or q.get("callConnectionId"), "callConnectionId")
    attributes = {"subscription_id": meta.subscription_id, "sample_rate": str(meta.sample_rate)}
    if connection_id:
        attributes["call_connection_id"] = connection_id
    if correlation_id := p.identifier(ws.headers.get(CORRELATION_HEADER) or q.get("correlationId"), "correlationId"):
        attributes["correlation_id"] = correlation_id
    return CallInfo(
        call_id=connection_id or meta.subscription_id,
        session_id=meta.subscription_id or connection_id,
        channel=CHANNEL,
        agent_id=p.identifier(q.get("agent_id"), "agent_id") or rt.settings.agent_id,
        language=p.identifier(q.get("language"), "language") or rt.settings.language,
        caller_number=p.text(q.get("caller_number"), "caller_number", max_len=32) or None,
        attributes=attributes,
    )


async def handle(ws: WebSocket, rt: IngressRuntime) -> None:
    await ws.accept()
    connected_at = time.monotonic()  # the caller's audio budget runs from here (ingress/limits.py AudioBudget)
    session: CallSession | None = None
    meta: wire.AudioMetadata | None = None
    upsample: Resampler | None = None
    reason = "socket_closed"
    inbox = Inbox(ws, rt.settings.max_message_bytes, rt.settings.media_timeout_s)
    try:
        while True:
            data = await inbox.next()
            if data is None:
                reason = "hangup"
                break
            event = wire.parse(data)
            if isinstance(event, wire.AudioData):
                if session is None or meta is None or upsample is None:
                    raise ProtocolError(1008, "AudioData before AudioMetadata", "audio_before_metadata")
                if event.silent:  # the caller is muted or silent: keep the timeline, send zeros
                    # as long as the packet really was (one 20 ms packet without data), never the announced length
                    n = len(event.pcm) // wire.BYTES_PER_SAMPLE or meta.frame_samples
                    samples = np.zeros(n, dtype=np.int16)
                else:
                    samples = pcm16_to_array(event.pcm)
                inbox.media()
                await session.caller_audio(upsample.process(samples))
            elif isinstance(event, wire.AudioMetadata):
                if session is not None:
                    raise ProtocolError(1008, "second AudioMetadata on one stream", "duplicate_metadata")
                meta = event
                upsample = Resampler(meta.sample_rate, BUS_RATE)
                info = call_info(ws, meta, rt)
                if not info.call_id:
                    raise ProtocolError(1008, "no callConnectionId and no subscriptionId", "malformed")
                bind(call_id=info.call_id, session_id=info.session_id, agent_id=info.agent_id)
                session = await rt.open_call(info, AcsSocket(ws, meta.sample_rate), connected_at)
                session.on_agent_audio = inbox.media
                inbox.media()  # admitting the call took our time, not the caller's: its silence counts from now
            elif isinstance(event, wire.DtmfData) and session is not None:
                await session.dtmf(event.digits)
    except ProtocolError as exc:
        metrics.BAD_INPUT.labels(CHANNEL, exc.metric_reason).inc()
        logger.warning("closing socket on bad input", extra={"fields": {"reason": exc.reason, "code": exc.code}})
        reason = f"protocol_error:{exc.metric_reason}"
        await AcsSocket(ws, BUS_RATE).close(exc.code, exc.reason)
    except Rejected as exc:
        reason = "rejected"
        await AcsSocket(ws, BUS_RATE).close(exc.code, exc.reason)
    except Exception:  # a failure of ours (e.g. the bus): end this call cleanly, never the node
        logger.exception("call failed")
        reason = "internal_error"
        await AcsSocket(ws, BUS_RATE).close(1011, "internal error")
    finally:
        inbox.close()
        if session is not None:
            await rt.close_call(session, reason)
