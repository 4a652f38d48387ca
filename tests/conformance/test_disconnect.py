"""A client that goes away cancels its agent turn promptly, on both stacks."""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import Any

import pytest

from tests.conformance.conftest import Serve
from tests.support.agents import GateAgent

pytestmark = pytest.mark.asyncio

BODY = {"messages": [{"role": "user", "content": "hi"}]}
#: The promise is "within 1 s"; the wait is on the agent's own cancellation event.
PROMPTLY = 1.0


async def test_disconnect_mid_stream_cancels_the_agent(serve: Serve) -> None:
    agent = GateAgent(before=["first"])
    client = await serve(agent)
    async with client.stream("POST", "/v1/chat/completions", json={**BODY, "stream": True}) as response:
        async for piece in response.aiter_raw():
            if b"first" in piece:
                break
    await asyncio.wait_for(agent.cancelled.wait(), PROMPTLY)
    assert agent.log == ["start hi"]


async def test_disconnect_while_agent_is_silent_cancels_it(serve: Serve) -> None:
    agent = GateAgent()
    client = await serve(agent, ping_interval=0)
    async with client.stream("POST", "/v1/chat/completions", json={**BODY, "stream": True}) as response:
        assert response.status_code == 200
        await agent.entered.wait()
    await asyncio.wait_for(agent.cancelled.wait(), PROMPTLY)


async def test_disconnect_during_non_streaming_turn_cancels_it(serve: Serve) -> None:
    agent = GateAgent()
    client = await serve(agent)
    request = asyncio.create_task(client.post("/v1/chat/completions", json=BODY))
    await agent.entered.wait()
    request.cancel()
    await asyncio.wait_for(agent.cancelled.wait(), PROMPTLY)


class Firehose:
    """Streams large tokens until cancelled."""

    def __init__(self) -> None:
        self.cancelled = asyncio.Event()

    async def process_direct(self, *, content: str, on_stream: Any = None, **kwargs: Any) -> str:
        try:
            while True:
                await on_stream("x" * 4096)
        except asyncio.CancelledError:
            self.cancelled.set()
            raise


async def test_a_client_that_stops_reading_is_dropped(serve: Serve, caplog: pytest.LogCaptureFixture) -> None:
    agent = Firehose()
    client = await serve(agent, write_timeout=0.2)
    host, port = client.base_url.host, client.base_url.port
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, (host, port))
    body = b'{"stream": true, "messages": [{"role": "user", "content": "go"}]}'
    request = (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
    )
    try:
        await asyncio.get_running_loop().sock_sendall(sock, request)
        # Never read: the server's buffers fill, its writes stall, the write timeout fires.
        await asyncio.wait_for(agent.cancelled.wait(), 10)
    finally:
        sock.close()
    await client.get("/health")  # the server has finished with the dropped stream
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
