"""The browser softphone: a static page at ``GET /`` (plain HTML, CSS and JS; no build step)."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, HTTPException
from fastapi.responses import FileResponse

STATIC = Path(__file__).resolve().parent
ASSETS = {"app.js": "text/javascript", "capture-worklet.js": "text/javascript", "style.css": "text/css"}

router = APIRouter(tags=["softphone"])


@router.get("/", include_in_schema=False)
async def index() -> FileResponse:
    return FileResponse(STATIC / "index.html", media_type="text/html", headers={"Cache-Control": "no-cache"})


@router.get("/softphone/{name}", include_in_schema=False)
async def asset(name: str) -> FileResponse:
    if name not in ASSETS:
        raise HTTPException(404, "no such file")
    return FileResponse(STATIC / name, media_type=ASSETS[name], headers={"Cache-Control": "no-cache"})
