"""Run the real servers on loopback for tests: aiohttp AppRunner + SockSite, or uvicorn.

Both run with the request head limits ``nanobot serve`` uses (``limits``, defaults if None).
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import uvicorn
from aiohttp import web

from nanobot.agents import Agent
from nanobot.api.aiohttp_http import LimitedAppRunner
from nanobot.api.asgi import create_asgi_app
from nanobot.api.limits import HeadLimits
from nanobot.api.server import create_app
from nanobot.api.uvicorn_http import uvicorn_options

STACKS = ("aiohttp", "asgi")


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
    if stack == "aiohttp":
        runner = LimitedAppRunner(create_app(agent, **options), limits=limits, access_log=None)
        await runner.setup()
        await web.SockSite(runner, sock).start()
        try:
            yield url
        finally:
            await runner.cleanup()
        return
    config = uvicorn.Config(
        create_asgi_app(agent, **options),
        log_config=None,
        log_level="warning",
        lifespan="on",
        timeout_graceful_shutdown=2,
        **uvicorn_options(limits),
    )
    server = uvicorn.Server(config)
    # The socket already listens: connections queue in its backlog until uvicorn accepts them.
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        yield url
    finally:
        server.should_exit = True
        await task
