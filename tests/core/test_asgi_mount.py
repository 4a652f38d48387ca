"""The ASGI app mounted under a prefix in a larger Starlette app still serves its routes.

ASGI-only by nature (aiohttp has no mounting of this kind); no streaming is under test, so an
in-process transport is enough.
"""

from __future__ import annotations

import asyncio

import httpx
from starlette.applications import Starlette
from starlette.routing import Mount

from nanobot.api.asgi import create_asgi_app
from tests.support.agents import ScriptedAgent

BODY = {"messages": [{"role": "user", "content": "hi"}]}


def test_a_mounted_app_serves_chat_and_refuses_other_methods() -> None:
    async def main() -> tuple[int, str, int, int]:
        inner = create_asgi_app(ScriptedAgent(["a", "b"]))
        outer = Starlette(routes=[Mount("/bot", app=inner)])
        transport = httpx.ASGITransport(app=outer)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            chat = await client.post("/bot/v1/chat/completions", json=BODY)
            wrong = await client.get("/bot/v1/chat/completions")
            outside = await client.post("/v1/chat/completions", json=BODY)
        return (
            chat.status_code,
            chat.json()["choices"][0]["message"]["content"],
            wrong.status_code,
            outside.status_code,
        )

    assert asyncio.run(main()) == (200, "ab", 405, 404)
