"""CORS: off by default; with origins configured, preflight and headers identical on both stacks."""

from __future__ import annotations

import pytest

from tests.conformance.conftest import Serve
from tests.support.agents import ScriptedAgent

pytestmark = pytest.mark.asyncio

SITE = "https://chat.example"
PREFLIGHT = {
    "Origin": SITE,
    "Access-Control-Request-Method": "POST",
    "Access-Control-Request-Headers": "authorization, content-type",
}
HI = {"messages": [{"role": "user", "content": "hi"}]}


async def test_off_by_default(serve: Serve) -> None:
    client = await serve(ScriptedAgent(["x"]))
    preflight = await client.options("/v1/chat/completions", headers=PREFLIGHT)
    assert preflight.status_code == 405
    assert preflight.json()["error"]["code"] == "method_not_allowed"
    response = await client.post("/v1/chat/completions", json=HI, headers={"Origin": SITE})
    assert "access-control-allow-origin" not in response.headers


@pytest.mark.parametrize(
    "path", ["/v1/chat/completions", "/v1/responses/resp_1", "/v1/messages", "/v1/models", "/anything"]
)
async def test_preflight_for_an_allowed_origin(serve: Serve, path: str) -> None:
    client = await serve(ScriptedAgent(["x"]), cors_origins=[SITE], api_key="k")
    response = await client.options(path, headers=PREFLIGHT)  # no key: browsers send none here
    assert response.status_code == 204
    assert response.content == b""
    assert response.headers["access-control-allow-origin"] == SITE
    assert {"POST", "DELETE"} <= set(response.headers["access-control-allow-methods"].split(", "))
    assert response.headers["access-control-allow-headers"] == "authorization, content-type"
    assert response.headers["vary"] == "Origin"


@pytest.mark.parametrize("stream", [False, True])
async def test_actual_responses_carry_the_origin(serve: Serve, stream: bool) -> None:
    client = await serve(ScriptedAgent(["x"]), cors_origins=[SITE])
    response = await client.post(
        "/v1/chat/completions", json={**HI, "stream": stream}, headers={"Origin": SITE}
    )
    assert response.headers["access-control-allow-origin"] == SITE
    assert "x-request-id" in response.headers["access-control-expose-headers"]
    error = await client.post("/v1/chat/completions", json={}, headers={"Origin": SITE})
    assert error.status_code == 400
    assert error.headers["access-control-allow-origin"] == SITE


async def test_other_origins_get_nothing(serve: Serve) -> None:
    client = await serve(ScriptedAgent(["x"]), cors_origins=[SITE])
    preflight = await client.options("/v1/models", headers={**PREFLIGHT, "Origin": "https://evil.example"})
    assert preflight.status_code == 403
    assert "access-control-allow-origin" not in preflight.headers
    response = await client.get("/v1/models", headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in response.headers


async def test_wildcard(serve: Serve) -> None:
    client = await serve(ScriptedAgent(["x"]), cors_origins=["*"])
    response = await client.options("/v1/models", headers={**PREFLIGHT, "Origin": "http://localhost:3000"})
    assert response.status_code == 204
    assert response.headers["access-control-allow-origin"] == "*"
