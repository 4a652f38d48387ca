"""Run the real servers on loopback for tests: aiohttp AppRunner + SockSite, or uvicorn."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import uvicorn
from aiohttp import web

from nanobot.agents import Agent
from nanobot.api.asgi import create_asgi_app
from nanobot.api.server import create_app

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
async def run_server(stack: str, agent: Agent, **options: Any) -> AsyncIterator[str]:
    """Serve ``agent`` on ``stack`` at a free loopback port; yield the base URL."""
    sock = listening_socket()
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    if stack == "aiohttp":
        runner = web.AppRunner(create_app(agent, **options), access_log=None)
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
    )
    server = uvicorn.Server(config)
    # The socket already listens: connections queue in its backlog until uvicorn accepts them.
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        yield url
    finally:
        server.should_exit = True
        await task
