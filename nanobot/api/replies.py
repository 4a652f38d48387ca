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
        async with aclosing(self.chunks) as chunks:
            async for data in chunks:
                try:
                    async with asyncio.timeout(self.write_timeout):
                        await write(data)
                except TimeoutError:
                    logger.warning("client stopped reading for %s s; stream dropped", self.write_timeout)
                    return False
        return True
