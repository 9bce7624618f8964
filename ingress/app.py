"""The ingress FastAPI application. Every entry point but /health and /ready is authenticated (ingress/auth.py)."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import quote

from fastapi import FastAPI, HTTPException, Request, WebSocket
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from ingress import softphone
from ingress.acs import handler as acs
from ingress.auth import Authenticator, AuthError, refuse_socket, refused
from ingress.jsonapi import routes as jsonapi
from ingress.limits import EdgeLimits
from ingress.runtime import IngressRuntime
from ingress.settings import IngressSettings
from ingress.twilio import handler as twilio
from ingress.twilio.serializer import twiml_connect_stream
from switchboard import metrics

logger = logging.getLogger(__name__)
TWILIO_FORM_FIELDS = ("From", "CallSid")  # passed on to the stream as <Parameter>s


def public_base(settings: IngressSettings, request_base: str) -> str:
    """The URL callers (and Twilio's signatures) use for this node: SWITCHBOARD_PUBLIC_URL, else the request's own."""
    return (settings.public_url or request_base).rstrip("/")


def ws_scheme(url: str) -> str:
    return url.replace("https://", "wss://", 1).replace("http://", "ws://", 1)


def signed_url(settings: IngressSettings, url: str) -> str:
    """The full URL the client requested, as Twilio signed it: behind a proxy, SWITCHBOARD_PUBLIC_URL's scheme and
    host with the request's path and query."""
    if not settings.public_url:
        return url
    path = url.split("://", 1)[-1].partition("/")[2]
    public = settings.public_url.rstrip("/")
    return f"{ws_scheme(public) if url.startswith(('ws://', 'wss://')) else public}/{path}"


def announce(auth: Authenticator) -> None:
    """Say loudly at start-up what is not protected."""
    if not auth.enabled:
        logger.warning("AUTHENTICATION IS OFF (SWITCHBOARD_AUTH=off): every entry point lets anyone in, anonymous "
                       "callers can run up cloud-engine costs and read /metrics. Never do this on a reachable network.")
        return
    if missing := auth.unconfigured():
        logger.warning("entry points refuse everyone until configured", extra={"fields": {"unset": missing}})


def create_app(settings: IngressSettings) -> FastAPI:
    runtime = IngressRuntime(settings)
    auth = Authenticator(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        announce(auth)
        await runtime.start()
        try:
            yield
        finally:
            await runtime.stop()

    # /docs and /openapi.json are served below, behind an API key
    app = FastAPI(title="Switchboard ingress", version="0.1.0", lifespan=lifespan, docs_url=None, openapi_url=None)
    app.state.runtime = runtime
    # per-source limits and the body cap run before any handler or credential check (ingress/limits.py)
    app.add_middleware(EdgeLimits, limits=runtime.sources, trusted_proxies=runtime.trusted_proxies,
                       max_body_bytes=settings.max_body_bytes)
    app.state.auth = auth

    def client(request: Request | WebSocket) -> str:
        return request.client.host if request.client else ""

    def deny(request: Request, entry: str, exc: AuthError) -> HTTPException:
        refused(entry, exc, client(request))
        return HTTPException(exc.status, exc.detail, headers={"WWW-Authenticate": "Bearer"} if exc.status == 401
                             else None)

    @app.get("/health", summary="liveness")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/ready", summary="readiness: 503 while starting or draining")
    async def ready() -> JSONResponse:
        ok = runtime.ready and not runtime.draining
        body = {
            "status": "ready" if ok else ("draining" if runtime.draining else "starting"),
            "active_calls": len(runtime.egress.sessions),
        }
        return JSONResponse(body, status_code=200 if ok else 503)

    @app.get("/metrics", summary="Prometheus metrics (Authorization: Bearer <SWITCHBOARD_METRICS_TOKEN>)")
    async def prometheus(request: Request) -> Response:
        try:
            auth.metrics(request.headers)
        except AuthError as exc:
            raise deny(request, "metrics", exc) from None
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/openapi.json", include_in_schema=False)
    async def openapi(request: Request) -> JSONResponse:
        try:
            auth.api_key(request.headers, request.query_params.get("token", ""))
        except AuthError as exc:
            raise deny(request, "docs", exc) from None
        return JSONResponse(app.openapi())

    @app.get("/docs", include_in_schema=False)
    async def docs(request: Request) -> HTMLResponse:
        token = request.query_params.get("token", "")
        try:
            auth.api_key(request.headers, token)
        except AuthError as exc:
            raise deny(request, "docs", exc) from None
        page = get_swagger_ui_html(openapi_url=f"/openapi.json?token={quote(token)}", title="Switchboard ingress")
        page.headers["Referrer-Policy"] = "no-referrer"
        return page

    @app.post("/twilio/voice", summary="TwiML webhook: connect the call to a bidirectional media stream")
    async def twilio_voice(request: Request) -> Response:
        t0 = time.perf_counter()
        form = await request.form()
        try:
            # the signature covers the full URL, host included: once it checks, the Host header is Twilio's
            auth.twilio(signed_url(settings, str(request.url)), form, request.headers)
        except AuthError as exc:
            raise deny(request, "twilio_voice", exc) from None
        params = {k: str(form[k]) for k in TWILIO_FORM_FIELDS if k in form}
        call_sid = params.get("CallSid", "")
        if auth.enabled:  # the stream's start must echo it: bound to this CallSid, expiring
            params["token"] = auth.stream_token(call_sid)
        stream_url = f"{ws_scheme(public_base(settings, str(request.base_url)))}/twilio/media"
        twiml = twiml_connect_stream(stream_url, params)
        metrics.CALL_START_STEP.labels("webhook").observe(time.perf_counter() - t0)
        return Response(twiml, media_type="application/xml")

    @app.websocket("/twilio/media")
    async def twilio_media(ws: WebSocket) -> None:
        try:  # Twilio signs the stream URL (wss, no params) on the upgrade; the token is checked at `start`
            auth.twilio(signed_url(settings, str(ws.url)), {}, ws.headers)
        except AuthError as exc:
            await refuse_socket(ws, "twilio_media", exc)
            return
        await twilio.handle(ws, runtime, auth)

    @app.websocket("/acs/media")
    async def acs_media(ws: WebSocket) -> None:
        try:
            await auth.acs_upgrade(ws.headers)
        except AuthError as exc:
            await refuse_socket(ws, "acs_media", exc)
            return
        await acs.handle(ws, runtime)

    app.include_router(jsonapi.router(runtime, auth))
    app.include_router(softphone.router(auth))
    return app
