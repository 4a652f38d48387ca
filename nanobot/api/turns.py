"""The turns in flight: each agent call runs in a task of its own, so no agent can hold a request.

The request's task waits for the agent's task. When the request is cancelled (the client left,
stopped reading, or the deadline passed) the agent's task is cancelled and given
:data:`ABANDON_GRACE` seconds to finish; an agent that ignores the cancellation is abandoned
there (kept referenced, logged once with its session and request id, counted in
``nanobot_turns_abandoned_total``) and the request moves on, freeing its session.
:class:`Turns` also drains: on shutdown it lets open turns finish for a while, then stops the
rest through their deadlines, so each ends with an error the client sees, never in silence. The
drain logs its start (how many turns, how long at most) and its end.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
from collections.abc import Coroutine
from contextlib import suppress
from typing import TYPE_CHECKING, Any

from nanobot.api.metrics import ABANDONED
from nanobot.core.errors import ShuttingDown

if TYPE_CHECKING:
    from nanobot.api.access import Access

logger = logging.getLogger("nanobot.api")

#: Seconds a cancelled agent may take to finish before its turn is abandoned.
ABANDON_GRACE = 0.5


#: What :meth:`Turn._wake` runs in (it only sets a future): no context copied per turn.
_NO_CONTEXT = contextvars.Context()


class AgentCancelled(Exception):
    """The agent's task ended cancelled while nobody cancelled the request (its own doing, or a
    write to a client that is gone)."""


class Turn:
    """One turn in flight: ``with`` it to register it; :meth:`start` runs the agent's work;
    :meth:`stop` ends it through its deadline. A plain slotted class: every open stream holds one."""

    __slots__ = ("_task", "_turns", "_waiter", "access", "deadline", "stopped")

    def __init__(self, turns: Turns, access: Access | None = None) -> None:
        self._turns = turns
        self.access = access  #: the request it serves (named in the log if its agent is abandoned)
        self._task: asyncio.Task[object] | None = None
        self._waiter: asyncio.Future[None] | None = None
        self.deadline: asyncio.Timeout | None = None
        self.stopped = False

    def __enter__(self) -> Turn:
        if self._turns.stopping:
            raise ShuttingDown("The server is shutting down.")
        self._turns._open.add(self)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._turns._closed(self)

    def stop(self) -> None:
        self.stopped = True
        if self.deadline is not None and not self.deadline.expired():
            self.deadline.reschedule(asyncio.get_running_loop().time())

    def start(self, work: Coroutine[Any, Any, object]) -> asyncio.Future[None]:
        """Run ``work`` (the agent call) in its own task. The future returned is done when the
        task is: await it, then take :meth:`result`; if that await is cancelled, await
        :meth:`leave` before re-raising. (No coroutine of its own: every open stream waits here.)"""
        loop = asyncio.get_running_loop()
        self._task = task = loop.create_task(work)
        self._waiter = waiter = loop.create_future()
        task.add_done_callback(self._wake, context=_NO_CONTEXT)
        return waiter

    async def leave(self) -> None:
        """The request was cancelled: cancel the agent's task, give it :data:`ABANDON_GRACE`
        seconds, and abandon it after that."""
        task = self._task
        assert task is not None
        task.cancel()
        try:
            await asyncio.wait((task,), timeout=ABANDON_GRACE)
        finally:
            if not task.done():
                self._turns._abandon(task, self.access)
            elif not task.cancelled() and task.exception() is not None:
                logger.warning("a cancelled agent turn ended with %r", task.exception())

    def result(self) -> object:
        """What the agent's task returned (it is done); :class:`AgentCancelled` if it ended cancelled."""
        task = self._task
        assert task is not None
        if task.cancelled():
            raise AgentCancelled
        return task.result()

    def _wake(self, task: asyncio.Task[object]) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)


class Turns:
    """The turns of one service: tracked while they run, drained at shutdown."""

    def __init__(self) -> None:
        self._open: set[Turn] = set()
        self._abandoned: set[asyncio.Task[Any]] = set()
        self._idle: asyncio.Event | None = None
        self._drain: asyncio.Future[None] | None = None
        self.draining = False  #: shutdown began: new requests are refused
        self.stopping = False  #: the drain time is over: open turns are being stopped

    def __len__(self) -> int:
        return len(self._open)

    def turn(self, access: Access | None = None) -> Turn:
        """A new turn for the request ``access``; ``with`` it for its duration (refused once the
        drain time is over)."""
        return Turn(self, access)

    def _closed(self, turn: Turn) -> None:
        self._open.discard(turn)
        if not self._open and self._idle is not None:
            self._idle.set()

    async def drain(self, timeout: float) -> None:
        """Refuse new turns, let open ones finish for ``timeout`` s, then stop the rest.

        Idempotent: a second call (a signal handler and a server's shutdown hook may both ask)
        waits for the same drain."""
        self.draining = True
        if self._drain is None:
            self._drain = asyncio.ensure_future(self._drain_once(timeout))
        await asyncio.shield(self._drain)

    async def _drain_once(self, timeout: float) -> None:
        began, open_turns = time.perf_counter(), len(self._open)
        _log_drain(
            "draining: %d turns open, waiting up to %g s for them to end",
            (open_turns, timeout),
            event="drain_started",
            turns=open_turns,
            timeout_s=timeout,
        )
        await self._settle(timeout)
        left = len(self._open)
        self.stop_now()
        await self._settle(ABANDON_GRACE + 1.0)  # a stopped turn ends within the abandon grace
        for task in list(self._abandoned):
            task.cancel()
        seconds = round(time.perf_counter() - began, 3)
        _log_drain(
            "drained in %.3f s: %d turns finished, %d stopped",
            (seconds, max(open_turns - left, 0), left),
            event="drain_ended",
            seconds=seconds,
            finished=max(open_turns - left, 0),
            stopped=left,
        )

    def stop_now(self) -> None:
        """Refuse new turns and stop every open one at once (the drain time is over, or a second
        shutdown signal came)."""
        first = not self.stopping
        self.draining = self.stopping = True
        if first and self._open:
            _log_drain("stopping %d open turns now", (len(self._open),), event="drain_stopping")
        for turn in list(self._open):
            turn.stop()

    async def _settle(self, timeout: float) -> None:
        """Wait up to ``timeout`` s for every open turn to end."""
        self._idle = idle = asyncio.Event()
        if self._open:
            with suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await idle.wait()

    def _abandon(self, task: asyncio.Task[Any], access: Access | None) -> None:
        session = access.session if access is not None else None
        request_id = access.request_id if access is not None else None
        logger.warning(
            "an agent ignored its cancellation for %g s; its turn is abandoned, still running "
            "(session=%s request_id=%s)",
            ABANDON_GRACE,
            session or "-",
            request_id or "-",
            extra={"fields": {"event": "turn_abandoned", "session": session, "request_id": request_id}},
        )
        ABANDONED.inc()
        self._abandoned.add(task)
        task.add_done_callback(self._abandoned_done)

    def _abandoned_done(self, task: asyncio.Task[Any]) -> None:
        self._abandoned.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.warning("an abandoned agent turn ended with %r", task.exception())


def _log_drain(message: str, args: tuple[object, ...], **fields: object) -> None:
    """A drain line: text for people, ``fields`` for the JSON log format."""
    logger.info(message, *args, extra={"fields": fields})
