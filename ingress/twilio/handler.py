"""The Twilio Media Streams socket: wire events in, a call session, agent audio out."""

from __future__ import annotations

import logging
import time

import numpy as np
from fastapi import WebSocket

from ingress.auth import Authenticator, AuthError, refused
from ingress.callparts import CallInfo
from ingress.calls import CallSession
from ingress.protocol import ProtocolError, UnknownMessage
from ingress.runtime import IngressRuntime, Rejected
from ingress.twilio import serializer as wire
from ingress.twilio.uplink import Uplink
from ingress.websocket import CallerWebSocket, Inbox
from switchboard import metrics
from switchboard.audio import BUS_RATE, Resampler, mulaw_encode
from switchboard.logs import bind
from switchboard.records import now_us

logger = logging.getLogger(__name__)
CHANNEL = "twilio"


class TwilioSocket(CallerWebSocket):
    """CallerSocket for Twilio: 16 kHz PCM → 8 kHz μ-law media messages."""

    def __init__(self, ws: WebSocket, stream_sid: str) -> None:
        super().__init__(ws)
        self.stream_sid = stream_sid
        self._down = Resampler(BUS_RATE, wire.MULAW_RATE)

    async def send_audio(self, frame: np.ndarray) -> None:
        await self.send_text(wire.media(self.stream_sid, mulaw_encode(self._down.process(frame))))

    async def send_mark(self, name: str) -> None:
        await self.send_text(wire.mark(self.stream_sid, name))

    async def send_clear(self) -> None:
        await self.send_text(wire.clear(self.stream_sid))


async def handle(ws: WebSocket, rt: IngressRuntime, auth: Authenticator | None = None) -> None:
    await ws.accept()
    connected_at = time.monotonic()  # the caller's audio budget runs from here (ingress/limits.py AudioBudget)
    session: CallSession | None = None
    uplink: Uplink | None = None  # from the start message on: the caller's frames, gathered into records
    reason = "socket_closed"
    inbox = Inbox(ws, rt.settings.max_message_bytes, rt.settings.media_timeout_s)
    try:
        while True:
            data = await inbox.next()
            if data is None:
                break
            try:
                event = wire.parse(data)
            except UnknownMessage as exc:
                metrics.BAD_INPUT.labels(CHANNEL, "unknown_event").inc()
                logger.warning("ignored message", extra={"fields": {"error": str(exc)}})
                continue
            if isinstance(event, wire.Media):
                if session is None:
                    raise ProtocolError(1008, "media before start", "media_before_start")
                inbox.media()
                if uplink is not None and (ready := uplink.push(event.payload, now_us())) is not None:
                    await session.caller_audio(*ready)
                continue
            if uplink is not None and session is not None and (ready := uplink.flush()) is not None:
                # every other event follows the audio before it: a key press is numbered after the frames heard
                await session.caller_audio(*ready)
            if isinstance(event, wire.Start):
                if session is not None:
                    raise ProtocolError(1008, "second start on one stream", "duplicate_start")
                if event.encoding != "audio/x-mulaw" or event.sample_rate != wire.MULAW_RATE:
                    raise ProtocolError(
                        1003, f"unsupported media format {event.encoding}@{event.sample_rate}", "bad_format"
                    )
                params = event.custom_parameters
                if auth is not None:  # the stream token our TwiML handed out, echoed back: this CallSid, not expired
                    try:
                        auth.check_stream_token(event.call_sid, params.get("token"))
                    except AuthError as exc:
                        refused("twilio_media", exc, ws.client.host if ws.client else "")
                        raise Rejected(1008, exc.detail) from None
                info = CallInfo(
                    call_id=event.call_sid,
                    session_id=event.stream_sid,
                    channel=CHANNEL,
                    agent_id=params.get("agent_id", rt.settings.agent_id),
                    language=params.get("language", rt.settings.language),
                    caller_number=params.get("caller_number") or params.get("From"),
                    attributes={
                        "account_sid": event.account_sid,
                        # per-call engine choice, e.g. <Parameter name="engines" value="agent=openai"/>
                        **{k: params[k] for k in ("engines", "voice") if params.get(k)},
                    },
                )
                bind(call_id=info.call_id, session_id=info.session_id, agent_id=info.agent_id)
                session = await rt.open_call(info, TwilioSocket(ws, event.stream_sid), connected_at)
                session.on_agent_audio = inbox.media
                uplink = Uplink(session.limits.record_ms)
                inbox.media()  # admitting the call took our time, not the caller's: its silence counts from now
            elif isinstance(event, wire.Dtmf):
                if session is not None:
                    await session.dtmf(event.digit)
            elif isinstance(event, wire.Stop):
                reason = "hangup"
                await TwilioSocket(ws, "").close(1000, "call ended")
                break
            elif isinstance(event, wire.Mark) and session is not None:
                session.mark_played(event.name)  # a sentence's audio has played on the phone (ingress/heard.py)
            # Connected needs nothing.
    except ProtocolError as exc:
        metrics.BAD_INPUT.labels(CHANNEL, exc.metric_reason).inc()
        logger.warning("closing socket on bad input", extra={"fields": {"reason": exc.reason, "code": exc.code}})
        reason = f"protocol_error:{exc.metric_reason}"
        await TwilioSocket(ws, "").close(exc.code, exc.reason)
    except Rejected as exc:
        reason = "rejected"
        await TwilioSocket(ws, "").close(exc.code, exc.reason)
    except Exception:  # a failure of ours (e.g. the bus): end this call cleanly, never the node
        logger.exception("call failed")
        reason = "internal_error"
        await TwilioSocket(ws, "").close(1011, "internal error")
    finally:
        inbox.close()
        if session is not None:
            if uplink is not None and (ready := uplink.flush()) is not None:
                await session.caller_audio(*ready)  # the caller's last words (at most a record less a frame)
            await rt.close_call(session, reason)
