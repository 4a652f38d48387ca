"""The turns in flight: each agent call runs in a task of its own, so no agent can hold a request.

The request's task waits for the agent's task. When the request is cancelled (the client left,
stopped reading, or the deadline passed) the agent's task is cancelled and given
:data:`ABANDON_GRACE` seconds to finish; an agent that ignores the cancellation is abandoned
there (kept referenced, its late end logged) and the request moves on, freeing its session.
:class:`Turns` also drains: on shutdown it lets open turns finish for a while, then stops the
rest through their deadlines, so each ends with an error the client sees, never in silence.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager, suppress
from typing import Any

from nanobot.api.errors import ShuttingDown

logger = logging.getLogger("nanobot.api")

#: Seconds a cancelled agent may take to finish before its turn is abandoned.
ABANDON_GRACE = 0.5


class AgentCancelled(Exception):
    """The agent's task ended cancelled while nobody cancelled the request (its own doing, or a
    write to a client that is gone)."""


class Turn:
    """One turn in flight; :meth:`stop` ends it through its deadline."""

    __slots__ = ("deadline", "stopped")

    def __init__(self) -> None:
        self.deadline: asyncio.Timeout | None = None
        self.stopped = False

    def stop(self) -> None:
        self.stopped = True
        if self.deadline is not None and not self.deadline.expired():
            self.deadline.reschedule(asyncio.get_running_loop().time())


class Turns:
    """The turns of one service: tracked while they run, drained at shutdown."""

    def __init__(self) -> None:
        self._open: set[Turn] = set()
        self._abandoned: set[asyncio.Task[Any]] = set()
        self._idle: asyncio.Event | None = None
        self.draining = False  #: shutdown began: new requests are refused
        self.stopping = False  #: the drain time is over: open turns are being stopped

    def __len__(self) -> int:
        return len(self._open)

    @contextmanager
    def track(self) -> Iterator[Turn]:
        """Register a turn for its duration; refused once the drain time is over."""
        if self.stopping:
            raise ShuttingDown("The server is shutting down.")
        turn = Turn()
        self._open.add(turn)
        try:
            yield turn
        finally:
            self._open.discard(turn)
            if not self._open and self._idle is not None:
                self._idle.set()

    async def supervise(self, work: Coroutine[Any, Any, object]) -> object:
        """Run ``work`` (the agent call) in its own task and return what it returns."""
        task = asyncio.get_running_loop().create_task(work)
        try:
            await asyncio.wait((task,))
        except asyncio.CancelledError:
            task.cancel()
            try:
                await asyncio.wait((task,), timeout=ABANDON_GRACE)
            finally:
                if not task.done():
                    self._abandon(task)
            raise
        if task.cancelled():
            raise AgentCancelled
        return task.result()

    async def drain(self, timeout: float) -> None:
        """Refuse new turns, let open ones finish for ``timeout`` s, then stop the rest."""
        self.draining = True
        await self._settle(timeout)
        self.stop_now()
        await self._settle(ABANDON_GRACE + 1.0)  # a stopped turn ends within the abandon grace
        for task in list(self._abandoned):
            task.cancel()

    def stop_now(self) -> None:
        """Refuse new turns and stop every open one at once (a second shutdown signal)."""
        self.draining = self.stopping = True
        for turn in list(self._open):
            turn.stop()

    async def _settle(self, timeout: float) -> None:
        """Wait up to ``timeout`` s for every open turn to end."""
        self._idle = idle = asyncio.Event()
        if self._open:
            with suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await idle.wait()

    def _abandon(self, task: asyncio.Task[Any]) -> None:
        logger.warning("an agent ignored its cancellation for %g s; its turn is abandoned", ABANDON_GRACE)
        self._abandoned.add(task)
        task.add_done_callback(self._abandoned_done)

    def _abandoned_done(self, task: asyncio.Task[Any]) -> None:
        self._abandoned.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.warning("an abandoned agent turn ended with %r", task.exception())
