"""A client that goes away cancels its agent turn promptly, on both stacks."""

from __future__ import annotations

import asyncio

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
