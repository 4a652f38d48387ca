"""The writing side of one stream: tokens go out from the agent's own task, gathered per loop tick.

A token is written by the task that produced it as soon as it is encoded, so a paced agent costs
no task switch per token. Tokens an agent produces without yielding to the event loop in between
are gathered and written in one piece when it next yields (or once 64 KiB are waiting), so a fast
agent makes few large writes while every token stays its own SSE event. What must be written
while the agent is busy elsewhere (a gathered tail, a keepalive ping) goes out through one
short-lived flusher task. One timer per stream both sends pings after ``ping_interval`` seconds
of silence and drops a client on which a single write waited ``write_timeout`` seconds.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from nanobot.api.sse import PING

logger = logging.getLogger("nanobot.api")

Write = Callable[[bytes], Awaitable[object]]

#: Bytes gathered before the producing task writes them itself (and waits for the socket).
GATHER_LIMIT = 64 * 1024


class ClientGone(asyncio.CancelledError):
    """The client can no longer be written to: the turn is cancelled like on a disconnect."""


class Output:
    """Writes one stream's bytes through an adapter's ``write`` coroutine, in order."""

    __slots__ = (
        "_flusher",
        "_handle",
        "_interval",
        "_limit",
        "_loop",
        "_parts",
        "_size",
        "_task",
        "_ticking",
        "_write",
        "cancels",
        "closed",
        "error",
        "last",
        "ping",
        "stalled",
        "write_timeout",
        "writing_since",
    )

    def __init__(
        self,
        write: Write,
        *,
        ping_interval: float = 0.0,
        write_timeout: float | None = None,
        limit: int = GATHER_LIMIT,
        ping: bytes = PING,
    ) -> None:
        self._loop = asyncio.get_running_loop()
        self._task = asyncio.current_task(self._loop)
        self._write = write
        self._interval = ping_interval if ping_interval > 0 else None
        self.write_timeout = write_timeout if write_timeout and write_timeout > 0 else None
        self._limit = limit
        self.ping = ping  #: the dialect's keepalive
        self._parts: list[bytes] = []
        self._size = 0
        self._ticking = False
        self._flusher: asyncio.Task[None] | None = None
        self.closed = False
        self.cancels = 0  #: how often this output cancelled its task (the task uncancels)
        self.stalled = False  #: a write waited ``write_timeout``: the task was cancelled
        self.error: BaseException | None = None  #: why the client can't be written to
        self.last = self._loop.time()  #: when output last went out
        self.writing_since: float | None = None
        self._handle: asyncio.TimerHandle | None = None
        self._arm(self.last)

    @property
    def broken(self) -> bool:
        """The client is gone or stalled: nothing more will be written."""
        return self.stalled or self.error is not None

    async def send(self, data: bytes) -> None:
        """Write ``data`` now, or gather it if output already went out in this loop tick."""
        if self.stalled or self.error is not None or self.closed:
            raise ClientGone("the client is gone" if self.broken else "the stream has ended")
        if self._parts or self._ticking or self.writing_since is not None:
            self._parts.append(data)
            self._size += len(data)
            if self._size >= self._limit:
                await self._flush()
                await asyncio.sleep(0)  # a write that never waits must not hold the loop
            return
        # ``_out``, inlined: this is the path of every token that is not gathered.
        self._ticking = True
        loop = self._loop
        loop.call_soon(self._tick_end)
        self.writing_since = loop.time()
        try:
            await self._write(data)
        except Exception as exc:
            raise self._gone(exc) from exc
        finally:
            self.writing_since = None
            self.last = loop.time()

    async def close(self, tail: bytes) -> None:
        """Write whatever is gathered, then ``tail``: the end of the stream."""
        if self.broken or self.closed:
            self.closed = True
            return
        self._parts.append(tail)
        self._size += len(tail)
        await self._flush()
        self.closed = True

    async def aclose(self) -> None:
        """Stop the timer and any flusher (what was not written is dropped)."""
        self.closed = True
        if self._handle is not None:
            self._handle.cancel()
        flusher = self._flusher
        if flusher is not None and not flusher.done():
            flusher.cancel()
            await asyncio.wait((flusher,))  # a cancel aimed at this task still gets through

    # -- internals ----------------------------------------------------------------------------

    def _take(self) -> bytes:
        parts = self._parts
        data = parts[0] if len(parts) == 1 else b"".join(parts)
        parts.clear()
        self._size = 0
        return data

    async def _out(self, data: bytes) -> None:
        """One write, watched for a stalled client; a failed write marks the client gone."""
        self.writing_since = self._loop.time()
        try:
            await self._write(data)
        except Exception as exc:
            raise self._gone(exc) from exc
        finally:
            self.writing_since = None
            self.last = self._loop.time()

    def _gone(self, exc: Exception) -> ClientGone:
        """A write failed: the client is gone (the error to raise in the writing task)."""
        if not isinstance(exc, OSError):
            logger.exception("writing to the client failed", exc_info=exc)
        self.error = exc
        if asyncio.current_task(self._loop) is not self._task:
            self._cancel_task()  # the request's task is waiting on the writer: wake it
        return ClientGone("the client is gone")

    async def _flush(self) -> None:
        """Write everything gathered, after any flusher still writing (keeps the order)."""
        flusher = self._flusher
        if flusher is not None and not flusher.done():
            # Not ``await flusher``: cancelling this task (a turn timeout) would cancel the
            # flusher's write too, and lose the bytes it already took.
            await asyncio.wait((flusher,))
        if self.broken:
            raise ClientGone("the client is gone")
        if self._parts:
            await self._out(self._take())

    def _tick_end(self) -> None:
        """The producing task yielded: write what it gathered meanwhile, in the background."""
        self._ticking = False
        if self._parts and not self.closed and not self.broken:
            self._start_flusher()

    def _start_flusher(self) -> None:
        if self._flusher is None or self._flusher.done():
            self._flusher = self._loop.create_task(self._background_flush())

    async def _background_flush(self) -> None:
        try:
            while self._parts and self.writing_since is None:
                await self._out(self._take())
        except ClientGone:
            pass  # ``_out`` has cancelled the request's task: nobody is listening

    def _cancel_task(self) -> None:
        if self._task is not None and not self._task.done():
            self.cancels += 1
            self._task.cancel()

    def _arm(self, now: float) -> None:
        """Set the one timer to the nearest of the ping and write-timeout deadlines."""
        deadlines = []
        since = self.writing_since
        if self._interval is not None:  # while a write waits, look again an interval later
            deadlines.append((self.last if since is None else now) + self._interval)
        if self.write_timeout is not None:
            deadlines.append((now if since is None else since) + self.write_timeout)
        if deadlines:
            self._handle = self._loop.call_at(min(deadlines), self._check)

    def _check(self) -> None:
        if self.closed or self.broken:
            return
        now = self._loop.time()
        since = self.writing_since
        if self.write_timeout is not None and since is not None and now - since >= self.write_timeout:
            self.stalled = True
            self._cancel_task()
            if self._flusher is not None:
                self._flusher.cancel()
            return
        if self._interval is not None and since is None and now >= self.last + self._interval:
            if not self._parts:
                self._parts.append(self.ping)
                self._size += len(self.ping)
            self.last = now
            self._start_flusher()
        self._arm(now)
