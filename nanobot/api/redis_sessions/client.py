"""The Redis client every store of the fleet uses, and what its failures become: a 503.

``redis`` is imported only when a client is made, so the core stays importable without it.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from nanobot.core.errors import APIError

if TYPE_CHECKING:
    from redis.asyncio import Redis

#: Seconds one Redis call may take, connecting included, before it counts as Redis being down.
DEFAULT_TIMEOUT = 0.4
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
