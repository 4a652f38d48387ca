"""``/v1/responses`` through the ``openai`` relay to a test upstream that streams tool calls and
reasoning, on both stacks: the OpenAI Agents SDK's default (Responses) model runs a
``@function_tool``, the openai SDK streams reasoning items, and what goes upstream for a
Responses turn is the Chat Completions conversation (tools as chat function tools, a tool
result as a ``tool`` message)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.agents.conftest import Relay
from tests.support.upstream import FakeUpstream, answer, calls_events, raw

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(30)]

FRAGMENTS = ['{"ci', 'ty": ', '"Oslo"}']
WEATHER: Any = {  # the SDK's typed tool wants fields OpenAI would fill in
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}


def base_url(client: httpx.AsyncClient) -> str:
    return f"{str(client.base_url).rstrip('/')}/v1"


async def test_openai_agents_sdk_default_model_runs_a_function_tool(
    relay: Relay, upstream: FakeUpstream
) -> None:
    from agents import Agent, RunConfig, Runner, function_tool, set_tracing_disabled
    from agents.models.openai_provider import OpenAIProvider
    from openai import AsyncOpenAI

    set_tracing_disabled(True)  # nothing leaves loopback
    asked: list[str] = []

    @function_tool
    def get_weather(city: str) -> str:
        """The weather in a city."""
        asked.append(city)
        return f"21 C and sunny in {city}"

    upstream.will(raw(*calls_events(("call_9", "get_weather", FRAGMENTS), thoughts=["Need", " weather."])))
    upstream.will(answer("It is ", "21 C and sunny."))
    sdk = AsyncOpenAI(base_url=base_url(await relay()), api_key="unused", max_retries=0)
    agent = Agent(
        name="weather", instructions="Answer with the weather.", tools=[get_weather], model="nanobot"
    )
    # The SDK's default provider (the Responses API), given our client instead of the global one.
    config = RunConfig(model_provider=OpenAIProvider(openai_client=sdk, use_responses=True))
    result = await Runner.run(agent, "Weather in Oslo?", run_config=config)
    assert asked == ["Oslo"]
    assert result.final_output == "It is 21 C and sunny."
    assert [type(item).__name__ for item in result.new_items] == [
        "ReasoningItem",
        "ToolCallItem",
        "ToolCallOutputItem",
        "MessageOutputItem",
    ]
    first, second = upstream.requests
    assert first.body["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "The weather in a city.",
                "parameters": get_weather.params_json_schema,
                "strict": True,
            },
        }
    ]
    assert first.messages == [
        {"role": "system", "content": "Answer with the weather."},
        {"role": "user", "content": "Weather in Oslo?"},
    ]
    call = {
        "id": "call_9",
        "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'},
    }
    assert second.messages == [
        {"role": "system", "content": "Answer with the weather."},
        {"role": "user", "content": "Weather in Oslo?"},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_9", "content": "21 C and sunny in Oslo"},
    ]
    await sdk.close()


async def test_openai_sdk_streams_upstream_reasoning_and_calls_as_items(
    relay: Relay, upstream: FakeUpstream
) -> None:
    from openai import AsyncOpenAI

    upstream.will(raw(*calls_events(("call_7", "get_weather", FRAGMENTS), thoughts=["Need", " weather."])))
    upstream.will(answer("Sunny", " in Oslo."))
    sdk = AsyncOpenAI(base_url=base_url(await relay()), api_key="unused", max_retries=0)
    stream = await sdk.responses.create(
        model="nanobot",
        input="Weather in Oslo?",
        tools=[WEATHER],
        stream=True,
    )
    events: list[Any] = [event async for event in stream]
    kinds = [e.type for e in events]
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert [e.delta for e in events if e.type == "response.reasoning_text.delta"] == ["Need", " weather."]
    assert [e.delta for e in events if e.type == "response.function_call_arguments.delta"] == FRAGMENTS
    final = events[-1]
    assert final.type == "response.completed"
    reasoning, call = final.response.output
    assert reasoning.type == "reasoning" and reasoning.id.startswith("rs_")
    assert [c.text for c in reasoning.content or []] == ["Need weather."]
    assert call.type == "function_call" and call.id.startswith("fc_")
    assert (call.call_id, call.name, call.arguments) == ("call_7", "get_weather", '{"city": "Oslo"}')
    assert final.response.usage is not None and final.response.usage.total_tokens == 12

    # The tool result, by previous_response_id: upstream gets the whole conversation again.
    second = await sdk.responses.create(
        model="nanobot",
        previous_response_id=final.response.id,
        input=[{"type": "function_call_output", "call_id": "call_7", "output": "21 C, sunny"}],
        tools=[WEATHER],
    )
    assert second.output_text == "Sunny in Oslo."
    assert upstream.last.messages == [
        {"role": "user", "content": "Weather in Oslo?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_7",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_7", "content": "21 C, sunny"},
    ]
    assert upstream.last.body["tools"] == [
        {"type": "function", "function": {k: v for k, v in WEATHER.items() if k != "type"}}
    ]
    await sdk.close()


async def test_reasoning_summary_asked_streams_upstream_reasoning_as_summary(
    relay: Relay, upstream: FakeUpstream
) -> None:
    from openai import AsyncOpenAI

    upstream.will(raw(*calls_events(("call_1", "get_weather", FRAGMENTS), thoughts=["Think."])))
    sdk = AsyncOpenAI(base_url=base_url(await relay()), api_key="unused", max_retries=0)
    async with sdk.responses.stream(
        model="nanobot",
        input="Weather?",
        tools=[WEATHER],
        reasoning={"summary": "auto"},
    ) as stream:
        deltas = [e.delta async for e in stream if e.type == "response.reasoning_summary_text.delta"]
        final = await stream.get_final_response()
    assert deltas == ["Think."]
    reasoning = final.output[0]
    assert reasoning.type == "reasoning" and [s.text for s in reasoning.summary] == ["Think."]
    await sdk.close()
