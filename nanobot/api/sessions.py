"""Per-session serialisation: one turn at a time per session, in arrival order.

A session's lock exists only while some request holds or waits for it, so idle sessions cost
nothing and the table never grows past the number of sessions in use.
"""

from __future__ import annotations

import asyncio
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol

from nanobot.core.errors import Overloaded


class _Slot:
    __slots__ = ("lock", "users")

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.users = 0


class Sessions(Protocol):
    """Where per-session turn order lives: this process (:class:`SessionLocks`) or a store
    shared by every worker and host (``nanobot.api.redis_sessions.RedisSessions``)."""

    async def check(self, key: str) -> None:
        """Refuse (429 :class:`Overloaded`) a new turn on a session whose queue is full; 503
        when the store cannot be reached. Called before any byte of the response."""

    def hold(self, key: str) -> AbstractAsyncContextManager[None]:
        """Wait for the session's turn (in arrival order), then hold it for the ``async with``."""
        ...

    async def aclose(self) -> None:
        """Release what the store holds (connections)."""


class SessionLocks:
    """FIFO locks keyed by session, released when the last user leaves."""

    def __init__(self, max_waiting: int = 16) -> None:
        self._slots: dict[str, _Slot] = {}
        self._max_waiting = max_waiting

    def __len__(self) -> int:
        return len(self._slots)

    async def check(self, key: str) -> None:
        """Refuse a new turn on a session whose queue is already full."""
        slot = self._slots.get(key)
        if slot is not None and slot.users > self._max_waiting:
            raise Overloaded(
                f"Session '{key}' already has {slot.users} requests in flight; try again later.",
            )

    def hold(self, key: str) -> Hold:
        """Wait for the session's turn, then hold it for the body of the ``async with``."""
        return Hold(self._slots, key)

    async def aclose(self) -> None:
        """Nothing to release."""


class Waiting:
    """How many turns wait for their session right now (for ``max_pending``)."""

    __slots__ = ("count",)

    def __init__(self) -> None:
        self.count = 0


class Counted:
    """A session hold that counts its turn in ``waiting`` while it waits."""

    __slots__ = ("_hold", "_waiting")

    def __init__(self, hold: AbstractAsyncContextManager[None], waiting: Waiting) -> None:
        self._hold = hold
        self._waiting = waiting

    async def __aenter__(self) -> None:
        self._waiting.count += 1
        try:
            await self._hold.__aenter__()
        finally:
            self._waiting.count -= 1

    async def __aexit__(self, *exc_info: Any) -> None:
        await self._hold.__aexit__(*exc_info)


class Hold:
    """``async with`` one session's turn (a plain class: cheaper than a generator per request)."""

    __slots__ = ("_key", "_slot", "_slots")

    def __init__(self, slots: dict[str, _Slot], key: str) -> None:
        self._slots = slots
        self._key = key
        self._slot: _Slot | None = None

    async def __aenter__(self) -> None:
        slot = self._slots.get(self._key)
        if slot is None:
            slot = self._slots[self._key] = _Slot()
        slot.users += 1
        self._slot = slot
        try:
            await slot.lock.acquire()
        except BaseException:
            self._leave(slot)
            raise

    async def __aexit__(self, *exc_info: object) -> None:
        slot = self._slot
        if slot is not None:
            slot.lock.release()
            self._leave(slot)

    def _leave(self, slot: _Slot) -> None:
        self._slot = None
        slot.users -= 1
        if slot.users == 0:
            del self._slots[self._key]
