"""The browser softphone: a static page at ``GET /?token=<API key>`` (plain HTML, CSS and JS; no build step).

Like a notebook server, ``switchboard up`` prints the page's URL with a token; the page sends that token as the
bearer of ``POST /api/v1/calls/start`` and joins the call's websocket with the session token it gets back. The
assets under ``/softphone/`` are public code with no secret in them, so they are served to anyone.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import FileResponse, HTMLResponse

from ingress.auth import Authenticator, AuthError, refused

STATIC = Path(__file__).resolve().parent
ASSETS = {"app.js": "text/javascript", "capture-worklet.js": "text/javascript", "style.css": "text/css"}
# the token is in the page's URL: never send it on as a Referer, never cache the page
PAGE_HEADERS = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"}
ASK_FOR_TOKEN = (
    "<!doctype html><title>Switchboard softphone</title><h1>Switchboard softphone</h1>"
    "<p>Open the URL with <code>?token=</code> that <code>switchboard up</code> printed (or add an API key).</p>"
)


def router(auth: Authenticator) -> APIRouter:
    r = APIRouter(tags=["softphone"])

    @r.get("/", include_in_schema=False, response_model=None)
    async def index(request: Request) -> FileResponse | HTMLResponse:
        try:
            auth.api_key(request.headers, request.query_params.get("token", ""))
        except AuthError as exc:
            refused("softphone", exc, request.client.host if request.client else "")
            return HTMLResponse(ASK_FOR_TOKEN, status_code=exc.status, headers=PAGE_HEADERS)
        return FileResponse(STATIC / "index.html", media_type="text/html", headers=PAGE_HEADERS)

    @r.get("/softphone/{name}", include_in_schema=False)
    async def asset(name: str) -> FileResponse:
        if name not in ASSETS:
            raise HTTPException(404, "no such file")
        return FileResponse(STATIC / name, media_type=ASSETS[name], headers={"Cache-Control": "no-cache"})

    return r
