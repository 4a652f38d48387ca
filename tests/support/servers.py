"""Run the real servers on loopback for tests: aiohttp AppRunner + SockSite, or uvicorn.

Both run with the request head limits ``nanobot serve`` uses (``limits``, defaults if None).

Stopping is bounded, so a failing test ends its run instead of hanging in teardown: a test
server drains open turns for :data:`DRAIN` s (not the 30 s of ``nanobot serve``), either stack
waits at most :data:`GRACE` s for open connections before closing them, and the whole stop is cut
off after :data:`STOP_BOUND` s. :func:`end_leftover_tasks` then ends what a failed test left
behind (an agent that swallows its cancellation would otherwise keep the event loop from closing).
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from typing import Any

import uvicorn
from aiohttp import web

from nanobot.api.aiohttp_http import LimitedAppRunner
from nanobot.api.asgi import create_asgi_app
from nanobot.api.limits import HeadLimits
from nanobot.api.server import create_app
from nanobot.api.uvicorn_http import uvicorn_options
from nanobot.core.agent import Agent

STACKS = ("aiohttp", "asgi")

#: Bounds of a test server's stop: the drain of open turns, the wait for open connections, the whole.
DRAIN = 1.0
GRACE = 2
STOP_BOUND = 10.0
#: How long the tasks a test left get, once cancelled, before their coroutines are closed.
LEFTOVER_BOUND = 1.0


class StopTimeout(AssertionError):
    """A test server or a test's task did not end within its bound (a bug, reported as such)."""


def listening_socket() -> socket.socket:
    sock = socket.socket(
        socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP
    )  # so asyncio sets TCP_NODELAY
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    sock.setblocking(False)
    return sock


@asynccontextmanager
async def run_server(
    stack: str, agent: Agent, *, limits: HeadLimits | None = None, **options: Any
) -> AsyncIterator[str]:
    """Serve ``agent`` on ``stack`` at a free loopback port; yield the base URL."""
    sock = listening_socket()
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    limits = limits or HeadLimits()
    options.setdefault("drain_timeout", DRAIN)
    if stack == "aiohttp":
        app = create_app(agent, **options)
        runner = LimitedAppRunner(app, limits=limits, access_log=None, shutdown_timeout=GRACE)
        await runner.setup()
        await web.SockSite(runner, sock).start()
        try:
            yield url
        finally:
            await _bounded(runner.cleanup(), stack)
        return
    config = uvicorn.Config(
        create_asgi_app(agent, **options),
        log_config=None,
        log_level="warning",
        lifespan="on",
        timeout_graceful_shutdown=GRACE,
        **uvicorn_options(limits),
    )
    server = uvicorn.Server(config)
    # The socket already listens: connections queue in its backlog until uvicorn accepts them.
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        yield url
    finally:
        server.should_exit = True
        try:
            await _bounded(asyncio.shield(task), stack)
        except StopTimeout:
            server.force_exit = True
            task.cancel()
            raise
        finally:
            sock.close()


async def _bounded(stopping: Awaitable[None], stack: str) -> None:
    """Await a server's stop for at most :data:`STOP_BOUND` s; past it, fail the test."""
    try:
        async with asyncio.timeout(STOP_BOUND):
            await stopping
    except TimeoutError:
        raise StopTimeout(f"the {stack} test server did not stop within {STOP_BOUND:g} s") from None


async def end_leftover_tasks(bound: float = LEFTOVER_BOUND) -> None:
    """Cancel every task but this one (the test is over: its servers and clients are closed) and
    give them ``bound`` s to end, as the event loop's own close would, but bounded: the coroutine of
    a task still running then (it swallowed its cancellation) is closed, and the test fails
    naming it, instead of the loop's close waiting for it forever."""
    tasks = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
    for task in tasks:
        task.cancel()
    if not tasks:
        return
    _, stuck = await asyncio.wait(tasks, timeout=bound)
    for task in stuck:
        task.get_coro().close()
        task.cancel()  # its next step throws into the closed coroutine: the task ends at once
    if stuck:
        await asyncio.wait(stuck, timeout=bound)
        for task in stuck:
            if task.done() and not task.cancelled():
                task.exception()  # retrieved: the failure below says it, not a "never retrieved" log
        names = ", ".join(sorted(repr(task.get_coro()) for task in stuck))
        raise StopTimeout(f"{len(stuck)} task(s) ignored their cancellation for {bound:g} s: {names}")
