"""A client that goes away closes the upstream request at once, and its turn is not kept."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from tests.agents.conftest import Relay
from tests.support.upstream import FakeUpstream, answer, chunk, raw, silent

pytestmark = pytest.mark.asyncio

CHAT = "/v1/chat/completions"
#: Only a guard against hanging: the tests wait on the upstream's own "closed" event.
PROMPTLY = 2.0


async def next_turn_sees(client: httpx.AsyncClient, upstream: FakeUpstream) -> list[dict[str, str]]:
    """Run one more turn on the session; what the upstream was sent for it."""
    upstream.will(answer("fine"))
    response = await client.post(CHAT, json={"messages": [{"role": "user", "content": "next"}]})
    assert response.status_code == 200, response.text
    return upstream.last.messages


async def test_disconnect_mid_stream_closes_the_upstream_request(
    relay: Relay, upstream: FakeUpstream
) -> None:
    upstream.will(raw(chunk({"role": "assistant", "content": "first"}), then="stall"))
    client = await relay()
    body = {"messages": [{"role": "user", "content": "gone"}], "stream": True}
    async with client.stream("POST", CHAT, json=body) as response:
        async for piece in response.aiter_raw():
            if b"first" in piece:
                break
    await asyncio.wait_for(upstream.closed.wait(), PROMPTLY)
    assert await next_turn_sees(client, upstream) == [{"role": "user", "content": "next"}]


async def test_disconnect_before_the_first_token_closes_the_upstream_request(
    relay: Relay, upstream: FakeUpstream
) -> None:
    upstream.will(silent())
    client = await relay()
    request = asyncio.create_task(client.post(CHAT, json={"messages": [{"role": "user", "content": "gone"}]}))
    await upstream.arrived.wait()
    request.cancel()
    await asyncio.wait_for(upstream.closed.wait(), PROMPTLY)
    assert await next_turn_sees(client, upstream) == [{"role": "user", "content": "next"}]
