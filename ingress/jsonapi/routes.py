"""REST routes of the JSON API (documented by the app's OpenAPI at ``/docs`` and ``/openapi.json``)."""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, Literal

from fastapi import APIRouter, HTTPException, Request, Response, WebSocket
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from pydantic import BaseModel, Field

from ingress.auth import ApiKey, Authenticator, AuthError, refuse_socket, refused
from ingress.jsonapi import handler
from ingress.jsonapi.handler import JsonApi, latency_fields
from ingress.jsonapi.sessions import SessionRegistry, SessionState, TooManyPending
from ingress.jsonapi.textfeed import TextFeed
from ingress.runtime import IngressRuntime
from processors.turns.settings import TurnsSettings
from switchboard import metrics

CHANNEL = "jsonapi"
WEBSOCKET_SCHEMA = Path(__file__).resolve().parent / "websocket.schema.json"
END_SPEECH_MARGIN_MS = 300


class CountedRoute(APIRoute):
    """Counts rejected requests (malformed JSON, invalid fields) in ``switchboard_bad_input_total``."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        inner = super().get_route_handler()

        async def counted(request: Request) -> Response:
            try:
                return await inner(request)
            except RequestValidationError as exc:
                invalid_json = any(e.get("type") == "json_invalid" for e in exc.errors())
                metrics.BAD_INPUT.labels(CHANNEL, "invalid_json" if invalid_json else "invalid_request").inc()
                raise

        return counted


class StartCallRequest(BaseModel):
    agent_type: str = Field("clinic-receptionist", min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$",
                            description="the agent persona that answers")
    caller_number: str | None = Field(None, max_length=32, pattern=r"^\+?[0-9A-Za-z_.-]*$",
                                      description="the caller's number (E.164) or any caller label")
    language: str = Field("en-US", pattern=r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8})*$", description="BCP 47 language tag")
    sample_rate: Literal[8000, 16000, 24000, 44100, 48000] = Field(
        16000, description="rate of the PCM16 audio in both directions on the websocket")
    client: Literal["jsonapi", "softphone"] = Field("jsonapi", description="the channel label in metrics and records")
    engines: str | None = Field(None, max_length=128, pattern=r"^[A-Za-z0-9_=,.:-]*$",
                                description="engine set for this call, e.g. 'agent=openai,tts=azure' (default: the "
                                "deployment's)")
    voice: str | None = Field(None, max_length=96, pattern=r"^[A-Za-z0-9_.:-]*$",
                              description="TTS voice for this call, e.g. 'azure:en-GB-SoniaNeural'")


class StartCallResponse(BaseModel):
    session_id: str
    call_id: str
    websocket_url: str = Field(description="open within expires_in_s (it carries the session token); send "
                               "audio_chunk/end_speech/hangup")
    token: str = Field(description="the session's short-lived token, bound to session_id: ?token= on the websocket")
    agent_type: str
    language: str
    caller_number: str | None
    sample_rate: int
    created_at: str
    expires_in_s: float


class TurnMetrics(BaseModel):
    turn: int
    response_ms: float | None = Field(description="end of speech → first agent audio written to the socket")
    processing_ms: float | None = Field(description="turn detected → first agent audio written")
    stt_ms: float | None
    agent_ms: float | None
    tts_ms: float | None
    bus_overhead_ms: float | None = Field(description="processing latency not spent inside an engine")


class CallMetrics(BaseModel):
    session_id: str
    call_id: str
    state: SessionState
    end_reason: str
    turns: list[TurnMetrics]


class Problem(BaseModel):
    detail: str


def _ws_base(request: Request, public_url: str) -> str:
    base = public_url or str(request.base_url)
    return base.replace("https://", "wss://").replace("http://", "ws://").rstrip("/")


def api_key(auth: Authenticator, request: Request, entry: str, query_token: bool = False) -> ApiKey:
    """The caller's API key, or the 401 (counted and logged once) that refuses the request."""
    try:
        return auth.api_key(request.headers, request.query_params.get("token", "") if query_token else "")
    except AuthError as exc:
        refused(entry, exc, request.client.host if request.client else "")
        raise HTTPException(exc.status, exc.detail, headers={"WWW-Authenticate": "Bearer"}) from None


# path → the entry label of its refusals; ``?token=`` is accepted where a browser opens the URL itself
GUARDED = {"/api/v1/calls/start": ("calls_start", False), "/api/v1/calls/{session_id}/metrics": ("call_metrics", False),
           "/api/v1/schemas/websocket.json": ("docs", True)}


def guarded_route(auth: Authenticator) -> type[APIRoute]:
    """Routes that check the API key before anything else, body parsing included: a stranger learns nothing."""

    class GuardedRoute(CountedRoute):
        def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
            inner = super().get_route_handler()
            entry, query_token = GUARDED.get(self.path, ("", False))

            async def guarded(request: Request) -> Response:
                if entry:
                    request.state.api_key = api_key(auth, request, entry, query_token)
                return await inner(request)

            return guarded

    return GuardedRoute


def router(runtime: IngressRuntime, auth: Authenticator) -> APIRouter:
    settings = runtime.settings
    api = JsonApi(runtime, SessionRegistry(settings.token_ttl_s, max_pending=settings.max_pending_sessions),
                  TextFeed(settings), TurnsSettings().end_of_turn_ms + END_SPEECH_MARGIN_MS)
    r = APIRouter(route_class=guarded_route(auth), tags=["JSON API"])
    unauthorized = {401: {"model": Problem, "description": "no or a wrong API key (Authorization: Bearer)"}}

    @r.post("/api/v1/calls/start", response_model=StartCallResponse,
            responses={**unauthorized,
                       403: {"model": Problem, "description": "this API key may not choose engines or a voice"},
                       422: {"description": "malformed JSON or invalid field"},
                       503: {"model": Problem, "description": "draining, at capacity or too many unjoined sessions"}})
    async def start_call(body: StartCallRequest, request: Request) -> StartCallResponse:
        """Open a call session (``Authorization: Bearer <API key>``); then connect its websocket to talk."""
        key: ApiKey = request.state.api_key  # checked by GuardedRoute
        if (body.engines or body.voice) and not key.may_choose_engines:
            # cloud engines and voices cost money: only keys marked KEY:engines may pick them
            exc = AuthError("engines_not_allowed", "this API key may not choose engines or a voice", 403)
            refused("calls_start", exc, request.client.host if request.client else "")
            raise HTTPException(exc.status, exc.detail)
        if runtime.draining or not runtime.ready:
            metrics.BAD_INPUT.labels(CHANNEL, "not_ready").inc()
            raise HTTPException(503, "ingress is draining, try again later")
        if len(runtime.egress.sessions) >= runtime.settings.max_calls:
            metrics.BAD_INPUT.labels(CHANNEL, "over_capacity").inc()
            raise HTTPException(503, "too many calls on this node")
        try:
            s = api.sessions.create(body.agent_type, body.language, body.sample_rate, body.caller_number, body.client,
                                    choices={k: v for k, v in (("engines", body.engines), ("voice", body.voice)) if v})
        except TooManyPending as exc:
            metrics.BAD_INPUT.labels(CHANNEL, "too_many_pending").inc()
            raise HTTPException(503, f"{exc}; join or let them expire, then try again") from None
        token = auth.session_token(s.session_id)
        return StartCallResponse(
            session_id=s.session_id, call_id=s.call_id,
            websocket_url=f"{_ws_base(request, settings.public_url)}/ws/call/{s.session_id}?token={token}",
            token=token, agent_type=s.agent_type, language=s.language, caller_number=s.caller_number,
            sample_rate=s.sample_rate, created_at=s.created_at, expires_in_s=api.sessions.pending_ttl_s,
        )

    @r.get("/api/v1/calls/{session_id}/metrics", response_model=CallMetrics,
           responses={**unauthorized, 404: {"model": Problem, "description": "unknown session_id"}})
    async def call_metrics(session_id: str) -> CallMetrics:
        """The call's per-turn latencies, measured at this node's egress (``Authorization: Bearer <API key>``)."""
        s = api.sessions.get(session_id)
        if s is None:
            metrics.BAD_INPUT.labels(CHANNEL, "unknown_session").inc()
            raise HTTPException(404, f"unknown session_id {session_id[:64]!r}")
        turns = [TurnMetrics(turn=lat.turn_seq, **latency_fields(lat)) for lat in s.latencies]
        return CallMetrics(session_id=s.session_id, call_id=s.call_id, state=s.state, end_reason=s.end_reason,
                           turns=turns)

    schema = json.loads(WEBSOCKET_SCHEMA.read_text())

    @r.get("/api/v1/schemas/websocket.json", summary="JSON Schema of the websocket messages, both ways",
           responses=unauthorized)
    async def websocket_schema() -> dict[str, Any]:
        """An API key as ``Authorization: Bearer`` or ``?token=`` (documents are not anonymous)."""
        return schema

    @r.websocket("/ws/call/{session_id}")
    async def call_socket(ws: WebSocket, session_id: str) -> None:
        try:  # browsers cannot set headers on a websocket: the session's token comes as ?token=
            auth.check_session_token(session_id, ws.query_params.get("token"))
        except AuthError as exc:
            await refuse_socket(ws, "call_socket", exc)
            return
        await handler.handle(ws, session_id, api)

    return r
