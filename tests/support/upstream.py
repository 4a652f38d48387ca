"""A fake OpenAI-compatible upstream: an aiohttp server on loopback playing scripted answers.

Queue scripts with :meth:`FakeUpstream.will` (one per request, in order; an exhausted queue
answers ``"ok"``); every request's path, body and headers are recorded and ``arrived`` is set
(it answers a POST to any path, so a redirect may point at another one).
``closed`` is set when a client hangs up on a script still running; ``release`` lets scripts
that stall finish. :func:`reasoning`, :func:`call_start`, :func:`call_arguments` and
:func:`calls_events` build the chunks of reasoning and client tool calls, as vLLM and OpenAI
stream them; :func:`raw` plays any events, one gate per event.
"""

from __future__ import annotations

import asyncio
import functools
import json
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.support.servers import listening_socket

Script = Callable[[web.Request, "FakeUpstream"], Awaitable[web.StreamResponse]]
Gate = Callable[[int], Awaitable[None]]


@dataclass
class Seen:
    """One request the upstream got."""

    body: dict[str, Any]
    headers: dict[str, str]  # names in lower case
    path: str = "/v1/chat/completions"

    @property
    def messages(self) -> list[dict[str, Any]]:
        messages: list[dict[str, Any]] = self.body["messages"]
        return messages


@dataclass
class FakeUpstream:
    url: str = ""
    requests: list[Seen] = field(default_factory=list)
    scripts: deque[Script] = field(default_factory=deque)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    release: asyncio.Event = field(default_factory=asyncio.Event)

    def will(self, *scripts: Script) -> None:
        self.scripts.extend(scripts)

    @property
    def last(self) -> Seen:
        return self.requests[-1]

    async def handle(self, request: web.Request) -> web.StreamResponse:
        headers = {k.lower(): v for k, v in request.headers.items()}
        self.requests.append(Seen(await request.json(), headers, request.path))
        self.arrived.set()
        script = self.scripts.popleft() if self.scripts else answer("ok")
        try:
            return await script(request, self)
        except asyncio.CancelledError:
            self.closed.set()
            raise


@asynccontextmanager
async def run_upstream() -> AsyncIterator[FakeUpstream]:
    """Serve a :class:`FakeUpstream` at a free loopback port; its ``url`` ends in ``/v1``."""
    upstream = FakeUpstream()
    app = web.Application(client_max_size=64 * 1024 * 1024)  # room for megabyte tool results
    app.router.add_post("/{path:.*}", upstream.handle)
    runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
    await runner.setup()
    sock = listening_socket()
    await web.SockSite(runner, sock).start()
    upstream.url = f"http://127.0.0.1:{sock.getsockname()[1]}/v1"
    try:
        yield upstream
    finally:
        upstream.release.set()
        await runner.cleanup()


@dataclass
class Recorder:
    """Any HTTP listener a redirect might point at: it records each request (``METHOD path``)."""

    url: str = ""
    seen: list[str] = field(default_factory=list)


@asynccontextmanager
async def run_recorder() -> AsyncIterator[Recorder]:
    """Serve a :class:`Recorder` at a free loopback port (another origin than the upstream's)."""
    recorder = Recorder()

    async def record(request: web.Request) -> web.Response:
        recorder.seen.append(f"{request.method} {request.path}")
        return web.json_response({"secret": "internal"})

    app = web.Application()
    app.router.add_route("*", "/{path:.*}", record)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    sock = listening_socket()
    await web.SockSite(runner, sock).start()
    recorder.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    try:
        yield recorder
    finally:
        await runner.cleanup()


# -- the chunks a real server sends ------------------------------------------------------------


def chunk(
    delta: dict[str, Any] | None, finish: str | None = None, *, ensure_ascii: bool = True, **extra: Any
) -> bytes:
    """One ``chat.completion.chunk`` event, shaped like OpenAI's (``delta=None``: no choices).

    ``ensure_ascii=False`` sends text as raw UTF-8, as vLLM (pydantic) and llama.cpp do.
    """
    payload = {
        "id": "chatcmpl-up",
        "object": "chat.completion.chunk",
        "created": 1700000000,
        "model": "up-model",
        "system_fingerprint": None,
        "choices": []
        if delta is None
        else [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        "usage": None,
        **extra,
    }
    return event(payload, ensure_ascii=ensure_ascii)


def event(payload: Any, *, ensure_ascii: bool = True) -> bytes:
    return f"data: {json.dumps(payload, ensure_ascii=ensure_ascii)}\n\n".encode()


DONE = b"data: [DONE]\n\n"


def answer_events(tokens: Iterable[str], usage: tuple[int, int] | None = (3, 2)) -> list[bytes]:
    """What OpenAI streams for ``tokens``: role, tokens, stop, usage, ``[DONE]``."""
    events = [b": warming up\n\n", chunk({"role": "assistant", "content": "", "refusal": None})]
    events += [chunk({"content": token}) for token in tokens]
    events.append(chunk({"content": None}, "stop"))
    if usage is not None:
        prompt, completion = usage
        counts = {"prompt_tokens": prompt, "completion_tokens": completion}
        events.append(chunk(None, usage={**counts, "total_tokens": prompt + completion}))
    return [*events, DONE]


# -- scripts -----------------------------------------------------------------------------------


async def _open_stream(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    await response.prepare(request)
    return response


def answer(*tokens: str, usage: tuple[int, int] | None = (3, 2), gate: Gate | None = None) -> Script:
    """Stream ``tokens`` as OpenAI does; ``gate(k)`` is awaited before the ``k``-th token."""

    async def play(request: web.Request, upstream: FakeUpstream) -> web.StreamResponse:
        response = await _open_stream(request)
        for position, data in enumerate(answer_events(tokens, usage)):
            k = position - 2  # a comment and the role chunk come before the first token
            if gate is not None and 0 <= k < len(tokens):
                await gate(k)
            await response.write(data)
        await response.write_eof()
        return response

    return play


def raw(*events: bytes, then: str = "end", gate: Gate | None = None) -> Script:
    """Send ``events`` as they are, then ``end`` the body, ``stall`` until released, or ``drop``;
    ``gate(k)`` is awaited before the ``k``-th event."""

    async def play(request: web.Request, upstream: FakeUpstream) -> web.StreamResponse:
        response = await _open_stream(request)
        for k, data in enumerate(events):
            if gate is not None:
                await gate(k)
            await response.write(data)
        if then == "stall":
            await upstream.release.wait()
        elif then == "drop":
            assert request.transport is not None
            request.transport.close()  # no last chunk: the body ends mid-answer
            return response
        await response.write_eof()
        return response

    return play


def refuse(status: int, body: Any = None, headers: dict[str, str] | None = None) -> Script:
    """Answer ``status`` with ``body``: bytes as they are, else JSON (OpenAI's error by default)."""
    payload = body if body is not None else {"error": {"message": f"refused with {status}", "type": "x"}}

    async def play(request: web.Request, upstream: FakeUpstream) -> web.StreamResponse:
        if isinstance(payload, bytes):
            return web.Response(body=payload, status=status, headers=headers, content_type="text/html")
        return web.json_response(payload, status=status, headers=headers)

    return play


def complete(
    text: str | None,
    usage: tuple[int, int] = (4, 1),
    *,
    ensure_ascii: bool = True,
    finish: str = "stop",
    **message: Any,
) -> Script:
    """Answer with a whole ``chat.completion`` JSON, as a server that ignores ``stream`` does;
    ``message`` adds fields to its message (``tool_calls``, ``reasoning_content``, ...)."""
    whole = {"role": "assistant", "content": text, **message}
    body = {
        "id": "chatcmpl-up",
        "object": "chat.completion",
        "choices": [{"index": 0, "message": whole, "finish_reason": finish}],
        "usage": {"prompt_tokens": usage[0], "completion_tokens": usage[1]},
    }

    async def play(request: web.Request, upstream: FakeUpstream) -> web.StreamResponse:
        return web.json_response(body, dumps=functools.partial(json.dumps, ensure_ascii=ensure_ascii))

    return play


def redirect(status: int, location: str) -> Script:
    """Answer ``status`` with ``Location: location`` (``""``: no Location at all)."""

    async def play(request: web.Request, upstream: FakeUpstream) -> web.StreamResponse:
        headers = {"Location": location} if location else {}
        return web.Response(status=status, headers=headers, text="moved")

    return play


def silent() -> Script:
    """Never answer, not even with headers, until released."""

    async def play(request: web.Request, upstream: FakeUpstream) -> web.StreamResponse:
        await upstream.release.wait()
        return web.Response(status=503)

    return play


# -- reasoning and client tool calls -----------------------------------------------------------


def reasoning(text: str, field: str = "reasoning_content", **options: Any) -> bytes:
    """A reasoning delta: ``reasoning_content`` (vLLM, DeepSeek, llama-server) or ``reasoning``
    (Ollama, OpenRouter)."""
    return chunk({field: text}, **options)


def call_start(index: int | None, call_id: str, name: str, arguments: str = "", **options: Any) -> bytes:
    """A call's first fragment, as OpenAI sends it (``index=None``: a server that omits it)."""
    call: dict[str, Any] = {
        "id": call_id,
        "type": "function",
        "function": {"name": name, "arguments": arguments},
    }
    if index is not None:
        call = {"index": index, **call}
    return chunk({"tool_calls": [call]}, **options)


def call_arguments(index: int | None, fragment: str, **options: Any) -> bytes:
    """A later fragment of a call's arguments."""
    call: dict[str, Any] = {"function": {"arguments": fragment}}
    if index is not None:
        call = {"index": index, **call}
    return chunk({"tool_calls": [call]}, **options)


def calls_events(
    *calls: tuple[str, str, list[str]],
    thoughts: Iterable[str] = (),
    field: str = "reasoning_content",
    finish: str = "tool_calls",
    usage: dict[str, Any] | None = None,
    ensure_ascii: bool = True,
) -> list[bytes]:
    """What vLLM streams for reasoning ``thoughts`` then ``calls`` (id, name, argument fragments),
    one after the other: role, reasoning, each call's first fragment and its argument fragments,
    the finish (``tool_calls``), the usage, ``[DONE]``."""
    events = [chunk({"role": "assistant", "content": ""})]
    events += [reasoning(thought, field) for thought in thoughts]
    for index, (call_id, name, fragments) in enumerate(calls):
        events.append(call_start(index, call_id, name))
        events += [call_arguments(index, f, ensure_ascii=ensure_ascii) for f in fragments]
    events.append(chunk({}, finish))
    counts = usage or {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12}
    events.append(chunk(None, usage=counts))
    return [*events, DONE]
