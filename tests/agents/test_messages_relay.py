"""Anthropic Messages through the relay to a test upstream, on both stacks: the request goes
upstream as Chat Completions (system, images, tool_use ↔ tool_calls, tool_result ↔ tool
messages, options), the upstream's reasoning, text and tool calls come back as Anthropic's
stream, and the Anthropic SDK completes a tool round trip."""

from __future__ import annotations

import json
from typing import Any

import anthropic
import pytest

from nanobot.agents.openai import OpenAIAgent
from nanobot.config import Settings
from tests.agents.conftest import Relay
from tests.conformance.conftest import Serve
from tests.conformance.test_messages import CLAUDE_CODE_HEADERS, CLAUDE_CODE_TOOL_RESULT, named_events
from tests.support.upstream import FakeUpstream, answer, calls_events, raw

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(20)]

MESSAGES = "/v1/messages"
WEATHER: Any = {
    "name": "get_weather",
    "description": "The weather in a city.",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
}
PIXEL = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="


async def test_the_request_goes_upstream_as_chat(relay: Relay, upstream: FakeUpstream) -> None:
    upstream.will(answer("ok"))
    client = await relay()
    body = {
        "model": "nanobot",
        "max_tokens": 64000,
        "system": [{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
        "messages": [
            {"role": "user", "content": "Weather in Oslo?"},
            {
                "role": "assistant",
                "content": [
                    {"type": "thinking", "thinking": "hm", "signature": "s"},
                    {"type": "text", "text": "Checking."},
                    {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Oslo"}},
                ],
            },
            {"role": "system", "content": [{"type": "text", "text": "Use metric units."}]},
            {
                "role": "user",
                "content": [
                    {
                        "type": "tool_result",
                        "tool_use_id": "toolu_1",
                        "content": [{"type": "text", "text": "21 C"}],
                    },
                    {"type": "text", "text": "And this?", "cache_control": {"type": "ephemeral"}},
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PIXEL}},
                ],
            },
        ],
        "tools": [WEATHER, {"type": "web_search_20250305", "name": "web_search"}],
        "tool_choice": {"type": "any", "disable_parallel_tool_use": True},
        "stop_sequences": ["END"],
        "temperature": 0.5,
        "top_k": 5,
        "thinking": {"type": "adaptive"},
        "output_config": {"effort": "max"},
        "metadata": {"user_id": "u"},
    }
    response = await client.post(MESSAGES, json=body)
    assert response.status_code == 200, response.text
    assert response.json()["content"] == [{"type": "text", "text": "ok"}]
    sent = upstream.last.body
    assert sent["messages"] == [
        {"role": "system", "content": "Be brief.\n\nUse metric units."},
        {"role": "user", "content": "Weather in Oslo?"},
        {
            "role": "assistant",
            "content": "Checking.",
            "tool_calls": [
                {
                    "id": "toolu_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "toolu_1", "content": "21 C"},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "And this?"},
                {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PIXEL}"}},
            ],
        },
    ]
    assert sent["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "parameters": WEATHER["input_schema"],
                "description": WEATHER["description"],
            },
        }
    ]
    options = {
        k: sent.get(k)
        for k in (
            "max_tokens",
            "stop",
            "temperature",
            "top_k",
            "tool_choice",
            "parallel_tool_calls",
            "reasoning_effort",
        )
    }
    assert options == {
        "max_tokens": 64000,
        "stop": ["END"],
        "temperature": 0.5,
        "top_k": 5,
        "tool_choice": "required",
        "parallel_tool_calls": False,
        "reasoning_effort": "high",
    }


async def test_upstream_reasoning_and_tool_calls_stream_back_as_anthropic_blocks(
    relay: Relay, upstream: FakeUpstream
) -> None:
    upstream.will(
        raw(
            *calls_events(("call_1", "get_weather", ['{"ci', 'ty": "Os', 'lo"}']), thoughts=["Check", " it."])
        )
    )
    client = await relay()
    body = {
        "model": "nanobot",
        "max_tokens": 100,
        "stream": True,
        "tools": [WEATHER],
        "messages": [{"role": "user", "content": "Oslo?"}],
    }
    response = await client.post(MESSAGES, json=body)
    assert response.status_code == 200, response.text
    events = [data for _, data in named_events(response.content)]
    kinds = [e["type"] for e in events]
    assert kinds[0] == "message_start" and kinds[-2:] == ["message_delta", "message_stop"]
    starts = [e["content_block"] for e in events if e["type"] == "content_block_start"]
    assert starts == [
        {"type": "thinking", "thinking": "", "signature": ""},
        {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {}},
    ]
    fragments = [
        e["delta"].get("partial_json")
        for e in events
        if e["type"] == "content_block_delta" and e["index"] == 1
    ]
    assert fragments == ['{"ci', 'ty": "Os', 'lo"}']
    assert events[-2]["delta"]["stop_reason"] == "tool_use"
    assert events[-2]["usage"] == {"input_tokens": 5, "output_tokens": 7}


async def test_the_sdk_round_trip_through_the_relay(relay: Relay, upstream: FakeUpstream) -> None:
    upstream.will(
        raw(*calls_events(("call_9", "get_weather", ['{"city": "Oslo"}']))), answer("Sunny", " today")
    )
    http = await relay()
    async with anthropic.AsyncAnthropic(base_url=str(http.base_url), api_key="k", max_retries=0) as client:
        history: list[Any] = [{"role": "user", "content": "Weather in Oslo?"}]
        async with client.messages.stream(
            model="nanobot", max_tokens=100, messages=history, tools=[WEATHER]
        ) as stream:
            asked = await stream.get_final_message()
        [call] = asked.content
        assert asked.stop_reason == "tool_use" and call.type == "tool_use" and call.input == {"city": "Oslo"}
        history += [
            {"role": "assistant", "content": asked.content},
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "18 C, sun"}],
            },
        ]
        async with client.messages.stream(
            model="nanobot", max_tokens=100, messages=history, tools=[WEATHER]
        ) as stream:
            texts = [text async for text in stream.text_stream]
            final = await stream.get_final_message()
    assert "".join(texts) == "Sunny today" and final.stop_reason == "end_turn"
    sent = upstream.last.messages
    assert sent[-2]["tool_calls"][0]["id"] == "call_9"
    assert json.loads(sent[-2]["tool_calls"][0]["function"]["arguments"]) == {"city": "Oslo"}
    assert sent[-1] == {"role": "tool", "tool_call_id": "call_9", "content": "18 C, sun"}


async def test_a_captured_claude_code_body_goes_upstream_as_chat(
    relay: Relay, upstream: FakeUpstream
) -> None:
    """What Claude Code 2.1.197 sent after running the Bash call the upstream asked for."""
    upstream.will(answer("The tool said: hi-from-tool"))
    client = await relay(server={"model_aliases": [("claude-*", "nanobot")]})
    body = json.loads(CLAUDE_CODE_TOOL_RESULT.read_text())
    response = await client.post(f"{MESSAGES}?beta=true", json=body, headers=CLAUDE_CODE_HEADERS)
    assert response.status_code == 200, response.text
    events = [data for _, data in named_events(response.content)]
    text = "".join(e["delta"]["text"] for e in events if e["type"] == "content_block_delta")
    assert text == "The tool said: hi-from-tool" and events[-2]["delta"]["stop_reason"] == "end_turn"
    sent = upstream.last.body
    assert [m["role"] for m in sent["messages"]] == ["system", "user", "assistant", "tool"]
    system = sent["messages"][0]["content"]
    # The attribution line changes with the conversation: kept first, no prefix cache would hit.
    assert system.startswith("You are a Claude agent") and "x-anthropic-billing-header" not in system
    assert "Available agent types" in system  # the role "system" entry of messages, merged
    assert sent["messages"][1]["content"].endswith("TOOLCALL please run echo")
    [call] = sent["messages"][2]["tool_calls"]
    assert call["id"] == "call_fake1" and call["function"]["name"] == "Bash"
    assert sent["messages"][3] == {"role": "tool", "tool_call_id": "call_fake1", "content": "hi-from-tool"}
    assert len(sent["tools"]) == 24 and sent["max_tokens"] == 64000 and sent["reasoning_effort"] == "high"


async def test_a_system_string_loses_only_the_attribution_line(relay: Relay, upstream: FakeUpstream) -> None:
    upstream.will(answer("ok"))
    client = await relay()
    system = "x-anthropic-billing-header: cc_version=2.1.197.1c0; cc_entrypoint=cli;\nBe brief."
    body = {
        "model": "nanobot",
        "max_tokens": 10,
        "system": system,
        "messages": [{"role": "user", "content": "hi"}],
    }
    assert (await client.post(MESSAGES, json=body)).status_code == 200
    assert upstream.last.messages[0] == {"role": "system", "content": "Be brief."}


async def test_the_operator_caps_max_tokens_and_drops_reasoning_effort(
    serve: Serve, upstream: FakeUpstream
) -> None:
    """``--upstream-max-tokens`` and ``--no-upstream-reasoning-effort``, for an upstream that
    refuses Claude Code's ``max_tokens: 64000`` (vLLM past its context) or any
    ``reasoning_effort`` (Ollama for a model without thinking)."""
    settings = Settings(
        agent="openai",
        upstream_url=upstream.url,
        upstream_model="m",
        upstream_max_tokens=4096,
        upstream_reasoning_effort=False,
    ).checked()
    upstream.will(answer("a"), answer("b"), answer("c"))
    client = await serve(OpenAIAgent.from_settings(settings), model_aliases=[("claude-*", "nanobot")])
    body = json.loads(CLAUDE_CODE_TOOL_RESULT.read_text())
    assert (await client.post(MESSAGES, json=body, headers=CLAUDE_CODE_HEADERS)).status_code == 200
    sent = upstream.last.body
    assert sent["max_tokens"] == 4096 and "reasoning_effort" not in sent
    small = {**body, "max_tokens": 100, "stream": False}
    assert (await client.post(MESSAGES, json=small, headers=CLAUDE_CODE_HEADERS)).status_code == 200
    assert upstream.last.body["max_tokens"] == 100  # a smaller value goes as sent
    chat = {
        "model": "nanobot",
        "max_completion_tokens": 9000,
        "reasoning_effort": "low",
        "messages": [{"role": "user", "content": "hi"}],
    }
    assert (await client.post("/v1/chat/completions", json=chat)).status_code == 200
    sent = upstream.last.body
    assert sent["max_completion_tokens"] == 4096 and "reasoning_effort" not in sent
