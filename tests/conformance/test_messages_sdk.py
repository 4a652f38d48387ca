"""The unchanged Anthropic SDK against both stacks: ``messages.stream`` (text and the final
message), ``messages.create``, a ``tool_use`` → ``tool_result`` round trip, ``count_tokens``
and its errors."""

from __future__ import annotations

from typing import Any

import anthropic
import httpx
import pytest

from nanobot.agents.echo import EchoAgent
from tests.conformance.conftest import Serve
from tests.support.agents import Result, ScriptedAgent

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(20)]

WEATHER: Any = {
    "name": "get_weather",
    "description": "The weather in a city.",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
}


def sdk(client: httpx.AsyncClient, key: str = "k") -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(base_url=str(client.base_url), api_key=key, max_retries=0)


async def test_stream_text_and_the_final_message(serve: Serve) -> None:
    agent = ScriptedAgent(
        ["Hello", ",", " world"], result=Result("Hello, world", {"prompt_tokens": 4, "completion_tokens": 3})
    )
    async with (
        sdk(await serve(agent, api_key="k")) as client,
        client.messages.stream(
            model="nanobot", max_tokens=64, messages=[{"role": "user", "content": "hi"}]
        ) as stream,
    ):
        texts = [text async for text in stream.text_stream]
        final = await stream.get_final_message()
    assert texts == ["Hello", ",", " world"]
    assert final.id.startswith("msg_") and final.role == "assistant" and final.model == "nanobot"
    assert [block.type for block in final.content] == ["text"]
    assert final.content[0].text == "Hello, world"  # type: ignore[union-attr]
    assert final.stop_reason == "end_turn" and final.stop_sequence is None
    assert (final.usage.input_tokens, final.usage.output_tokens) == (4, 3)


async def test_create(serve: Serve) -> None:
    async with sdk(await serve(EchoAgent(), api_key="k")) as client:
        message = await client.messages.create(
            model="nanobot",
            max_tokens=64,
            system=[{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
            messages=[{"role": "user", "content": "/think echo me"}],
            stop_sequences=["END"],
        )
    assert [block.type for block in message.content] == ["thinking", "text"]
    assert message.content[1].text == "echo me"  # type: ignore[union-attr]
    assert message.stop_reason == "end_turn"


async def test_a_tool_use_round_trip(serve: Serve) -> None:
    async with sdk(await serve(EchoAgent(), api_key="k")) as client:
        history: list[Any] = [{"role": "user", "content": '/call get_weather {"city": "Oslo"}'}]
        async with client.messages.stream(
            model="nanobot", max_tokens=64, messages=history, tools=[WEATHER]
        ) as stream:
            asked = await stream.get_final_message()
        assert asked.stop_reason == "tool_use"
        [call] = asked.content
        assert call.type == "tool_use" and call.name == "get_weather" and call.input == {"city": "Oslo"}
        history += [
            {"role": "assistant", "content": asked.content},
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "Sunny"}],
            },
        ]
        answer = await client.messages.create(
            model="nanobot", max_tokens=64, messages=history, tools=[WEATHER]
        )
    assert answer.content[0].type == "text" and answer.content[0].text == "Sunny"
    assert answer.stop_reason == "end_turn"


async def test_count_tokens(serve: Serve) -> None:
    async with sdk(await serve(EchoAgent(), api_key="k")) as client:
        counted = await client.messages.count_tokens(
            model="nanobot", messages=[{"role": "user", "content": "x" * 400}], tools=[WEATHER]
        )
    assert counted.input_tokens > 100


async def test_the_sdk_raises_its_own_errors(serve: Serve) -> None:
    http = await serve(ScriptedAgent(["partial"], error=RuntimeError("x")), api_key="k")
    user: Any = [{"role": "user", "content": "hi"}]
    async with sdk(http, key="wrong") as client:
        with pytest.raises(anthropic.AuthenticationError):
            await client.messages.create(model="nanobot", max_tokens=8, messages=user)
    async with sdk(http) as client:
        with pytest.raises(anthropic.NotFoundError):
            await client.messages.create(model="claude-opus-4-8", max_tokens=8, messages=user)
        with pytest.raises(anthropic.InternalServerError):
            await client.messages.create(model="nanobot", max_tokens=8, messages=user)
        received = []
        with pytest.raises(anthropic.APIStatusError):
            async with client.messages.stream(model="nanobot", max_tokens=8, messages=user) as stream:
                async for text in stream.text_stream:
                    received.append(text)
        assert received == ["partial"]
