"""What the service hands an adapter to write: a JSON reply, or a stream of SSE bytes."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, Awaitable, Callable
from contextlib import aclosing
from dataclasses import dataclass

logger = logging.getLogger("nanobot.api")


@dataclass(frozen=True, slots=True)
class JSONReply:
    """A complete response: status, headers and a JSON body (empty for 204)."""

    status: int
    headers: dict[str, str]
    body: bytes


@dataclass(frozen=True, slots=True)
class StreamReply:
    """A ``200 text/event-stream`` response: headers now, then the chunks as the agent speaks."""

    headers: dict[str, str]
    chunks: AsyncGenerator[bytes, None]
    write_timeout: float | None = None

    async def write_to(self, write: Callable[[bytes], Awaitable[object]]) -> bool:
        """Write every chunk, closing the stream whatever happens (which cancels the agent).

        Returns ``False`` when one write waited ``write_timeout`` seconds on a client that
        stopped reading: the adapter should then drop the connection.
        """
        loop = asyncio.get_running_loop()
        watch = _WriteWatch(self.write_timeout) if self.write_timeout else None
        try:
            async with aclosing(self.chunks) as chunks:
                async for data in chunks:
                    if watch is not None:
                        watch.since = loop.time()
                    await write(data)
                    if watch is not None:
                        watch.since = None
        except asyncio.CancelledError:
            if watch is None or not watch.fired:
                raise
            asyncio.current_task().uncancel()  # type: ignore[union-attr]
            logger.warning("client stopped reading for %s s; stream dropped", self.write_timeout)
            return False
        finally:
            if watch is not None:
                watch.cancel()
        return True


class _WriteWatch:
    """Cancels the writing task once a single write has waited ``limit`` seconds.

    One timer per stream, re-armed when it fires: a write costs a clock read, not a timer.
    """

    __slots__ = ("_handle", "_limit", "_loop", "_task", "fired", "since")

    def __init__(self, limit: float) -> None:
        self._loop = asyncio.get_running_loop()
        self._task = asyncio.current_task()
        self._limit = limit
        self.since: float | None = None
        self.fired = False
        self._handle = self._loop.call_later(limit, self._check)

    def _check(self) -> None:
        now = self._loop.time()
        if self.since is not None and now - self.since >= self._limit:
            self.fired = True
            if self._task is not None:
                self._task.cancel()
            return
        start = self.since if self.since is not None else now
        self._handle = self._loop.call_at(start + self._limit, self._check)

    def cancel(self) -> None:
        self._handle.cancel()
