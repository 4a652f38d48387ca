"""What the service hands an adapter to write: a JSON reply, or a stream of SSE bytes."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from nanobot.api.output import Output, Write
from nanobot.api.sse import PING

logger = logging.getLogger("nanobot.api")


@dataclass(frozen=True, slots=True)
class JSONReply:
    """A complete response: status, headers and a body, JSON unless said (empty for 204)."""

    status: int
    headers: dict[str, str]
    body: bytes
    content_type: str = "application/json"


@dataclass(frozen=True, slots=True)
class StreamReply:
    """A ``200 text/event-stream`` response: headers now, then the chunks as the agent speaks.

    Once ``write_to`` has sent them (through ``start``), ``headers`` is emptied: an open stream
    keeps no copy of what the adapter already wrote.

    ``run`` drives the turn in the calling task, writing through the :class:`Output` it is given.
    """

    headers: dict[str, str]
    run: Callable[[Output], Awaitable[None]]
    ping_interval: float = 0.0
    write_timeout: float | None = None
    #: Frees what admitting this stream took (its place under ``max_streams``); runs once, when
    #: ``write_to`` ends, however it ends.
    release: Callable[[], None] | None = None
    #: The keepalive the dialect writes after ``ping_interval`` seconds of silence.
    ping: bytes = PING

    async def write_to(self, write: Write, start: Callable[[], Awaitable[object]] | None = None) -> bool:
        """Send the headers with ``start``, then run the turn, writing every chunk with ``write``;
        cancel this task to cancel the turn. The adapter calls this at once after ``chat``
        returned the reply (no await between), so the admission is always released.

        Returns ``False`` when the client can no longer be written to (a write failed, or one
        write waited ``write_timeout`` seconds on a client that stopped reading): the adapter
        should then drop the connection.
        """
        try:
            if start is not None:
                await start()
        except BaseException:
            self._release()
            raise
        if start is not None:  # sent: keep neither the adapter's closure nor the headers
            start = None
            self.headers.clear()
        output = Output(
            write, ping_interval=self.ping_interval, write_timeout=self.write_timeout, ping=self.ping
        )
        try:
            await self.run(output)
        except asyncio.CancelledError:
            if not output.broken or _uncancel(output):
                raise  # cancelled from outside (a disconnect, a shutdown), maybe as well
        finally:
            self._release()
            await output.aclose()
        if not output.broken:
            return True
        _uncancel(output)  # also when the agent absorbed the cancellation and returned
        if output.stalled:
            logger.warning("client stopped reading for %s s; stream dropped", output.write_timeout)
        return False

    def _release(self) -> None:
        if self.release is not None:
            self.release()


def _uncancel(output: Output) -> int:
    """Take back the cancels ``output`` sent this task; the count of those left from others."""
    task = asyncio.current_task()
    assert task is not None
    for _ in range(output.cancels):
        task.uncancel()
    output.cancels = 0
    return task.cancelling()
