"""Session stores for the ``openai`` agent: each session's conversation, in memory, SQLite or Redis.

A store holds the turns of a session (user and assistant messages, the assistant's client tool
calls and the tool results the client sent, and any system messages a client sent itself); the
agent's own system prompt is not stored, it is put first on every call,
so changing ``--system-prompt`` applies to old sessions too. A store only loads and replaces
whole conversations: the agent saves once per completed turn.

Every store fails the same way: a load it cannot do is :class:`HistoryUnavailable` (503
``service_unavailable``, the turn never started), a save it cannot do (Redis down, a read-only,
locked or deleted SQLite database) is :class:`HistoryNotSaved` (503 ``answer_not_saved``, not to
be replayed blindly: the upstream has answered), each with one warning line in the log.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import sqlite3
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, NotRequired, Protocol, TypedDict

import orjson

from nanobot.api.redis_sessions import (
    DEFAULT_TIMEOUT,
    ServiceUnavailable,
    cancel_requests,
    raise_swallowed_cancel,
    redis_client,
    redis_failures,
)
from nanobot.config import ConfigError

if TYPE_CHECKING:
    from redis.asyncio import Redis

logger = logging.getLogger("nanobot.agents.history")

SYSTEM_ROLES = frozenset({"system", "developer"})
#: Seconds an idle session's conversation is kept in Redis (``--session-ttl``): a week.
DEFAULT_SESSION_TTL = 7 * 24 * 3600.0


class HistoryUnavailable(ServiceUnavailable):
    """The session's conversation cannot be read now: 503, try again shortly."""


class HistoryNotSaved(ServiceUnavailable):
    """The upstream finished the turn, but the store would not keep it: the client must not
    replay it blindly (``x-should-retry: false``)."""

    default_code = "answer_not_saved"
    agent_started = True


def not_saved(session: str, store: str, exc: BaseException) -> HistoryNotSaved:
    """Log one line (no traceback) for an answer ``store`` could not keep, and the error to raise."""
    cause = f"{type(exc).__name__}: {exc}"
    logger.warning("session %r: the answer was not saved in %s (%s)", session, store, cause)
    return HistoryNotSaved(f"The answer could not be saved in {store} ({type(exc).__name__}).")


def not_loaded(session: str, store: str, exc: BaseException) -> HistoryUnavailable:
    """Log one line for a conversation ``store`` could not read, and the error to raise."""
    cause = f"{type(exc).__name__}: {exc}"
    logger.warning("session %r: the history could not be read from %s (%s)", session, store, cause)
    return HistoryUnavailable(f"The history could not be read from {store}; try again shortly.")


class ChatMessage(TypedDict):
    """A stored message, in Chat Completions' shape: an assistant message with ``tool_calls``
    may have ``content`` ``None``; a ``tool`` message names the call it answers."""

    role: str
    content: str | None
    tool_calls: NotRequired[list[dict[str, Any]]]
    tool_call_id: NotRequired[str]


class History(Protocol):
    """Where sessions' conversations live between turns."""

    async def load(self, session: str) -> list[ChatMessage]: ...

    async def save(self, session: str, messages: Sequence[ChatMessage]) -> None: ...

    async def aclose(self) -> None: ...


def trimmed(messages: Sequence[ChatMessage], limit: int) -> list[ChatMessage]:
    """At most ``limit`` messages after the leading system ones, dropping whole turns, oldest first.

    A turn starts at a user message, so what is kept never starts with an assistant's answer,
    nor splits an assistant's tool calls from their results (an upstream refuses a tool message
    whose call it has not seen).
    """
    head = 0
    while head < len(messages) and messages[head]["role"] in SYSTEM_ROLES:
        head += 1
    start = head
    while len(messages) - start > limit:
        start += 1
        while start < len(messages) and messages[start]["role"] != "user":
            start += 1
    return [*messages[:head], *messages[start:]]


class MemoryHistory:
    """Conversations in a dict, lost at exit; the least recently used sessions go past ``max_sessions``."""

    def __init__(self, max_sessions: int = 10_000) -> None:
        self.max_sessions = max_sessions
        self._sessions: OrderedDict[str, list[ChatMessage]] = OrderedDict()

    async def load(self, session: str) -> list[ChatMessage]:
        messages = self._sessions.get(session)
        if messages is None:
            return []
        self._sessions.move_to_end(session)
        return list(messages)

    async def save(self, session: str, messages: Sequence[ChatMessage]) -> None:
        self._sessions[session] = list(messages)
        self._sessions.move_to_end(session)
        while len(self._sessions) > self.max_sessions:
            self._sessions.popitem(last=False)

    async def aclose(self) -> None:
        self._sessions.clear()


class DatabaseGone(sqlite3.OperationalError):
    """The database file was deleted or replaced while the store had it open."""


class SQLiteHistory:
    """Conversations in a SQLite file, one row per session, surviving restarts.

    The stdlib driver blocks, so every call runs in a worker thread; a lock keeps the one
    connection to one thread at a time, also when the awaiting task was cancelled.

    One process owns the file: two processes that each order their own turns would interleave
    the turns of a session they share and lose some, so a second one is refused at start (a
    lock on ``PATH.lock``, held while the store is open). Processes that order turns through one
    Redis (``--redis-url``: one turn of a session at a time, fleet-wide) share the file
    (``shared=True``), never with a process that does not. A database deleted or replaced while
    the store is open fails every save (:class:`HistoryNotSaved`, naming the cause) instead of
    writing where nobody will find it: restarting the server creates a new one.
    """

    def __init__(self, path: str | Path, *, shared: bool = False, busy_timeout: float = 5.0) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._owner = _own(self.path, shared=shared)
        try:
            self._db = sqlite3.connect(
                self.path, timeout=busy_timeout, check_same_thread=False, isolation_level=None
            )
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS sessions "
                "(session TEXT PRIMARY KEY, messages TEXT NOT NULL, updated REAL NOT NULL)"
            )
        except sqlite3.Error as exc:
            self._owner.close()
            raise ConfigError(f"Cannot open the history database {str(self.path)!r}: {exc}") from exc
        self._file = _identity(self.path)

    @property
    def _name(self) -> str:
        return f"the history database {str(self.path)!r}"

    async def load(self, session: str) -> list[ChatMessage]:
        try:
            return await asyncio.to_thread(self._load, session)
        except sqlite3.Error as exc:
            raise not_loaded(session, self._name, exc) from exc

    async def save(self, session: str, messages: Sequence[ChatMessage]) -> None:
        try:
            await asyncio.to_thread(self._save, session, orjson.dumps(list(messages)).decode())
        except sqlite3.Error as exc:
            raise not_saved(session, self._name, exc) from exc

    async def aclose(self) -> None:
        await asyncio.to_thread(self._close)

    def _load(self, session: str) -> list[ChatMessage]:
        with self._lock:
            row = self._db.execute("SELECT messages FROM sessions WHERE session = ?", (session,)).fetchone()
        if row is None:
            return []
        messages: list[ChatMessage] = orjson.loads(row[0])
        return messages

    def _save(self, session: str, encoded: str) -> None:
        with self._lock:
            if _identity(self.path) != self._file:
                raise DatabaseGone(
                    "the file was deleted or replaced while the server ran; restart the server"
                )
            self._db.execute(
                "INSERT INTO sessions (session, messages, updated) VALUES (?, ?, ?) "
                "ON CONFLICT (session) DO UPDATE "
                "SET messages = excluded.messages, updated = excluded.updated",
                (session, encoded, time.time()),
            )

    def _close(self) -> None:
        with self._lock:
            self._db.close()
            self._owner.close()


def _own(path: Path, *, shared: bool) -> IO[bytes]:
    """Lock ``PATH.lock`` for this process (shared among processes ordering turns through Redis);
    a clean :class:`ConfigError` when another process holds it."""
    try:
        owner = open(path.with_name(path.name + ".lock"), "ab")  # noqa: SIM115 - held open while in use
    except OSError as exc:
        raise ConfigError(f"Cannot open the history database {str(path)!r}: {exc}") from exc
    try:
        fcntl.flock(owner, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
    except OSError:
        owner.close()
        raise ConfigError(
            f"sqlite:{path}: another nanobot process serves this database, and two processes "
            "on one SQLite file lose turns of the sessions they share. Serve them as one with "
            "--workers N --redis-url redis://HOST:PORT/DB, give each --redis-url (the same Redis), "
            "keep history in Redis (--history redis://HOST:PORT/DB), or give each its own file."
        ) from None
    return owner


def _identity(path: Path) -> tuple[int, int] | None:
    """The file at ``path`` (device, inode), or ``None`` when there is none."""
    try:
        found = os.stat(path)
    except FileNotFoundError:
        return None
    return found.st_dev, found.st_ino


class RedisHistory:
    """Conversations in Redis, shared by every worker and host: one JSON value per session at
    ``PREFIX:h:SESSION``, expiring ``ttl`` seconds after its last save (``None``: never).

    Redis down, unreachable, hung or failing at the socket level: :meth:`load` raises
    :class:`HistoryUnavailable` (503) within ``timeout``; :meth:`save` raises
    :class:`HistoryNotSaved` (503, not to be replayed blindly). A pooled connection that died
    while idle is replaced on use (see :func:`~nanobot.api.redis_sessions.redis_client`).
    """

    def __init__(
        self,
        url: str,
        *,
        ttl: float | None = DEFAULT_SESSION_TTL,
        prefix: str = "nanobot",
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        try:
            self._redis: Redis = redis_client(url, timeout=timeout)
        except ValueError as exc:
            raise ConfigError(f"Cannot use the history store {url!r}: {exc}") from exc
        self._failures = redis_failures()
        self.ttl = ttl if ttl is not None and ttl > 0 else None
        self.prefix = prefix
        self.timeout = timeout
        self._px = max(1, round(self.ttl * 1000)) if self.ttl is not None else None
        self._closed = False

    def key(self, session: str) -> str:
        return f"{self.prefix}:h:{session}"

    async def load(self, session: str) -> list[ChatMessage]:
        cancels = cancel_requests()
        try:
            async with asyncio.timeout(self.timeout):
                raw = await self._redis.get(self.key(session))
        except self._failures as exc:
            raise not_loaded(session, "the history store (Redis)", exc) from exc
        raise_swallowed_cancel(cancels)
        if raw is None:
            return []
        messages: list[ChatMessage] = orjson.loads(raw)
        return messages

    async def save(self, session: str, messages: Sequence[ChatMessage]) -> None:
        encoded = orjson.dumps(list(messages))
        cancels = cancel_requests()
        try:
            async with asyncio.timeout(self.timeout):
                await self._redis.set(self.key(session), encoded, px=self._px)
        except self._failures as exc:
            raise not_saved(session, "the history store (Redis)", exc) from exc
        raise_swallowed_cancel(cancels)

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            await self._redis.aclose()


def open_history(spec: str, *, ttl: float | None = DEFAULT_SESSION_TTL, shared: bool = False) -> History:
    """``memory``, ``sqlite:PATH``, or ``redis://HOST:PORT/DB`` (``rediss://`` for TLS), where a
    session's conversation expires ``ttl`` seconds after its last turn (``None`` or 0: never).
    ``shared``: turns are ordered through Redis, so other processes may share a SQLite file."""
    if spec == "memory":
        return MemoryHistory()
    if spec.startswith(("redis://", "rediss://")):
        return RedisHistory(spec, ttl=ttl)
    kind, _, path = spec.partition(":")
    if kind == "sqlite" and path:
        return SQLiteHistory(path, shared=shared)
    raise ConfigError(f"history must be 'memory' or 'sqlite:PATH' (or redis://HOST:PORT/DB), not {spec!r}")
