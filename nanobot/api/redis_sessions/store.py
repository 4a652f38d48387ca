"""A worker of the fleet: :class:`RedisSessions`, the :class:`~nanobot.api.sessions.Sessions`
kept in Redis (see the package docstring for the design)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import weakref
from typing import TYPE_CHECKING, Any

from nanobot.api.redis_sessions.client import (
    DEFAULT_TIMEOUT,
    UNAVAILABLE,
    ServiceUnavailable,
    SessionLost,
    cancel_requests,
    raise_swallowed_cancel,
    redis_client,
    redis_failures,
)
from nanobot.api.redis_sessions.hold import RedisHold
from nanobot.api.redis_sessions.scripts import CHECK, ENTER, RELEASE, RENEW, first_fence, open_script
from nanobot.core.errors import Overloaded

if TYPE_CHECKING:
    from redis.commands.core import AsyncScript

logger = logging.getLogger("nanobot.api")

#: Seconds a worker's lease lives without a renewal (see the package docstring).
DEFAULT_LEASE = 5.0
#: Seconds the wake-up listener blocks in ``BLPOP`` at a time.
WAKE_BLOCK = 1.0


def _forked(sessions: weakref.ref[RedisSessions]) -> None:
    found = sessions()
    if found is not None:
        found._new_identity()


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))


class RedisSessions:
    """FIFO turn order per session, shared by every :class:`RedisSessions` on the same Redis
    and ``prefix``: each is one worker. See the module docstring for the design."""

    worker: str
    #: The number of this worker's last ticket.
    _issued: int
    #: Tickets of this worker that wait or hold, and releases still to be done.
    _holds: dict[str, RedisHold]
    _pending: dict[str, tuple[str, bool]]
    _waiting: int
    _kick: asyncio.Event | None
    _maintainer: asyncio.Task[None] | None
    _listener: asyncio.Task[None] | None
    #: Event-loop time until which Redis surely keeps this worker's lease.
    _valid_until: float
    #: No lease to watch: none yet, or its turns were already ended.
    _lapsed: bool

    def __init__(
        self,
        url: str,
        *,
        max_waiting: int = 16,
        lease: float = DEFAULT_LEASE,
        prefix: str = "nanobot",
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        if lease <= 0 or timeout <= 0:
            raise ValueError("lease and timeout must be positive")
        self.max_waiting = max_waiting
        self.lease = lease
        self.prefix = prefix
        self.timeout = timeout
        self._redis = redis_client(url, timeout=timeout)
        # The listener's own connection: its reads block for WAKE_BLOCK seconds at a time.
        self._wake_redis = redis_client(url, timeout=timeout, read_timeout=WAKE_BLOCK + timeout)
        self._failures = redis_failures()
        self._enter_script: AsyncScript = self._redis.register_script(ENTER)
        self._check_script: AsyncScript = self._redis.register_script(CHECK)
        self._renew_script: AsyncScript = self._redis.register_script(RENEW)
        self._release_script: AsyncScript = self._redis.register_script(RELEASE)
        self._open_script: AsyncScript = self._redis.register_script(open_script(prefix))
        #: This worker wrote or saw the epoch: from now on, finding it missing means a data loss.
        self._opened = False
        self._new_identity()
        # A process forked after this (gunicorn --preload) is another worker: its own lease.
        this = weakref.ref(self)
        os.register_at_fork(after_in_child=lambda: _forked(this))
        self._lease_ms = _ms(lease)
        self._fence_ms = _ms(lease / 2)
        self._ttl_ms = _ms(lease * 3)
        self._renew_every = lease / 3
        self._retry = min(0.2, lease / 20)
        self._margin = min(1.0, lease / 4)
        self.poll = min(1.0, lease / 4)
        self._closed = False
        self._down = False

    def _new_identity(self) -> None:
        """A fresh worker id (tickets ``ID:N``, lease ``P:w:ID``), and nothing held or pending."""
        self.worker = os.urandom(6).hex()
        self._issued = 0
        self._worker_key = f"{self.prefix}:w:{self.worker}"
        self._wake_key = f"{self.prefix}:wake:{self.worker}"
        self._holds = {}
        self._pending = {}
        self._waiting = 0
        self._maintainer = self._listener = self._kick = None
        self._valid_until = float("-inf")
        self._lapsed = True

    # -- the Sessions protocol ------------------------------------------------------------------

    async def check(self, key: str) -> None:
        """429 :class:`Overloaded` when the session's queue is full across the fleet; 503
        :class:`ServiceUnavailable` when Redis cannot be reached within ``timeout``."""
        cancels = cancel_requests()
        try:
            async with asyncio.timeout(self.timeout):
                queued = await self._redis.llen(self.queue_key(key))
        except self._failures as exc:
            raise self._unavailable(exc) from exc
        raise_swallowed_cancel(cancels)
        self._up()
        if queued > self.max_waiting:
            raise self._busy(key, queued)

    def hold(self, key: str) -> RedisHold:
        """Wait for the session's turn (arrival order, fleet-wide), then hold it."""
        return RedisHold(self, key)

    async def aclose(self) -> None:
        """Stop the background tasks, finish pending releases if Redis answers, drop the lease."""
        if self._closed:
            return
        self._closed = True
        for task in (self._listener, self._maintainer):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        with contextlib.suppress(ServiceUnavailable):
            await self._flush()
            if not self._holds:  # our tickets die now rather than in `lease` seconds
                try:
                    async with asyncio.timeout(self.timeout):
                        await self._redis.delete(self._worker_key)
                except self._failures:
                    pass
        await self._wake_redis.aclose()
        await self._redis.aclose()

    # -- pieces ---------------------------------------------------------------------------------

    def queue_key(self, key: str) -> str:
        """The Redis list holding the session's tickets."""
        return f"{self.prefix}:q:{key}"

    def _busy(self, key: str, queued: int) -> Overloaded:
        return Overloaded(
            f"Session '{key}' already has {queued} requests in flight; try again later.",
        )

    def _unavailable(self, exc: BaseException) -> ServiceUnavailable:
        if not self._down:
            self._down = True
            logger.warning("Redis cannot be reached (%r): answering 503 until it is back", exc)
        return ServiceUnavailable(UNAVAILABLE)

    def _up(self) -> None:
        if self._down:
            self._down = False
            logger.info("Redis is reachable again")

    async def _run(self, script: AsyncScript, keys: list[str], args: list[str | int]) -> Any:
        """One script call within ``timeout``; Redis failures become :class:`ServiceUnavailable`."""
        cancels = cancel_requests()
        try:
            async with asyncio.timeout(self.timeout):
                result = await script(keys=keys, args=args)
        except self._failures as exc:
            raise self._unavailable(exc) from exc
        raise_swallowed_cancel(cancels)
        self._up()
        return result

    def _refreshed(self, sent: float) -> None:
        """A call that set the worker's lease, sent at ``sent``, succeeded."""
        self._valid_until = max(self._valid_until, sent + self.lease)
        self._lapsed = False

    async def _open(self) -> None:
        """This worker's first contact: write the epoch, with a fence only when Redis may have
        lost running turns (see the module docstring)."""
        cancels = cancel_requests()
        try:
            async with asyncio.timeout(self.timeout):
                pipe = self._redis.pipeline(transaction=False)
                pipe.info("server")
                pipe.script_exists(self._open_script.sha)
                info, cached = await pipe.execute(raise_on_error=False)
        except self._failures as exc:
            raise self._unavailable(exc) from exc
        raise_swallowed_cancel(cancels)
        # Without the right to ask (an ACL), assume the worst: a flush under running turns.
        uptime = float(info.get("uptime_in_seconds", 0)) if isinstance(info, dict) else 0.0
        marked = bool(cached[0]) if isinstance(cached, list) and cached else True
        fence = first_fence(self.lease, uptime, marked)
        await self._run(self._open_script, [], [self.prefix, round(fence * 1000)])
        self._opened = True

    async def _enter(self, hold: RedisHold) -> int:
        if not self._opened:
            await self._open()
        loop = asyncio.get_running_loop()
        sent = loop.time()
        args: list[str | int] = [
            self.prefix,
            hold.ticket,
            self._lease_ms,
            self.max_waiting,
            self._fence_ms,
            self._ttl_ms,
        ]
        code = int(await self._run(self._enter_script, [hold.queue], args))
        self._refreshed(sent)
        return code

    async def _check(self, hold: RedisHold) -> int:
        args: list[str | int] = [self.prefix, hold.ticket, self._fence_ms, self._ttl_ms, self._lease_ms]
        return int(await self._run(self._check_script, [hold.queue], args))

    async def _release(self, queue: str, ticket: str) -> None:
        """Release now (a turn's exit); on failure or cancellation, leave it to the background."""
        try:
            await self._run(self._release_script, [queue], self._release_args(ticket, False))
        except ServiceUnavailable:
            self._release_later(queue, ticket, tomb=False)
        except asyncio.CancelledError:
            self._release_later(queue, ticket, tomb=False)
            raise

    def _release_args(self, ticket: str, tomb: bool) -> list[str | int]:
        return [self.prefix, ticket, "1" if tomb else "0", self._fence_ms, self._ttl_ms]

    def _release_later(self, queue: str, ticket: str, *, tomb: bool) -> None:
        """Hand a release to the background task (retried until Redis takes it)."""
        self._pending[ticket] = (queue, tomb)
        self._ensure_maintainer()
        if self._kick is not None:
            self._kick.set()

    def _new_ticket(self) -> str:
        self._issued += 1
        return f"{self.worker}:{self._issued:x}"

    def _ensure_maintainer(self) -> None:
        if not self._closed and (self._maintainer is None or self._maintainer.done()):
            self._maintainer = asyncio.get_running_loop().create_task(self._maintain())

    def _ensure_listener(self) -> None:
        if not self._closed and (self._listener is None or self._listener.done()):
            self._listener = asyncio.get_running_loop().create_task(self._listen())

    async def _flush(self) -> None:
        """Do the pending releases, oldest first; stop at the first that fails."""
        for ticket, (queue, tomb) in list(self._pending.items()):
            await self._run(self._release_script, [queue], self._release_args(ticket, tomb))
            self._pending.pop(ticket, None)

    async def _renew(self) -> None:
        """Renew the worker's lease and check that each holding ticket still holds."""
        loop = asyncio.get_running_loop()
        held = [hold for hold in self._holds.values() if hold.holding]
        keys = [self._worker_key, *(hold.queue for hold in held)]
        args: list[str | int] = [self.prefix, self._lease_ms, self._fence_ms, self._ttl_ms, self._issued]
        args.extend(hold.ticket for hold in held)
        args.extend(hold.ticket for hold in self._holds.values() if not hold.holding)
        sent = loop.time()
        lost = await self._run(self._renew_script, keys, args)
        self._refreshed(sent)
        for raw in lost:
            hold = self._holds.get(raw.decode() if isinstance(raw, bytes) else str(raw))
            if hold is not None:
                logger.warning("session %r: its turn no longer holds it in Redis; stopping it", hold.key)
                hold.lose(SessionLost("The turn was stopped: its session was lost in the session store."))

    def _lapse(self) -> None:
        """The lease may expire in Redis: end every turn of this worker before it does."""
        self._lapsed = True
        logger.warning("the session lease could not be renewed in time; stopping this worker's turns")
        for hold in list(self._holds.values()):
            if hold.holding:
                hold.lose(SessionLost("The turn was stopped: the session store (Redis) cannot be reached."))
            else:
                hold.lose(ServiceUnavailable(UNAVAILABLE))

    async def _maintain(self) -> None:
        """While this worker has tickets: renew the lease, watch its expiry, retry releases."""
        loop = asyncio.get_running_loop()
        kick = self._kick = asyncio.Event()
        next_renew = loop.time() + self._renew_every  # the enter that started us set the lease
        while (self._holds or self._pending) and not self._closed:
            kick.clear()
            if self._pending:
                with contextlib.suppress(ServiceUnavailable):
                    await self._flush()
            if self._holds and loop.time() >= next_renew:
                try:
                    await self._renew()
                except ServiceUnavailable:
                    next_renew = loop.time() + self._retry
                else:
                    next_renew = loop.time() + self._renew_every
            if self._holds and not self._lapsed and loop.time() >= self._valid_until - self._margin:
                self._lapse()
            wake_at = next_renew if self._holds else loop.time() + self._retry
            if self._holds and not self._lapsed:
                wake_at = min(wake_at, self._valid_until - self._margin)
            if self._pending:
                wake_at = min(wake_at, loop.time() + self._retry)
            if kick.is_set():
                continue
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout_at(wake_at):
                    await kick.wait()
        self._lapsed = True  # no tickets left: the next enter starts a lease afresh

    async def _listen(self) -> None:
        """While this worker has waiters: hand each wake-up to its waiting turn."""
        while self._waiting > 0 and not self._closed:
            try:
                item = await self._wake_redis.blpop([self._wake_key], timeout=WAKE_BLOCK)
            except self._failures:
                await asyncio.sleep(self._retry)  # waiters re-check their queues meanwhile
                continue
            if item is not None:
                raw = item[1]
                hold = self._holds.get(raw.decode() if isinstance(raw, bytes) else str(raw))
                if hold is not None:
                    hold.wake()
