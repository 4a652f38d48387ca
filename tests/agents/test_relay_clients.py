"""Unchanged tool-using clients through our server and the relay to a test upstream that
streams tool calls and reasoning, on both stacks: the openai SDK, LangChain and the OpenAI
Agents SDK each run a whole tool round trip."""

from __future__ import annotations

import gc
import json
import warnings
from typing import Any

import httpx
import pytest

from tests.agents.conftest import Relay
from tests.support.upstream import FakeUpstream, answer, calls_events, raw

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(30)]

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
FRAGMENTS = ['{"ci', 'ty": ', '"Oslo"}']


def base_url(client: httpx.AsyncClient) -> str:
    return f"{str(client.base_url).rstrip('/')}/v1"


def tool_messages(upstream: FakeUpstream) -> list[dict[str, Any]]:
    return [m for m in upstream.last.body["messages"] if m["role"] == "tool"]


async def test_openai_sdk_streaming_tool_round_trip(relay: Relay, upstream: FakeUpstream) -> None:
    from openai import AsyncOpenAI

    upstream.will(raw(*calls_events(("call_7", "get_weather", FRAGMENTS), thoughts=["Need", " weather."])))
    upstream.will(answer("Sunny", " in Oslo."))
    sdk = AsyncOpenAI(base_url=base_url(await relay()), api_key="unused", max_retries=0)
    messages: list[Any] = [{"role": "user", "content": "Weather in Oslo?"}]
    calls: dict[int, dict[str, str]] = {}
    reasoning = ""
    stream = await sdk.chat.completions.create(
        model="nanobot", messages=messages, tools=[WEATHER], stream=True
    )
    async for chunk in stream:
        if not chunk.choices:
            continue
        delta = chunk.choices[0].delta
        reasoning += getattr(delta, "reasoning_content", None) or ""
        for call in delta.tool_calls or []:
            entry = calls.setdefault(call.index, {"id": "", "name": "", "arguments": ""})
            entry["id"] = call.id or entry["id"]
            entry["name"] = (call.function.name if call.function else None) or entry["name"]
            entry["arguments"] += (call.function.arguments if call.function else None) or ""
    assert reasoning == "Need weather."
    assert calls == {0: {"id": "call_7", "name": "get_weather", "arguments": '{"city": "Oslo"}'}}
    call = calls[0]
    messages.append(
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": call["id"],
                    "type": "function",
                    "function": {"name": call["name"], "arguments": call["arguments"]},
                }
            ],
        }
    )
    messages.append({"role": "tool", "tool_call_id": "call_7", "content": "21 C, sunny"})
    final = await sdk.chat.completions.create(
        model="nanobot", messages=messages, tools=[WEATHER], stream=True
    )
    text = "".join([c.choices[0].delta.content or "" async for c in final if c.choices])
    assert text == "Sunny in Oslo."
    assert tool_messages(upstream) == [{"role": "tool", "tool_call_id": "call_7", "content": "21 C, sunny"}]
    await sdk.close()


async def test_langchain_bind_tools_streams_tool_call_chunks(relay: Relay, upstream: FakeUpstream) -> None:
    from langchain_core.messages import AIMessageChunk
    from langchain_openai import ChatOpenAI

    upstream.will(raw(*calls_events(("call_3", "get_weather", FRAGMENTS))))
    transport = httpx.AsyncClient()  # ours, so the test closes it
    llm = ChatOpenAI(
        base_url=base_url(await relay()),
        api_key="unused",
        model="nanobot",
        max_retries=0,
        http_async_client=transport,
    )
    chunks: list[AIMessageChunk] = []
    async for chunk in llm.bind_tools([WEATHER]).astream("Weather in Oslo?"):
        assert isinstance(chunk, AIMessageChunk)
        chunks.append(chunk)
    fragments = [c for chunk in chunks for c in chunk.tool_call_chunks]
    assert len(fragments) == 1 + len(FRAGMENTS)
    assert fragments[0]["name"] == "get_weather" and fragments[0]["id"] == "call_3"
    whole = chunks[0]
    for chunk in chunks[1:]:
        whole = whole + chunk
    assert [(c["name"], c["args"], c["id"]) for c in whole.tool_calls] == [
        ("get_weather", {"city": "Oslo"}, "call_3")
    ]
    await transport.aclose()
    # LangChain leaves its last response to the garbage collector, which warns of its socket:
    # collect it here, where that is known and harmless, not in whichever test comes next.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()


async def test_openai_agents_sdk_runs_a_function_tool(relay: Relay, upstream: FakeUpstream) -> None:
    from agents import Agent, OpenAIChatCompletionsModel, Runner, function_tool, set_tracing_disabled
    from openai import AsyncOpenAI

    set_tracing_disabled(True)  # nothing leaves loopback
    asked: list[str] = []

    @function_tool
    def get_weather(city: str) -> str:
        """The weather in a city."""
        asked.append(city)
        return f"21 C and sunny in {city}"

    upstream.will(raw(*calls_events(("call_9", "get_weather", FRAGMENTS))))
    upstream.will(answer("It is ", "21 C and sunny."))
    sdk = AsyncOpenAI(base_url=base_url(await relay()), api_key="unused", max_retries=0)
    agent = Agent(
        name="weather",
        instructions="Answer with the weather.",
        tools=[get_weather],
        model=OpenAIChatCompletionsModel(model="nanobot", openai_client=sdk),
    )
    result = await Runner.run(agent, "Weather in Oslo?")
    assert asked == ["Oslo"]
    assert result.final_output == "It is 21 C and sunny."
    [tool] = tool_messages(upstream)
    assert tool["tool_call_id"] == "call_9" and "21 C and sunny in Oslo" in json.dumps(tool)
    assert upstream.requests[0].body["tools"][0]["function"]["name"] == "get_weather"
    await sdk.close()
