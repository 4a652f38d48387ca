"""The floor: the least a Python server can do to stream these chunks.

A bare ``asyncio.Protocol`` speaking just enough HTTP/1.1 (keep-alive, ``Content-Length``
request bodies, chunked responses). Each stream's chunk bytes are pre-encoded around the token
(only the token is JSON-escaped), and every token is one ``transport.write`` of one ready HTTP
chunk. It runs the same agent as every other server. No validation, sessions, timeouts or pings:
it is the yardstick, not a server to use.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any, cast

import orjson

from benchmarks.agents import BenchAgent
from benchmarks.framing import TooLarge, take_request
from benchmarks.peers import MODEL, complete

STREAM_HEAD = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n"
)


class Frames:
    """The pre-encoded pieces of one stream's HTTP chunks."""

    __slots__ = ("_content", "_first", "end")

    def __init__(self) -> None:
        head = orjson.dumps(
            {
                "id": f"chatcmpl-{uuid.uuid4().hex}",
                "object": "chat.completion.chunk",
                "created": int(time.time()),
                "model": MODEL,
            }
        )
        prefix = b"data: " + head[:-1] + b',"choices":[{"index":0,"delta":{'
        self._first = prefix + b'"role":"assistant","content":'
        self._content = prefix + b'"content":'
        stop = prefix + b'},"finish_reason":"stop"}]}\n\n'
        self.end = _chunk(stop) + _chunk(b"data: [DONE]\n\n") + b"0\r\n\r\n"

    def token(self, text: str, *, first: bool) -> bytes:
        prefix = self._first if first else self._content
        event = prefix + orjson.dumps(text) + b'},"finish_reason":null}]}\n\n'
        return b"%x\r\n%b\r\n" % (len(event), event)


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%b\r\n" % (len(data), data)


class FloorProtocol(asyncio.Protocol):
    """One connection: requests one at a time, each answered by the agent's stream."""

    def __init__(self, agent: BenchAgent) -> None:
        self._agent = agent
        self._buffer = bytearray()
        self._transport: asyncio.Transport | None = None
        self._task: asyncio.Task[None] | None = None
        self._writable = asyncio.Event()
        self._writable.set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def connection_lost(self, exc: Exception | None) -> None:
        if self._task is not None:
            self._task.cancel()

    def pause_writing(self) -> None:
        self._writable.clear()

    def resume_writing(self) -> None:
        self._writable.set()

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        if self._task is None:
            self._next_request()

    def _next_request(self) -> None:
        """Start serving the buffered request once its head and body are all here."""
        assert self._transport is not None
        try:
            body = take_request(self._buffer)
        except TooLarge:
            self._transport.close()
            return
        if body is None:
            return
        self._task = asyncio.get_running_loop().create_task(self._serve(orjson.loads(body)))
        self._task.add_done_callback(self._served)

    def _served(self, task: asyncio.Task[None]) -> None:
        self._task = None
        if not task.cancelled() and task.exception() is not None and self._transport is not None:
            self._transport.close()
        elif self._buffer:
            self._next_request()

    async def _serve(self, body: dict[str, Any]) -> None:
        transport = self._transport
        assert transport is not None
        if not body.get("stream"):
            data = orjson.dumps(await complete(self._agent, body))
            head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
            transport.write(head % len(data) + data)
            return
        frames, writable = Frames(), self._writable
        transport.write(STREAM_HEAD)
        first = True

        async def on_stream(text: str) -> None:
            nonlocal first
            if not writable.is_set():
                await writable.wait()
            transport.write(frames.token(text, first=first))
            first = False

        content = body["messages"][-1]["content"]
        await self._agent.process_direct(
            content=content, session_key="api:default", channel="api", chat_id="default", on_stream=on_stream
        )
        if first:
            transport.write(frames.token("", first=True))
        transport.write(frames.end)
