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
from nanobot.api.redis_sessions.scripts import GONE, HELD, REFUSED, first_fence, open_script
from nanobot.api.redis_sessions.store import DEFAULT_LEASE, WAKE_BLOCK, RedisSessions

__all__ = [
    "DEFAULT_LEASE",
    "DEFAULT_TIMEOUT",
    "GONE",
    "HELD",
    "REFUSED",
    "UNAVAILABLE",
    "WAKE_BLOCK",
    "RedisHold",
    "RedisSessions",
    "ServiceUnavailable",
    "SessionLost",
    "cancel_requests",
    "first_fence",
    "open_script",
    "raise_swallowed_cancel",
    "redis_client",
    "redis_failures",
]
