"""ASGI-only matters, in process: mounting under a prefix, and the disconnect listener's end.

No streaming is under test here (that is the conformance suite's, over real sockets).
"""

from __future__ import annotations

import asyncio

import httpx
import orjson
from starlette.applications import Starlette
from starlette.routing import Mount
from starlette.types import Message

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


def test_a_disconnect_heard_as_the_response_ends_never_cancels_the_server_afterwards() -> None:
    async def main() -> str:
        app = create_asgi_app(ScriptedAgent(["a"]))
        body = orjson.dumps(BODY)
        left = asyncio.Event()
        requested: list[bool] = []

        async def receive() -> Message:
            if not requested:
                requested.append(True)
                return {"type": "http.request", "body": body, "more_body": False}
            await left.wait()
            return {"type": "http.disconnect"}

        async def send(message: Message) -> None:
            if message["type"] == "http.response.body" and not message.get("more_body"):
                left.set()  # the client closes just as the response completes
                await asyncio.sleep(0)  # and the server yields once while writing it

        scope = {"type": "http", "method": "POST", "path": "/v1/chat/completions", "root_path": ""}
        scope |= {"headers": [(b"content-type", b"application/json")], "query_string": b""}
        await app(scope, receive, send)
        for _ in range(5):
            await asyncio.sleep(0)  # the server's own work after the app returned
        return "not cancelled"

    assert asyncio.run(main()) == "not cancelled"
