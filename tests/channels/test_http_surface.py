"""What the ingress serves over plain HTTP for the new channels: the softphone page and the API's documents."""

from __future__ import annotations

import httpx

from tests.channels.conftest import LoneIngress


async def test_softphone_page_and_its_assets_are_served_and_nothing_else(lone_ingress: LoneIngress) -> None:
    async with httpx.AsyncClient(base_url=lone_ingress.http) as client:
        page = await client.get(f"/?token={lone_ingress.creds.softphone_key}")
        assets = {name: await client.get(f"/softphone/{name}") for name in ("app.js", "capture-worklet.js",
                                                                             "style.css")}
        missing = await client.get("/softphone/..%2Fapp.py")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert '<button id="call"' in page.text and 'src="/softphone/app.js"' in page.text
    assert {n: (r.status_code, r.headers["content-type"].split(";")[0]) for n, r in assets.items()} == {
        "app.js": (200, "text/javascript"), "capture-worklet.js": (200, "text/javascript"),
        "style.css": (200, "text/css")}
    assert "registerProcessor(\"capture\"" in assets["capture-worklet.js"].text
    assert missing.status_code == 404


async def test_openapi_documents_the_json_api_and_the_websocket_schema_is_published(
        lone_ingress: LoneIngress) -> None:
    async with httpx.AsyncClient(base_url=lone_ingress.http, headers=lone_ingress.creds.api_headers()) as client:
        openapi = (await client.get("/openapi.json")).json()
        ws_schema = (await client.get("/api/v1/schemas/websocket.json")).json()
    start = openapi["paths"]["/api/v1/calls/start"]["post"]
    body = openapi["components"]["schemas"]["StartCallRequest"]["properties"]
    assert {"agent_type", "caller_number", "language", "sample_rate"} <= set(body)
    assert {"200", "422", "503"} <= set(start["responses"])
    assert "404" in openapi["paths"]["/api/v1/calls/{session_id}/metrics"]["get"]["responses"]
    assert {"audio_chunk", "end_speech", "transcript", "agent_response", "agent_audio", "latency"} <= set(
        ws_schema["$defs"])
