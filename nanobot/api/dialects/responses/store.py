"""Stored responses (``store: true``): in memory, in SQLite (survives a restart), or in Redis
(shared by every worker and host), each kept ``ttl`` seconds after it was made.

A record is a JSON object: the ``response`` a client can fetch again, the ``conversation``
(messages, chat-shaped) a ``previous_response_id`` continues, and the chain's ``session``. The
backends are the history store's family (``--history``, ``--session-ttl``), in a table or key
space of their own.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import orjson

from nanobot.api.redis_sessions import (
    DEFAULT_TIMEOUT,
    ServiceUnavailable,
    cancel_requests,
    raise_swallowed_cancel,
    redis_client,
    redis_failures,
)

if TYPE_CHECKING:
    from redis.asyncio import Redis

#: Seconds a stored response is kept: the history store's default, a week.
DEFAULT_TTL = 7 * 24 * 3600.0
Record = dict[str, Any]


class StoreSpecError(ValueError):
    """``--history`` names a store that cannot be opened (the configuration reports it)."""


class ResponseStore(Protocol):
    """Where stored responses live."""

    async def get(self, response_id: str) -> Record | None: ...

    async def put(self, response_id: str, record: Record) -> None: ...

    async def delete(self, response_id: str) -> bool: ...

    async def aclose(self) -> None: ...


class ResponseNotSaved(ServiceUnavailable):
    """The turn ran, but its response could not be stored: not to be replayed blindly."""

    agent_started = True


class MemoryResponses:
    """Responses in a dict, lost at exit; the oldest go past ``max_responses`` or ``ttl``."""

    def __init__(
        self,
        *,
        ttl: float | None = DEFAULT_TTL,
        max_responses: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl = ttl if ttl else None
        self.max_responses = max_responses
        self._clock = clock
        self._records: OrderedDict[str, tuple[float, bytes]] = OrderedDict()

    async def get(self, response_id: str) -> Record | None:
        entry = self._records.get(response_id)
        if entry is None:
            return None
        if entry[0] <= self._clock():
            del self._records[response_id]
            return None
        record: Record = orjson.loads(entry[1])
        return record

    async def put(self, response_id: str, record: Record) -> None:
        expires = self._clock() + self.ttl if self.ttl is not None else float("inf")
        self._records[response_id] = (expires, orjson.dumps(record))
        self._records.move_to_end(response_id)
        while len(self._records) > self.max_responses:
            self._records.popitem(last=False)

    async def delete(self, response_id: str) -> bool:
        return self._records.pop(response_id, None) is not None

    async def aclose(self) -> None:
        self._records.clear()


class SQLiteResponses:
    """Responses in a SQLite file (table ``responses``), surviving restarts; expired rows are
    never returned and are purged as new ones are stored."""

    def __init__(self, path: str | Path, *, ttl: float | None = DEFAULT_TTL) -> None:
        self.path = Path(path)
        self.ttl = ttl if ttl else None
        self._lock = threading.Lock()
        try:
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS responses "
                "(id TEXT PRIMARY KEY, record TEXT NOT NULL, expires REAL NOT NULL)"
            )
        except sqlite3.Error as exc:
            raise StoreSpecError(f"Cannot open the response store {str(self.path)!r}: {exc}") from exc

    async def get(self, response_id: str) -> Record | None:
        return await asyncio.to_thread(self._get, response_id)

    async def put(self, response_id: str, record: Record) -> None:
        await asyncio.to_thread(self._put, response_id, orjson.dumps(record).decode())

    async def delete(self, response_id: str) -> bool:
        return await asyncio.to_thread(self._delete, response_id)

    async def aclose(self) -> None:
        await asyncio.to_thread(self._close)

    def _get(self, response_id: str) -> Record | None:
        with self._lock:
            row = self._db.execute(
                "SELECT record FROM responses WHERE id = ? AND expires > ?", (response_id, time.time())
            ).fetchone()
        if row is None:
            return None
        record: Record = orjson.loads(row[0])
        return record

    def _put(self, response_id: str, encoded: str) -> None:
        now = time.time()
        expires = now + self.ttl if self.ttl is not None else float("inf")
        with self._lock:
            self._db.execute("DELETE FROM responses WHERE expires <= ?", (now,))
            self._db.execute(
                "INSERT OR REPLACE INTO responses (id, record, expires) VALUES (?, ?, ?)",
                (response_id, encoded, expires),
            )

    def _delete(self, response_id: str) -> bool:
        with self._lock:
            cursor = self._db.execute(
                "DELETE FROM responses WHERE id = ? AND expires > ?", (response_id, time.time())
            )
        return cursor.rowcount > 0

    def _close(self) -> None:
        with self._lock:
            self._db.close()


class RedisResponses:
    """Responses in Redis at ``PREFIX:r:ID``, expiring ``ttl`` seconds after they were stored.

    Redis down: :meth:`get` and :meth:`delete` raise :class:`ServiceUnavailable` (503) within
    ``timeout``; :meth:`put` raises :class:`ResponseNotSaved` (503, not to be replayed blindly).
    """

    def __init__(
        self,
        url: str,
        *,
        ttl: float | None = DEFAULT_TTL,
        prefix: str = "nanobot",
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        try:
            self._redis: Redis = redis_client(url, timeout=timeout)
        except ValueError as exc:
            raise StoreSpecError(f"Cannot use the response store {url!r}: {exc}") from exc
        self._failures = redis_failures()
        self.prefix = prefix
        self.timeout = timeout
        self._px = max(1, round(ttl * 1000)) if ttl else None
        self._closed = False

    def key(self, response_id: str) -> str:
        return f"{self.prefix}:r:{response_id}"

    async def get(self, response_id: str) -> Record | None:
        raw = await self._call(lambda: self._redis.get(self.key(response_id)))
        if raw is None:
            return None
        record: Record = orjson.loads(raw)
        return record

    async def put(self, response_id: str, record: Record) -> None:
        encoded = orjson.dumps(record)
        try:
            await self._call(lambda: self._redis.set(self.key(response_id), encoded, px=self._px))
        except ServiceUnavailable as exc:
            raise ResponseNotSaved(
                "The response could not be stored: the store (Redis) cannot be reached."
            ) from exc

    async def delete(self, response_id: str) -> bool:
        return bool(await self._call(lambda: self._redis.delete(self.key(response_id))))

    async def _call(self, call: Callable[[], Any]) -> Any:
        cancels = cancel_requests()
        try:
            async with asyncio.timeout(self.timeout):
                result = await call()
        except self._failures as exc:
            raise ServiceUnavailable(
                "The response store (Redis) cannot be reached; try again shortly."
            ) from exc
        raise_swallowed_cancel(cancels)
        return result

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            await self._redis.aclose()


def open_response_store(
    spec: str = "memory", *, ttl: float | None = DEFAULT_TTL, redis_url: str | None = None
) -> ResponseStore:
    """The store ``--history`` names (``memory``, ``sqlite:PATH``, ``redis://…``); with
    ``memory`` and a ``--redis-url``, Redis, so that every worker sees every response."""
    if spec == "memory":
        return RedisResponses(redis_url, ttl=ttl) if redis_url else MemoryResponses(ttl=ttl)
    if spec.startswith(("redis://", "rediss://")):
        return RedisResponses(spec, ttl=ttl)
    kind, _, path = spec.partition(":")
    if kind == "sqlite" and path:
        return SQLiteResponses(path, ttl=ttl)
    raise StoreSpecError(f"must be 'memory' or 'sqlite:PATH' (or redis://HOST:PORT/DB), not {spec!r}")
