"""Two of our servers in a chain, driven by the openai SDK: nanobot(openai) -> nanobot(echo)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from openai import AsyncOpenAI

from nanobot.agents.echo import EchoAgent
from tests.agents.conftest import UPSTREAM_MODEL, make_agent
from tests.conformance.conftest import Serve
from tests.support.servers import run_server

pytestmark = pytest.mark.asyncio


@pytest_asyncio.fixture
async def sdk(serve: Serve, stack: str) -> AsyncIterator[AsyncOpenAI]:
    """The SDK on a relay whose upstream is another nanobot serving the echo agent."""
    async with run_server(stack, EchoAgent(), model_name=UPSTREAM_MODEL) as echo_url:
        relay = await serve(make_agent(f"{echo_url}/v1", system_prompt="You echo."), model_name="front")
        async with AsyncOpenAI(
            base_url=f"{str(relay.base_url).rstrip('/')}/v1", api_key="unused", max_retries=0
        ) as client:
            yield client


async def test_the_sdk_streams_through_the_chain(sdk: AsyncOpenAI) -> None:
    stream = await sdk.chat.completions.create(
        model="front",
        messages=[{"role": "user", "content": "hello there friend"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    deltas = []
    usage = None
    async for chunk in stream:
        assert chunk.model == "front"
        if chunk.choices and chunk.choices[0].delta.content:
            deltas.append(chunk.choices[0].delta.content)
        usage = chunk.usage or usage
    assert deltas == ["hello", " there", " friend"]
    assert usage is not None and (usage.prompt_tokens, usage.completion_tokens) == (3, 3)


async def test_the_sdk_completes_through_the_chain(sdk: AsyncOpenAI) -> None:
    completion = await sdk.chat.completions.create(
        model="front", messages=[{"role": "user", "content": "one two"}], extra_body={"session_id": "chain"}
    )
    assert completion.choices[0].message.content == "one two"
    assert completion.usage is not None
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (2, 2)
