"""The peers: the same agent and the same chunks, served the usual ways, for comparison.

- ``sse-starlette``: Starlette + ``EventSourceResponse`` fed by an async generator.
- ``aiohttp-sse``: aiohttp + ``sse_response`` and ``send`` per token.
- ``naive``: aiohttp, hand-rolled: an ``asyncio.Queue`` between the agent callback and the
  writer, ``json.dumps`` of the whole chunk dict for every token, one ``write`` per token.

The library peers bridge the agent's callback with the same queue (an async generator cannot be
fed by a callback otherwise) but encode with ``orjson``. All emit byte-identical chunks to the
core's (compact JSON, no ``usage`` key); none of them does session routing, validation or
disconnect handling beyond what its library gives (``naive`` only ends quietly when a write
finds its client gone, instead of logging a traceback).
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson
from aiohttp import web

from benchmarks.agents import BenchAgent

MODEL = "bench"


def chunk(chunk_id: str, created: int, delta: dict[str, str], finish: str | None = None) -> dict[str, Any]:
    """A ``chat.completion.chunk`` dict, with the core's key order."""
    return {
        "id": chunk_id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": MODEL,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }


def completion(text: str) -> dict[str, Any]:
    """A non-streamed ``chat.completion`` dict."""
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": MODEL,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
    }


async def relay(agent: BenchAgent, content: str) -> AsyncIterator[str]:
    """The agent's tokens as an async iterator, through an ``asyncio.Queue``."""
    queue: asyncio.Queue[str | None] = asyncio.Queue()

    async def run() -> None:
        try:
            await agent.process_direct(
                content=content,
                session_key="api:default",
                channel="api",
                chat_id="default",
                on_stream=queue.put,
            )
        finally:
            queue.put_nowait(None)

    task = asyncio.create_task(run())
    try:
        while (token := await queue.get()) is not None:
            yield token
        await task
    finally:
        task.cancel()


async def chunk_texts(agent: BenchAgent, content: str, dumps: Callable[[Any], str]) -> AsyncIterator[str]:
    """Every chunk of one answer as JSON text, ``[DONE]`` last."""
    chunk_id, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
    first = True
    async for token in relay(agent, content):
        delta = {"role": "assistant", "content": token} if first else {"content": token}
        first = False
        yield dumps(chunk(chunk_id, created, delta))
    if first:
        yield dumps(chunk(chunk_id, created, {"role": "assistant", "content": ""}))
    yield dumps(chunk(chunk_id, created, {}, "stop"))
    yield "[DONE]"


def orjson_text(value: Any) -> str:
    return orjson.dumps(value).decode()


def json_text(value: Any) -> str:
    """The naive encoding: the stdlib on the whole dict (compact, so the bytes match)."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def last_user_text(body: dict[str, Any]) -> str:
    content = body["messages"][-1]["content"]
    return content if isinstance(content, str) else ""


async def complete(agent: BenchAgent, body: dict[str, Any]) -> dict[str, Any]:
    text = await agent.process_direct(
        content=last_user_text(body), session_key="api:default", channel="api", chat_id="default"
    )
    return completion(text)


def sse_starlette_app(agent: BenchAgent) -> Any:
    """Starlette with ``sse_starlette.EventSourceResponse``: the usual ASGI streaming endpoint."""
    from sse_starlette import EventSourceResponse
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    async def chat(request: Request) -> Response:
        body = await request.json()
        if not body.get("stream"):
            return JSONResponse(await complete(agent, body))
        texts = chunk_texts(agent, last_user_text(body), orjson_text)
        return EventSourceResponse(texts, sep="\n", ping=15)

    return Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"])])


def aiohttp_sse_app(agent: BenchAgent) -> web.Application:
    """aiohttp with ``aiohttp_sse.sse_response``: one ``send`` per chunk."""
    from aiohttp_sse import sse_response

    async def chat(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        if not body.get("stream"):
            return web.json_response(await complete(agent, body))
        async with sse_response(request, sep="\n", allow_all_methods=True) as response:
            async for text in chunk_texts(agent, last_user_text(body), orjson_text):
                await response.send(text)
        return response

    return _aiohttp_app(chat)


def naive_app(agent: BenchAgent) -> web.Application:
    """aiohttp by hand: queue, ``json.dumps`` of every whole chunk, one write per token."""

    async def chat(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        if not body.get("stream"):
            return web.json_response(await complete(agent, body))
        headers = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        response = web.StreamResponse(headers=headers)
        await response.prepare(request)
        try:
            async for text in chunk_texts(agent, last_user_text(body), json_text):
                await response.write(f"data: {text}\n\n".encode())
            await response.write_eof()
        except ConnectionResetError:
            pass  # the client is gone (the idle step hangs up on 1000 streams): nothing to tell it
        return response

    return _aiohttp_app(chat)


def _aiohttp_app(chat: Callable[[web.Request], Any]) -> web.Application:
    # Handler cancellation, as nanobot's app has, so an abandoned stream stops its agent.
    app = web.Application(handler_args={"handler_cancellation": True})
    app.router.add_post("/v1/chat/completions", chat)
    return app
