"""What the ingress serves over plain HTTP: /metrics, the API documents and the softphone page refuse strangers;
/health and /ready stay open for probes; refusals are logged once, never with the credential."""

from __future__ import annotations

import logging

import httpx
import pytest

from tests.security.conftest import Ingress, ServeIngress, refusals


async def get(ing: Ingress, path: str, headers: dict[str, str] | None = None) -> httpx.Response:
    async with httpx.AsyncClient(base_url=ing.http) as client:
        return await client.get(path, headers=headers or {})


async def test_probes_stay_open(ingress: Ingress) -> None:
    assert (await get(ingress, "/health")).status_code == 200
    assert (await get(ingress, "/ready")).status_code == 200


async def test_metrics_refuse_anonymous_and_wrong_tokens_and_serve_the_metrics_token(ingress: Ingress) -> None:
    before = refusals("metrics", "missing_credentials"), refusals("metrics", "invalid_credentials")
    anonymous = await get(ingress, "/metrics")
    wrong = await get(ingress, "/metrics", {"Authorization": "Bearer guess"})
    api_key = await get(ingress, "/metrics", ingress.creds.api_headers())  # an API key is not the metrics token
    ok = await get(ingress, "/metrics", ingress.creds.metrics_headers())
    assert (anonymous.status_code, wrong.status_code, api_key.status_code, ok.status_code) == (401, 401, 401, 200)
    assert "switchboard_auth_refused_total" in ok.text and "switchboard_" not in anonymous.text
    assert refusals("metrics", "missing_credentials") == before[0] + 1
    assert refusals("metrics", "invalid_credentials") == before[1] + 2


async def test_without_a_metrics_token_the_public_port_serves_no_metrics(serve_ingress: ServeIngress) -> None:
    async with serve_ingress(metrics_token="") as ing:
        res = await get(ing, "/metrics", {"Authorization": "Bearer anything"})
    assert res.status_code == 401 and "SWITCHBOARD_METRICS_PORT" in res.json()["detail"]


@pytest.mark.parametrize("path", ["/openapi.json", "/docs", "/api/v1/schemas/websocket.json"])
async def test_api_documents_need_an_api_key_as_bearer_or_token(ingress: Ingress, path: str) -> None:
    before = refusals("docs", "missing_credentials")
    anonymous = await get(ingress, path)
    bearer = await get(ingress, path, ingress.creds.api_headers())
    query = await get(ingress, f"{path}?token={ingress.creds.api_key}")
    assert (anonymous.status_code, bearer.status_code, query.status_code) == (401, 200, 200)
    assert refusals("docs", "missing_credentials") == before + 1


async def test_the_docs_page_loads_its_openapi_with_the_same_token(ingress: Ingress) -> None:
    page = await get(ingress, f"/docs?token={ingress.creds.api_key}")
    assert f"/openapi.json?token={ingress.creds.api_key}" in page.text
    assert page.headers["referrer-policy"] == "no-referrer"


async def test_the_softphone_page_needs_the_url_with_its_token_and_its_assets_are_public(ingress: Ingress) -> None:
    before = refusals("softphone", "missing_credentials")
    anonymous = await get(ingress, "/")
    wrong = await get(ingress, "/?token=guess")
    page = await get(ingress, ingress.creds.softphone_url(ingress.http).removeprefix(ingress.http))
    script = await get(ingress, "/softphone/app.js")
    assert (anonymous.status_code, wrong.status_code, page.status_code) == (401, 401, 200)
    assert '<button id="call"' in page.text and "switchboard up" in anonymous.text
    assert page.headers["referrer-policy"] == "no-referrer" and "no-store" in page.headers["cache-control"]
    assert script.status_code == 200 and "Authorization: `Bearer ${TOKEN}`" in script.text
    assert refusals("softphone", "missing_credentials") == before + 1


async def test_a_refusal_is_logged_once_without_the_credential(ingress: Ingress,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    guess = "Bearer sk-" + "x" * 40
    with caplog.at_level(logging.INFO):
        await get(ingress, "/metrics", {"Authorization": guess})
    refused = [r for r in caplog.records if r.getMessage() == "refused"]
    assert len(refused) == 1 and refused[0].fields == {"entry": "metrics", "reason": "invalid_credentials",
                                                       "client": "127.0.0.1"}
    assert not any("x" * 40 in r.getMessage() + str(getattr(r, "fields", "")) for r in caplog.records)
