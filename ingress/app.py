"""The ingress FastAPI application."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request, WebSocket
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from ingress import softphone
from ingress.acs import handler as acs
from ingress.jsonapi import routes as jsonapi
from ingress.runtime import IngressRuntime
from ingress.settings import IngressSettings
from ingress.twilio import handler as twilio
from ingress.twilio.serializer import twiml_connect_stream


def create_app(settings: IngressSettings) -> FastAPI:
    runtime = IngressRuntime(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await runtime.start()
        try:
            yield
        finally:
            await runtime.stop()

    app = FastAPI(title="Switchboard ingress", version="0.1.0", lifespan=lifespan)
    app.state.runtime = runtime

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

    @app.get("/metrics", summary="Prometheus metrics")
    async def prometheus() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    @app.post("/twilio/voice", summary="TwiML webhook: connect the call to a bidirectional media stream")
    async def twilio_voice(request: Request) -> Response:
        base = settings.public_url or str(request.base_url)
        ws_base = base.replace("https://", "wss://").replace("http://", "ws://").rstrip("/")
        form = await request.form()
        params = {k: str(form[k]) for k in ("From", "CallSid") if k in form}
        return Response(twiml_connect_stream(f"{ws_base}/twilio/media", params), media_type="application/xml")

    @app.websocket("/twilio/media")
    async def twilio_media(ws: WebSocket) -> None:
        await twilio.handle(ws, runtime)

    @app.websocket("/acs/media")
    async def acs_media(ws: WebSocket) -> None:
        await acs.handle(ws, runtime)

    app.include_router(jsonapi.router(runtime))
    app.include_router(softphone.router)
    return app
