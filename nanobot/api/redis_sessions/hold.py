"""One turn's hold on its session in Redis: :class:`RedisHold`, made by
:meth:`~nanobot.api.redis_sessions.RedisSessions.hold`."""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Any

from nanobot.api.redis_sessions.client import UNAVAILABLE, ServiceUnavailable, SessionLost
from nanobot.api.redis_sessions.scripts import GONE, HELD, REFUSED

if TYPE_CHECKING:
    from nanobot.api.redis_sessions.store import RedisSessions


class RedisHold:
    """``async with`` one session's turn, held in Redis (one per request: a plain class)."""

    __slots__ = (
        "_cancelling",
        "_failure",
        "_inflight",
        "_lost",
        "_sessions",
        "_task",
        "_woken",
        "holding",
        "key",
        "queue",
        "ticket",
        "woke",
    )

    def __init__(self, sessions: RedisSessions, key: str) -> None:
        self._sessions = sessions
        self.key = key
        self.queue = sessions.queue_key(key)
        self.ticket = ""
        self.holding = False
        self.woke = False
        self._woken: asyncio.Event | None = None
        self._failure: ServiceUnavailable | None = None
        self._lost: SessionLost | None = None
        self._task: asyncio.Task[Any] | None = None
        self._cancelling = 0
        self._inflight = False

    async def __aenter__(self) -> None:
        sessions = self._sessions
        if sessions._closed:
            raise ServiceUnavailable("The session store is closed: the server is shutting down.")
        self.ticket = ticket = sessions._new_ticket()
        sessions._holds[ticket] = self
        sessions._ensure_maintainer()
        queued = True
        self._inflight = True
        try:
            code = await sessions._enter(self)
            self._inflight = False
            if code == REFUSED:
                queued = False
                raise sessions._busy(self.key, sessions.max_waiting + 1)
            if code == GONE:
                queued = False
                raise ServiceUnavailable(UNAVAILABLE)
            if code != HELD:
                await self._wait(code)
        except BaseException:
            sessions._holds.pop(ticket, None)
            if queued:
                sessions._release_later(self.queue, ticket, tomb=self._inflight)
            raise
        task = asyncio.current_task()
        assert task is not None
        self._task = task
        self._cancelling = task.cancelling()
        self.holding = True

    async def __aexit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        sessions = self._sessions
        self.holding = False
        sessions._holds.pop(self.ticket, None)
        lost = self._lost
        # A turn we cancelled (its lease lapsed) ends with our error, not a bare cancellation.
        if lost is None:
            await sessions._release(self.queue, self.ticket)
            return
        # Redis is likely away: release in the background, answer the client now.
        sessions._release_later(self.queue, self.ticket, tomb=False)
        assert self._task is not None
        if self._task.uncancel() <= self._cancelling and exc_type is asyncio.CancelledError:
            raise lost

    def wake(self) -> None:
        """Our ticket became the head of its queue (a wake-up from the listener)."""
        self.woke = True
        if self._woken is not None:
            self._woken.set()

    def lose(self, error: ServiceUnavailable) -> None:
        """End this turn with ``error``: a waiting one stops waiting, a holding one is cancelled."""
        if self.holding:
            if self._lost is None and isinstance(error, SessionLost) and self._task is not None:
                self._lost = error
                self._task.cancel()
        elif self._failure is None:
            self._failure = error
            if self._woken is not None:
                self._woken.set()

    async def _wait(self, hint_ms: int) -> None:
        sessions = self._sessions
        sessions._waiting += 1
        sessions._ensure_listener()
        self._woken = woken = asyncio.Event()
        if self.woke:
            woken.set()
        try:
            delay = min(sessions.poll, hint_ms / 1000)
            while True:
                if not woken.is_set():
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(delay):
                            await woken.wait()
                if self._failure is not None:
                    raise self._failure
                if self.woke:
                    return
                if sessions._closed:
                    raise ServiceUnavailable("The session store is closed: the server is shutting down.")
                self._inflight = True
                try:
                    code = await sessions._check(self)
                except ServiceUnavailable:
                    delay = sessions._retry  # keep our place; a lapsed lease ends the wait
                    continue
                self._inflight = False
                if code == HELD:
                    return
                if code == GONE:
                    raise ServiceUnavailable(UNAVAILABLE)
                delay = min(sessions.poll, code / 1000)
        finally:
            sessions._waiting -= 1
            self._woken = None
