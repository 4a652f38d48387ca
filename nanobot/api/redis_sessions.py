"""Per-session turn order shared by every worker and host through one Redis (``--redis-url``).

:class:`RedisSessions` is the :class:`~nanobot.api.sessions.Sessions` of a fleet: turns of one
session run one at a time, in arrival order, whichever worker or host took them; different
sessions run in parallel; the queue limit (429 ``session_busy`` past ``max_waiting`` waiting
turns) is counted over the fleet. It needs Redis 6.2+ (one server, or a primary: not Redis
Cluster) with ``maxmemory-policy noeviction``: an evicted key would free a session early.

Keys (``P`` is the prefix, ``W`` a worker, one :class:`RedisSessions`; a ticket is ``W:n``):

- ``P:q:SESSION``: the session's queue, a list of tickets in arrival order. The head holds the
  session; the others wait. It expires ``3 * lease`` after it was last touched (garbage of
  dead workers goes away by itself), but live tickets touch it far more often than that.
- ``P:w:W``: the worker's lease, the set of its live tickets, expiring ``lease`` seconds after
  it was last renewed: a ticket is alive while it is in there. Enter adds the ticket and
  renews the lease, release removes it; while the worker has tickets it renews the lease every
  ``lease / 3`` s and sets its members to exactly the tickets it knows are live (a ticket it
  forgot, say one a stale snapshot brought back, dies then). One key per worker, not per
  ticket: renewal is one call however many turns the worker runs or queues.
- ``P:wake:W``: the worker's wake-up list. Whoever makes a ticket the head of its queue (the
  releaser, or a newcomer removing dead heads) pushes the ticket here; the worker's one
  listener (``BLPOP``, only while it has waiters) hands it to the waiting turn, which then holds
  the session with no further round trip. A waiter also re-checks its queue every
  ``min(1, lease / 4)`` s: that is how a dead holder is removed once its lease expired, and how
  a lost wake-up is made up for.
- ``P:x:TICKET``: a tombstone, written when a waiter gave up while a call for its ticket was in
  flight, so that call (an enter or a re-check reaching Redis after the clean-up, as from a
  connection that was cut while Redis hung) cannot put the ticket back.
- ``P:epoch`` and ``P:fence``: ``P:epoch`` is never expired; a worker writes it when it first
  meets Redis (see below), so a worker that finds it missing later knows Redis lost its data (a
  restart without persistence, a flush). Then ``P:fence`` stands for ``lease / 2`` s, during
  which no turn starts: each holder that was running puts its ticket back at the head of its
  queue on its next renewal (at most ``lease / 3`` away), so a turn that was running is never
  joined by a second one.

A worker's first contact (its first turn) tells a fresh Redis from one that lost its data
under running turns, as far as Redis allows. The worker asks Redis its uptime and whether the
fleet's marker script (``_OPEN`` with the prefix in a comment) is in its script cache, then runs
that script, which writes ``P:epoch`` if it is missing, with a fence when needed:

- the epoch is there: nothing was lost since the fleet began; no fence.
- no epoch but the marker is cached: the keys were flushed (``FLUSHALL`` keeps scripts) while
  the fleet may be running turns: a fence of ``lease / 2`` s.
- no epoch, no marker: a fresh Redis, or one restarted empty. The two are the same bytes (an
  empty keyspace, an empty script cache, a new run id), so they cannot be told apart; but a
  restart also cut every holder's connections, and each holder renews within ``lease / 3`` s
  of Redis being back. So the fence only lasts until Redis is ``lease / 2`` s old: none at all
  for a Redis started earlier (a fleet deployed on a running Redis), ``lease / 2`` less its
  uptime for a younger one.

Every step is one Lua script (atomic): enter (refuse past the limit, or queue), re-check, renew,
release (pop our ticket if it is the head, remove dead heads, wake the next live one). An
uncontended turn costs three round trips: ``LLEN`` for :meth:`RedisSessions.check`, the enter
script, the release script.

Failures:

- Redis down, unreachable, hung or failing at the socket level (a timeout, an ``OSError``):
  :meth:`~RedisSessions.check` and entering a hold raise :class:`ServiceUnavailable` (503
  ``service_unavailable``, ``Retry-After: 1``) within ``timeout`` (0.4 s by default), never a
  hang and never a 500; connections are made afresh once Redis is back, so service resumes by
  itself.
- A pooled connection that died while idle (a Redis restart, ``CLIENT KILL``, a proxy or a
  failover dropping idle connections) is replaced on use: a call that meets a closed connection
  is sent once more on a fresh one (only then: a timeout is not retried). Every script is safe to
  run twice (a retried enter finds its ticket queued and does not queue it again).
- A waiter whose re-check fails keeps its place and retries. A holder keeps running while its
  renewals are retried (every ``min(0.2, lease / 20)`` s): Redis being away does not by itself
  free its session, as no other worker can take it then either. But once the worker's lease
  may expire in Redis (``lease`` after the last renewal Redis acknowledged, less a margin of
  ``min(1, lease / 4)`` s for the turn to stop), every turn of the worker ends: a holding turn
  is cancelled and its client gets :class:`SessionLost` (503 ``session_lost``, as an error event
  mid-stream), a waiting one gets :class:`ServiceUnavailable`. So a turn never runs on past its
  lease into another worker's turn of the same session. A renewal that finds the worker's
  ticket no longer at the head of its queue (and Redis did not lose its data) ends that turn
  the same way.
- A release that cannot reach Redis is retried in the background until it succeeds; meanwhile
  the lease keeps the ticket alive, or lets it expire if the worker dies.
- A waiter cancelled or timed out, also in the middle of a round trip, leaves no ticket behind:
  the clean-up runs in the worker's background task, not in the cancelled one.
- A worker that dies (SIGKILL) stops renewing its lease: its tickets are dead ``lease`` seconds
  later, and the next waiter's re-check (or the next newcomer) removes them. So a dead holder
  frees its session within ``lease + min(1, lease / 4)`` s of its last renewal; a dead waiter
  that reaches the head is skipped the same way (at once, if its lease had already expired).

The default lease, 5 s, keeps that recovery within a few seconds (at most about 6 s) while
tolerating about 2-4 s without a renewal (a stalled event loop, a slow or briefly unreachable
Redis) before running turns are stopped; renewing every 1.7 s costs one call per worker.

``redis`` is imported only when a store is made, so the core stays importable without it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import weakref
from typing import TYPE_CHECKING, Any

from nanobot.api.errors import APIError, Overloaded

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from redis.commands.core import AsyncScript

logger = logging.getLogger("nanobot.api")

#: Seconds one Redis call may take, connecting included, before it counts as Redis being down.
DEFAULT_TIMEOUT = 0.4
#: Seconds a worker's lease lives without a renewal (see the module docstring).
DEFAULT_LEASE = 5.0
#: Seconds the wake-up listener blocks in ``BLPOP`` at a time.
WAKE_BLOCK = 1.0
#: What the scripts return: the ticket holds the session, was refused (queue full), or had
#: been given up (tombstone). Any other positive number: wait, re-checking within that many ms.
HELD, REFUSED, GONE = 0, -1, -2
UNAVAILABLE = "The session store (Redis) cannot be reached; try again shortly."


class ServiceUnavailable(APIError):
    """A store the server needs (Redis) cannot be reached now: 503, try again shortly."""

    status = 503
    type = "server_error"
    default_code = "service_unavailable"
    retry_after = 1


class SessionLost(ServiceUnavailable):
    """A running turn was stopped: its session's lease could not be kept in Redis."""

    default_code = "session_lost"
    agent_started = True


def redis_client(url: str, *, timeout: float, read_timeout: float | None = None) -> Redis:
    """An asyncio Redis client for ``url`` that fails fast: short timeouts, and one retry on a
    fresh connection for a call that met a closed one (a pooled connection that died while idle).

    Raises :class:`ValueError` for a URL that is not a Redis URL, or when ``redis`` is missing.
    """
    if not url.startswith(("redis://", "rediss://", "unix://")):
        raise ValueError(f"a Redis URL starts with redis://, rediss:// or unix://, not {url!r}")
    try:
        from redis.asyncio import Redis
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff
        from redis.exceptions import ConnectionError as RedisConnectionError
    except ImportError as exc:  # pragma: no cover - the dev install has it
        raise ValueError("Redis support needs the redis package: pip install 'nanobot-api[redis]'") from exc
    # Socket timeouts below the call budget, so a dead server surfaces as a Redis error.
    socket_timeout = timeout * 0.75
    return Redis.from_url(
        url,
        socket_connect_timeout=socket_timeout,
        socket_timeout=read_timeout if read_timeout is not None else socket_timeout,
        retry=Retry(NoBackoff(), 1, (RedisConnectionError,)),
    )


def redis_failures() -> tuple[type[BaseException], ...]:
    """What a Redis call raises when Redis is down, slow or refusing (timeouts included)."""
    from redis.exceptions import RedisError

    return (RedisError, OSError, TimeoutError)


def cancel_requests() -> int:
    """How many cancellations of the current task are pending (see :func:`raise_swallowed_cancel`)."""
    task = asyncio.current_task()
    return task.cancelling() if task is not None else 0


def raise_swallowed_cancel(before: int) -> None:
    """Raise the cancellation a Redis call swallowed: on Python 3.11, ``asyncio.wait_for`` (which
    redis-py awaits its socket writes with) drops a cancellation that lands as the write ends, and
    the call returns as if nothing happened. A cancelled turn must still end, and clean up."""
    task = asyncio.current_task()
    if task is not None and task.cancelling() > before:
        raise asyncio.CancelledError


# -- the scripts --------------------------------------------------------------------------------
# ARGV[1] is always the prefix. Tickets are "WORKER:N"; a ticket is alive while P:w:WORKER exists.

_PRELUDE = """
local P = ARGV[1]
local function worker(t) return string.match(t, '^[^:]+') end
local function lease(t) return P .. ':w:' .. worker(t) end
local function alive(t) return redis.call('sismember', lease(t), t) == 1 end
local function fenced(window)
  if redis.call('exists', P .. ':epoch') == 0 then
    redis.call('set', P .. ':epoch', '1')
    redis.call('set', P .. ':fence', '1', 'px', window)
    return true
  end
  return redis.call('exists', P .. ':fence') == 1
end
local function settle(q, me, changed, fence, ttl)
  local head = redis.call('lindex', q, 0)
  while head and not alive(head) do
    redis.call('lpop', q)
    changed = true
    head = redis.call('lindex', q, 0)
  end
  if changed and head and head ~= me and not fence then
    local k = P .. ':wake:' .. worker(head)
    redis.call('rpush', k, head)
    redis.call('pexpire', k, ttl)
  end
  return head
end
local WAIT = 3600000
"""

#: KEYS: queue. ARGV: prefix, ticket, lease ms, max waiting, fence ms, ttl ms. A ticket already
#: queued (a retried call) is not queued again.
_ENTER = (
    _PRELUDE
    + """
local q, t, ttl = KEYS[1], ARGV[2], ARGV[6]
if redis.call('exists', P .. ':x:' .. t) == 1 then return -2 end
redis.call('sadd', lease(t), t)
redis.call('pexpire', lease(t), ARGV[3])
local fence = fenced(ARGV[5])
settle(q, t, false, fence, ttl)
local pos = redis.call('lpos', q, t)
if pos then
  if pos > 0 then return WAIT end
  if fence then return redis.call('pttl', P .. ':fence') + 1 end
  return 0
end
local queued = redis.call('llen', q)
if queued > tonumber(ARGV[4]) then return -1 end
redis.call('rpush', q, t)
redis.call('pexpire', q, ttl)
if queued > 0 then return WAIT end
if fence then return redis.call('pttl', P .. ':fence') + 1 end
return 0
"""
)

#: KEYS: queue. ARGV: prefix, ticket, fence ms, ttl ms, lease ms. A ticket no longer queued
#: (removed as dead, or Redis lost its data) is queued again at the tail.
_CHECK = (
    _PRELUDE
    + """
local q, t, ttl = KEYS[1], ARGV[2], ARGV[4]
if redis.call('exists', P .. ':x:' .. t) == 1 then return -2 end
redis.call('sadd', lease(t), t)
redis.call('pexpire', lease(t), ARGV[5])
local fence = fenced(ARGV[3])
local head = settle(q, t, false, fence, ttl)
if head ~= t and not redis.call('lpos', q, t) then
  redis.call('rpush', q, t)
  if not head then head = t end
end
redis.call('pexpire', q, ttl)
if head ~= t then return WAIT end
if fence then return redis.call('pttl', P .. ':fence') + 1 end
return 0
"""
)

#: KEYS: worker lease, then the queue of each held ticket. ARGV: prefix, lease ms, fence ms,
#: ttl ms, the last ticket number issued, then the held tickets, then the other live ones.
#: The lease becomes exactly the live tickets (tickets issued after the call was sent are left
#: alone), so one the worker forgot (a stale snapshot restored it) is dead from now on.
#: Returns the tickets that no longer hold their session. A ticket missing from its queue goes
#: back to the head when the queue is empty or Redis just lost its data (the fence stands:
#: nobody else can have started).
_RENEW = (
    _PRELUDE
    + """
local issued, live = tonumber(ARGV[5]), {}
for i = 6, #ARGV do live[ARGV[i]] = true end
for _, m in ipairs(redis.call('smembers', KEYS[1])) do
  if not live[m] and tonumber(string.match(m, ':(%x+)$'), 16) <= issued then
    redis.call('srem', KEYS[1], m)
  end
end
for i = 6, #ARGV do redis.call('sadd', KEYS[1], ARGV[i]) end
redis.call('pexpire', KEYS[1], ARGV[2])
local fence = fenced(ARGV[3])
local lost = {}
for i = 2, #KEYS do
  local q, t = KEYS[i], ARGV[i + 4]
  local head = redis.call('lindex', q, 0)
  if head ~= t then
    if not head or (fence and not redis.call('lpos', q, t)) then
      redis.call('lpush', q, t)
    else
      lost[#lost + 1] = t
    end
  end
  redis.call('pexpire', q, ARGV[4])
end
return lost
"""
)

#: KEYS: queue. ARGV: prefix, ticket, tombstone ("1" or "0"), fence ms, ttl ms.
_RELEASE = (
    _PRELUDE
    + """
local q, t, ttl = KEYS[1], ARGV[2], ARGV[5]
if ARGV[3] == '1' then redis.call('set', P .. ':x:' .. t, '1', 'px', ttl) end
redis.call('srem', lease(t), t)
local fence = fenced(ARGV[4])
if redis.call('lindex', q, 0) == t then
  redis.call('lpop', q)
  settle(q, t, true, fence, ttl)
  return 1
end
return redis.call('lrem', q, 1, t)
"""
)


#: ARGV: prefix, fence ms (0: none). A worker's first contact: writes the epoch if it is missing,
#: with a fence of that length. Its presence in the script cache marks a Redis the fleet used.
_OPEN = """
local P = ARGV[1]
if redis.call('exists', P .. ':epoch') == 1 then return 0 end
redis.call('set', P .. ':epoch', '1')
local window = tonumber(ARGV[2])
if window > 0 then redis.call('set', P .. ':fence', '1', 'px', window) end
return window
"""


def open_script(prefix: str) -> str:
    """The fleet's marker script: :data:`_OPEN` with the prefix in a comment (one per fleet)."""
    return f"{_OPEN}-- fleet {prefix.encode().hex()}\n"


def first_fence(lease: float, uptime: float, marked: bool) -> float:
    """Seconds to fence when a worker's first contact finds no epoch (see the module docstring):
    ``lease / 2`` after a flush (``marked``), else until Redis is ``lease / 2`` s old."""
    return lease / 2 if marked else max(0.0, lease / 2 - uptime)


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
        self._enter_script: AsyncScript = self._redis.register_script(_ENTER)
        self._check_script: AsyncScript = self._redis.register_script(_CHECK)
        self._renew_script: AsyncScript = self._redis.register_script(_RENEW)
        self._release_script: AsyncScript = self._redis.register_script(_RELEASE)
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
