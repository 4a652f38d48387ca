"""The one place that awaits the agent: runs a turn and turns it into bytes or a reply.

The agent runs in its own task; its ``on_stream`` callback encodes each token at once and
appends it to a bounded buffer; the consumer takes everything buffered in one piece, so a slow
socket gets fewer, larger writes while every token stays its own SSE event. When the client
goes away the adapter closes the iterator, which cancels the agent task.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, suppress
from typing import Any

from nanobot.api.completion import Reply, read_reply
from nanobot.api.errors import AgentFailed, AgentTimeout, APIError, from_agent_exception
from nanobot.api.stream import ChatStream, Failure, Finish, TextDelta

logger = logging.getLogger("nanobot.api")

OnStream = Callable[[str], Awaitable[None]]
OnStreamEnd = Callable[..., Awaitable[None]]
#: Calls the agent once, with the given callbacks (``None`` for a non-streaming turn).
Invoke = Callable[[OnStream | None, OnStreamEnd | None], Awaitable[object]]

BUFFER_LIMIT = 64 * 1024


class _Pipe:
    """Bytes from the agent task to the consumer; the producer waits when it is full."""

    __slots__ = ("_drained", "_limit", "_parts", "_size", "ready")

    def __init__(self, limit: int) -> None:
        self._parts: list[bytes] = []
        self._size = 0
        self._limit = limit
        self.ready = asyncio.Event()
        self._drained = asyncio.Event()

    async def put(self, data: bytes) -> None:
        self._parts.append(data)
        self._size += len(data)
        self.ready.set()
        if self._size > self._limit:
            self._drained.clear()
            await self._drained.wait()

    def take(self) -> bytes:
        parts = self._parts
        if not parts:
            self.ready.clear()
            return b""
        data = parts[0] if len(parts) == 1 else b"".join(parts)
        parts.clear()
        self._size = 0
        self._drained.set()
        return data


class _Keepalive:
    """Flags a ping as due after ``interval`` seconds without output: one timer per stream,
    re-armed only when it fires, so a token costs a clock read rather than a timer."""

    __slots__ = ("_handle", "_interval", "_loop", "_pipe", "due", "last")

    def __init__(self, interval: float, pipe: _Pipe) -> None:
        self._loop = asyncio.get_running_loop()
        self._interval = interval
        self._pipe = pipe
        self.due = False
        self.last = self._loop.time()
        self._handle = self._loop.call_at(self.last + interval, self._check)

    def touch(self) -> None:
        """Output just went out."""
        self.last = self._loop.time()

    def _check(self) -> None:
        now = self._loop.time()
        if now >= self.last + self._interval:
            self.due = True
            self._pipe.ready.set()
            self.last = now
        self._handle = self._loop.call_at(self.last + self._interval, self._check)

    def cancel(self) -> None:
        self._handle.cancel()


async def run_turn(
    invoke: Invoke,
    *,
    hold: AbstractAsyncContextManager[None],
    timeout: float | None,
    on_stream: OnStream | None = None,
    on_stream_end: OnStreamEnd | None = None,
) -> Reply:
    """Wait for the session, call the agent under ``timeout``, translate what it raises."""
    async with hold:
        try:
            async with asyncio.timeout(timeout) as deadline:
                result = await invoke(on_stream, on_stream_end)
        except APIError:
            raise
        except TimeoutError as exc:
            if deadline.expired():
                raise AgentTimeout(f"The agent did not answer within {timeout:g} s.") from exc
            raise from_agent_exception(exc) from exc
        except Exception as exc:
            logger.exception("agent raised")
            raise from_agent_exception(exc) from exc
    return read_reply(result)


async def _segment_end(**_: Any) -> None:
    """A generation segment ended (the agent may call tools and stream again): keep streaming."""


async def stream_turn(
    invoke: Invoke,
    stream: ChatStream,
    *,
    hold: AbstractAsyncContextManager[None],
    timeout: float | None,
    ping_interval: float,
    buffer_limit: int = BUFFER_LIMIT,
) -> AsyncGenerator[bytes, None]:
    """Run a turn and yield its SSE bytes; close the iterator to cancel the agent."""
    pipe = _Pipe(buffer_limit)
    text = stream.text

    async def on_stream(delta: str) -> None:
        if delta:
            await pipe.put(text(delta))

    task = asyncio.create_task(
        run_turn(invoke, hold=hold, timeout=timeout, on_stream=on_stream, on_stream_end=_segment_end)
    )
    task.add_done_callback(lambda _: pipe.ready.set())
    keepalive = _Keepalive(ping_interval, pipe) if ping_interval > 0 else None
    try:
        while True:
            data = pipe.take()
            if data:
                if keepalive is not None:
                    keepalive.touch()
                yield data
            elif task.done():
                break
            elif keepalive is not None and keepalive.due:
                keepalive.due = False
                yield stream.ping()
            else:
                await pipe.ready.wait()
        yield _closing_bytes(task, stream)
    finally:
        if keepalive is not None:
            keepalive.cancel()
        if not task.done():
            task.cancel()
            with suppress(asyncio.CancelledError, Exception):
                await task


def _closing_bytes(task: asyncio.Task[Reply], stream: ChatStream) -> bytes:
    """The end of the stream: stop chunk and ``[DONE]``, or one error event."""
    if task.cancelled():
        return stream.send(Failure(AgentFailed("The agent's turn was cancelled.")))
    exc = task.exception()
    if exc is not None:
        return stream.send(Failure(from_agent_exception(exc)))
    reply = task.result()
    head = b"" if stream.sent_text or not reply.text else stream.send(TextDelta(reply.text))
    return head + stream.send(Finish(reply.usage))
