"""Per-session turn order in Redis, against a real redis-server: FIFO across workers, the shared
queue limit, dead workers (SIGKILL), cancelled waiters, Redis down, hung, restarted and flushed,
connections killed while idle, and listeners that are no Redis at all."""

from __future__ import annotations

import asyncio
import functools
import itertools
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from typing import Any

import httpx
import pytest
import pytest_asyncio
import redis.asyncio

from nanobot.api.redis_sessions import RedisHold, RedisSessions, ServiceUnavailable, SessionLost
from nanobot.core.errors import Overloaded
from tests.conformance.conftest import Serve, serve, stack
from tests.support.agents import ScriptedAgent
from tests.support.redis import RedisServer, broken_redis, redis_server

__all__ = ["redis_server", "serve", "stack"]

pytestmark = pytest.mark.asyncio

LEASE = 1.0
#: Most seconds Redis being down may take to become a 503.
FAIL_FAST = 0.5
_PREFIXES = itertools.count()

Make = Callable[..., RedisSessions]


@pytest.fixture
def prefix() -> str:
    return f"t{os.getpid()}-{next(_PREFIXES)}"


@pytest_asyncio.fixture
async def make(redis_server: RedisServer, prefix: str) -> AsyncIterator[Make]:
    """``make(**options)``: a worker (a :class:`RedisSessions`) on the test's Redis and prefix."""
    made: list[RedisSessions] = []

    def build(**options: Any) -> RedisSessions:
        sessions = RedisSessions(redis_server.url, **{"lease": LEASE, "prefix": prefix, **options})
        made.append(sessions)
        return sessions

    yield build
    for sessions in made:
        await sessions.aclose()


@pytest_asyncio.fixture
async def peek(redis_server: RedisServer) -> AsyncIterator[redis.asyncio.Redis]:
    """A plain client, to look at what the workers keep in Redis."""
    client = redis.asyncio.Redis.from_url(redis_server.url, decode_responses=True)
    yield client
    await client.aclose()


async def until(condition: Callable[[], Awaitable[bool]], timeout: float = 10.0) -> None:
    """Poll ``condition`` until it holds; fail after ``timeout`` seconds."""
    async with asyncio.timeout(timeout):
        while not await condition():  # noqa: ASYNC110 - polling Redis state: no event to wait on
            await asyncio.sleep(0.005)


async def queue(peek: redis.asyncio.Redis, sessions: RedisSessions, key: str) -> list[str]:
    return [str(ticket) for ticket in await peek.lrange(sessions.queue_key(key), 0, -1)]


async def entered(stack: AsyncExitStack, sessions: RedisSessions, key: str) -> RedisHold:
    hold = sessions.hold(key)
    await stack.enter_async_context(hold)
    return hold


async def test_turns_of_one_session_run_one_at_a_time_in_arrival_order_across_workers(
    make: Make, peek: redis.asyncio.Redis
) -> None:
    first, second = make(), make()
    order: list[int] = []
    inside = 0

    async def turn(sessions: RedisSessions, index: int) -> None:
        nonlocal inside
        async with sessions.hold("s"):
            inside += 1
            assert inside == 1, "two turns of one session overlapped"
            order.append(index)
            await asyncio.sleep(0)  # let the others try to get in
            inside -= 1

    async with AsyncExitStack() as stack:
        holder = await entered(stack, first, "s")
        turns = []
        for index in range(8):  # arrivals interleaved between the two workers
            turns.append(asyncio.create_task(turn(second if index % 2 == 0 else first, index)))
            await until(functools.partial(_has, peek, first, "s", index + 2))
        assert order == []
        tickets = await queue(peek, first, "s")
        assert tickets[0] == holder.ticket
    async with asyncio.timeout(10):
        await asyncio.gather(*turns)
    assert order == list(range(8))
    assert await peek.exists(first.queue_key("s")) == 0


async def _has(peek: redis.asyncio.Redis, sessions: RedisSessions, key: str, length: int) -> bool:
    queued: int = await peek.llen(sessions.queue_key(key))
    return queued == length


async def test_different_sessions_run_in_parallel(make: Make) -> None:
    first, second = make(), make()
    async with asyncio.timeout(10), first.hold("a"), second.hold("b"), first.hold("c"):
        pass  # all three held at once


async def test_the_queue_limit_is_shared_by_the_workers(make: Make, peek: redis.asyncio.Redis) -> None:
    first, second = make(max_waiting=2), make(max_waiting=2)
    async with AsyncExitStack() as stack:
        await entered(stack, first, "s")
        waiters = [asyncio.create_task(_hold_once(second, "s")), asyncio.create_task(_hold_once(first, "s"))]
        await until(lambda: _has(peek, first, "s", 3))
        for sessions in (first, second):
            with pytest.raises(Overloaded) as refused:
                await sessions.check("s")
            assert refused.value.status == 429
            assert refused.value.code == "session_busy"
            assert refused.value.headers()["Retry-After"] == "1"
            with pytest.raises(Overloaded):  # entering refuses atomically too (a race past check)
                async with sessions.hold("s"):
                    pass
        await first.check("other")  # other sessions are not affected
    async with asyncio.timeout(10):
        await asyncio.gather(*waiters)
    await first.check("s")
    assert await peek.exists(first.queue_key("s")) == 0


async def _hold_once(sessions: RedisSessions, key: str) -> None:
    async with sessions.hold(key):
        pass


CHILD = """
import asyncio, sys
from nanobot.api.redis_sessions import RedisSessions

async def main(url, prefix, lease, role):
    sessions = RedisSessions(url, prefix=prefix, lease=float(lease))
    print("worker", sessions.worker, flush=True)
    async with sessions.hold("s"):
        print("held", flush=True)
        await asyncio.Event().wait()

asyncio.run(main(*sys.argv[1:]))
"""


class Child:
    """A worker in a process of its own, to be SIGKILLed."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.worker = ""

    @classmethod
    async def start(cls, url: str, prefix: str) -> Child:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-c", CHILD, url, prefix, str(LEASE), "hold", stdout=asyncio.subprocess.PIPE
        )
        child = cls(process)
        child.worker = (await child.line()).removeprefix("worker ")
        return child

    async def line(self) -> str:
        assert self.process.stdout is not None
        async with asyncio.timeout(10):
            return (await self.process.stdout.readline()).decode().strip()

    async def kill(self) -> None:
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGKILL)
        await self.process.wait()


async def test_a_killed_holder_frees_the_session_within_its_lease_and_never_overlaps(
    make: Make, peek: redis.asyncio.Redis, redis_server: RedisServer, prefix: str
) -> None:
    child = await Child.start(redis_server.url, prefix)
    try:
        assert await child.line() == "held"
        sessions = make()
        acquired = asyncio.Event()

        async def next_turn() -> None:
            async with sessions.hold("s"):
                acquired.set()

        waiter = asyncio.create_task(next_turn())
        await until(lambda: _has(peek, sessions, "s", 2))
        # The holder lives on past its first lease, renewing it; the waiter waits all along.
        lease_key = f"{prefix}:w:{child.worker}"
        renewals, last = 0, await peek.pttl(lease_key)
        async with asyncio.timeout(10):
            while renewals < 4:  # four renewals: more than one whole lease went by
                left = await peek.pttl(lease_key)
                assert left > 0, "the live holder's lease expired"
                renewals += left > last
                last = left
                assert not acquired.is_set(), "a turn started while the holder was alive"
                await asyncio.sleep(0.005)
        await child.kill()
        killed = time.monotonic()
        assert not acquired.is_set()
        async with asyncio.timeout(10):
            await acquired.wait()
        freed = time.monotonic() - killed
        assert freed < LEASE + sessions.poll + 1.0, freed
        await waiter
    finally:
        await child.kill()


async def test_a_killed_waiter_is_skipped(
    make: Make, peek: redis.asyncio.Redis, redis_server: RedisServer, prefix: str
) -> None:
    sessions = make()
    async with AsyncExitStack() as stack:
        await entered(stack, sessions, "s")
        child = await Child.start(redis_server.url, prefix)
        try:
            await until(lambda: _has(peek, sessions, "s", 2))
            await child.kill()
        finally:
            await child.kill()
        after = asyncio.create_task(_hold_once(sessions, "s"))
        await until(lambda: _has(peek, sessions, "s", 3))
    released = time.monotonic()
    async with asyncio.timeout(10):
        await after
    assert time.monotonic() - released < LEASE + sessions.poll + 1.0
    assert await peek.exists(sessions.queue_key("s")) == 0


async def test_a_waiter_cancelled_at_any_point_leaves_no_ticket_behind(
    make: Make, peek: redis.asyncio.Redis
) -> None:
    first, second = make(), make()
    async with AsyncExitStack() as stack:
        holder = await entered(stack, first, "s")
        for yields in range(12):  # before the enter is sent, while it is in flight, while waiting
            waiter = asyncio.create_task(_hold_once(second, "s"))
            for _ in range(yields):
                await asyncio.sleep(0)
            waiter.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiter
        waiter = asyncio.create_task(_hold_once(second, "s"))  # and one surely waiting
        await until(lambda: _has(peek, first, "s", 2))
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter

        async def only_the_holder() -> bool:
            return await queue(peek, first, "s") == [holder.ticket] and not second._pending

        await until(only_the_holder)
    async with asyncio.timeout(10):
        await _hold_once(second, "s")  # nothing left in the way
    assert await peek.exists(first.queue_key("s")) == 0


async def test_a_timed_out_waiter_leaves_no_ticket_behind(make: Make, peek: redis.asyncio.Redis) -> None:
    sessions = make()
    async with AsyncExitStack() as stack:
        await entered(stack, sessions, "s")
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.05):
                await _hold_once(sessions, "s")
        await until(lambda: _has(peek, sessions, "s", 1))


async def _fails_fast(attempt: Callable[[], Awaitable[object]]) -> ServiceUnavailable:
    started = time.monotonic()
    with pytest.raises(ServiceUnavailable) as failed:
        await attempt()
    assert time.monotonic() - started < FAIL_FAST
    return failed.value


async def test_redis_down_or_hung_is_a_fast_503_and_service_resumes(
    make: Make, redis_server: RedisServer
) -> None:
    sessions = make()
    await _hold_once(sessions, "s")  # connections are open and pooled
    for outage, back in ((redis_server.pause, redis_server.resume), (redis_server.stop, redis_server.start)):
        outage()
        for attempt in (lambda: sessions.check("s"), lambda: _hold_once(sessions, "s")):
            error = await _fails_fast(attempt)
            assert error.status == 503
            assert error.to_body()["error"]["code"] == "service_unavailable"
            assert error.to_body()["error"]["type"] == "server_error"
            assert error.headers() == {"Retry-After": "1"}
        back()
        async with asyncio.timeout(10):
            await sessions.check("s")
            await _hold_once(sessions, "s")


async def test_a_holder_that_cannot_renew_stops_before_its_lease_expires(
    make: Make, redis_server: RedisServer
) -> None:
    sessions = make()
    inside = asyncio.Event()
    stopped = 0.0

    async def long_turn() -> None:
        nonlocal stopped
        async with sessions.hold("s"):
            inside.set()
            try:
                await asyncio.Event().wait()
            finally:
                stopped = time.monotonic()

    turn = asyncio.create_task(long_turn())
    await inside.wait()
    redis_server.pause()
    paused = time.monotonic()
    with pytest.raises(SessionLost) as lost:
        async with asyncio.timeout(10):
            await turn
    assert stopped - paused < LEASE  # stopped before Redis could let another turn in
    assert lost.value.status == 503
    assert lost.value.to_body()["error"]["code"] == "session_lost"
    assert lost.value.headers() == {"Retry-After": "1", "x-should-retry": "false"}
    redis_server.resume()
    async with asyncio.timeout(10):
        await _hold_once(make(), "s")  # its release went through, or its lease ran out


async def test_after_a_redis_restart_the_running_turn_keeps_its_session_and_none_is_stuck(
    make: Make, peek: redis.asyncio.Redis, redis_server: RedisServer
) -> None:
    first, second = make(), make()
    stuck = make()
    async with AsyncExitStack() as stack:
        holder = await entered(stack, first, "s")
        waiter = asyncio.create_task(_hold_once(stuck, "s"))
        await until(lambda: _has(peek, first, "s", 2))
        redis_server.restart()  # empty: the queue, the leases, everything is gone
        after = asyncio.create_task(_hold_once(second, "s"))

        async def holder_reclaimed() -> bool:
            try:
                tickets = await queue(peek, first, "s")
            except redis.RedisError:
                return False
            return len(tickets) == 3 and tickets[0] == holder.ticket

        await until(holder_reclaimed)  # the holder is back at the head; both waiters behind it
        assert not after.done() and not waiter.done()
    async with asyncio.timeout(10):
        await asyncio.gather(after, waiter)
    async with asyncio.timeout(10):
        await _hold_once(second, "other")
    assert await peek.exists(first.queue_key("s")) == 0


async def test_the_api_answers_503_while_redis_is_down_then_serves_again(
    serve: Serve, redis_server: RedisServer, prefix: str
) -> None:
    sessions = RedisSessions(redis_server.url, lease=LEASE, prefix=prefix)
    client = await serve(ScriptedAgent(tokens=["hi"]), sessions=sessions)

    async def ask(stream: bool) -> httpx.Response:
        payload = {"messages": [{"role": "user", "content": "x"}], "session_id": "s", "stream": stream}
        return await client.post("/v1/chat/completions", json=payload)

    assert (await ask(False)).status_code == 200
    for outage, back in ((redis_server.stop, redis_server.start), (redis_server.pause, redis_server.resume)):
        outage()
        for stream in (False, True):
            started = time.monotonic()
            response = await ask(stream)
            assert time.monotonic() - started < FAIL_FAST
            assert response.status_code == 503, response.text
            assert response.json()["error"]["code"] == "service_unavailable"
            assert response.headers["retry-after"] == "1"
        back()
        ok = await ask(True)
        assert ok.status_code == 200 and "hi" in ok.text


async def test_a_ticket_its_live_worker_forgot_does_not_block_the_session(
    make: Make, peek: redis.asyncio.Redis
) -> None:
    """As after Redis restored a stale snapshot: a finished turn's ticket is back at the head of
    its queue, and its worker is alive and renewing its lease."""
    first, second = make(), make()
    await _hold_once(first, "warm")  # ticket 1: done
    async with AsyncExitStack() as stack:
        await entered(stack, first, "busy")  # ticket 2: held, so the worker renews its lease
        ghost = f"{first.worker}:1"
        await peek.rpush(first.queue_key("s"), ghost)
        await peek.sadd(f"{first.prefix}:w:{first.worker}", ghost)
        started = time.monotonic()
        async with asyncio.timeout(10):
            await _hold_once(second, "s")
        assert time.monotonic() - started < LEASE / 3 + second.poll + 1.0


FORK = """
import os, sys
from nanobot.api.redis_sessions import RedisSessions

sessions = RedisSessions(sys.argv[1])
pid = os.fork()
if pid == 0:
    print(sessions.worker, flush=True)
    os._exit(0)
os.waitpid(pid, 0)
print(sessions.worker, flush=True)
"""


async def test_a_forked_process_is_a_worker_of_its_own(redis_server: RedisServer) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", FORK, redis_server.url, stdout=asyncio.subprocess.PIPE
    )
    async with asyncio.timeout(10):
        out, _ = await process.communicate()
    child, parent = out.decode().split()
    assert child != parent


async def _old_enough(peek: redis.asyncio.Redis) -> bool:
    """Redis has been up ``lease / 2`` s: a fleet meeting it with no epoch is fresh."""
    uptime: int = (await peek.info("server"))["uptime_in_seconds"]
    return uptime >= LEASE / 2


async def test_a_fresh_fleet_starts_its_first_turns_without_a_fence(
    make: Make, peek: redis.asyncio.Redis, prefix: str
) -> None:
    await until(lambda: _old_enough(peek))
    first, second = make(), make()
    started = time.monotonic()
    async with asyncio.timeout(10):
        await _hold_once(first, "s")
        await _hold_once(second, "t")
    assert await peek.exists(f"{prefix}:epoch") == 1
    assert await peek.exists(f"{prefix}:fence") == 0
    assert time.monotonic() - started < LEASE / 2  # measured: 15 ms; a fence would be 500 ms


async def test_after_a_flush_a_newcomer_waits_for_the_running_turn(
    make: Make, peek: redis.asyncio.Redis
) -> None:
    await until(lambda: _old_enough(peek))  # so only the flush can fence the newcomer
    first = make()
    async with AsyncExitStack() as stack:
        holder = await entered(stack, first, "s")
        await peek.flushall()  # the keys go; the fleet's marker script stays
        after = asyncio.create_task(_hold_once(make(), "s"))  # a worker that never met Redis

        async def holder_reclaimed() -> bool:
            tickets = await queue(peek, first, "s")
            return len(tickets) == 2 and tickets[0] == holder.ticket

        await until(holder_reclaimed)  # the newcomer queued behind the running turn
        assert not after.done()
    async with asyncio.timeout(10):
        await after


async def _turns(sessions: RedisSessions, count: int = 20) -> list[BaseException | None]:
    async def one(key: str) -> None:
        await sessions.check(key)
        await _hold_once(sessions, key)

    async with asyncio.timeout(10):
        return await asyncio.gather(*(one(f"s{i}") for i in range(count)), return_exceptions=True)


async def test_connections_that_died_while_idle_are_replaced_before_use(
    make: Make, peek: redis.asyncio.Redis, redis_server: RedisServer
) -> None:
    sessions = make(timeout=2.0)  # replaced, not fast: 20 reconnections on a busy machine
    assert await _turns(sessions) == [None] * 20  # about 20 connections pooled
    await peek.client_kill_filter(_type="normal")  # all but ours, Redis up
    assert await _turns(sessions) == [None] * 20  # was 20 of 20 x 503
    redis_server.restart()
    assert await _turns(sessions) == [None] * 20  # once the fence has passed


async def test_the_api_serves_every_turn_after_its_redis_connections_died(
    serve: Serve, redis_server: RedisServer, peek: redis.asyncio.Redis, prefix: str
) -> None:
    sessions = RedisSessions(redis_server.url, lease=LEASE, prefix=prefix, timeout=2.0)
    client = await serve(ScriptedAgent(tokens=["hi"]), sessions=sessions)

    async def burst() -> list[int]:
        replies = await asyncio.gather(
            *(
                client.post(
                    "/v1/chat/completions",
                    json={"messages": [{"role": "user", "content": "x"}], "session_id": f"s{i}"},
                )
                for i in range(20)
            )
        )
        return [reply.status_code for reply in replies]

    assert await burst() == [200] * 20
    await peek.client_kill_filter(_type="normal")
    assert await burst() == [200] * 20
    redis_server.restart()
    assert await burst() == [200] * 20


@pytest.mark.parametrize("kind", ["silent", "closing"])
async def test_a_redis_that_hangs_or_fails_at_the_socket_level_is_a_503(serve: Serve, kind: str) -> None:
    async with broken_redis(kind) as url:
        client = await serve(ScriptedAgent(tokens=["hi"]), sessions=RedisSessions(url, lease=LEASE))
        for stream in (False, True):
            payload = {"messages": [{"role": "user", "content": "x"}], "session_id": "s", "stream": stream}
            started = time.monotonic()
            response = await client.post("/v1/chat/completions", json=payload)
            assert time.monotonic() - started < FAIL_FAST
            assert response.status_code == 503, response.text
            assert response.json()["error"]["code"] == "service_unavailable"
            assert response.headers["retry-after"] == "1"
