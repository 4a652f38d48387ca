"""The Anthropic Messages API (``/v1/messages``) on both stacks: exact stream bytes for text,
tool use, thinking and failure; the message object; every error in Anthropic's shape; the body
Claude Code sends; ``count_tokens``; model aliases; keepalive pings."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from nanobot.agents.echo import EchoAgent
from nanobot.api.dialects.messages.encode import PING
from nanobot.core.events import (
    Activity,
    AgentEvent,
    ReasoningDelta,
    ReasoningEnd,
    ToolCallDelta,
    ToolCallEnd,
    ToolCallStart,
)
from tests.conformance.conftest import Serve
from tests.conformance.test_tools import Emitter
from tests.support.agents import GateAgent, Result, ScriptedAgent

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(20)]

MESSAGES = "/v1/messages"
COUNT = "/v1/messages/count_tokens"
CLAUDE_CODE_BODY = Path(__file__).parent / "data" / "claude_code_request.json"
#: A body Claude Code 2.1.197 sent (``claude -p``, its second request of a turn where the
#: upstream asked for ``Bash``): personal data replaced, long prose cut, every field kept.
CLAUDE_CODE_TOOL_RESULT = Path(__file__).parent / "data" / "claude_code_2.1.197_tool_result.json"
#: The headers it sent with it (the key and session id replaced).
CLAUDE_CODE_HEADERS = {
    "accept": "application/json",
    "user-agent": "claude-cli/2.1.197 (external, sdk-cli)",
    "x-claude-code-session-id": "00000000-0000-4000-8000-000000000000",
    "x-stainless-lang": "js",
    "x-stainless-package-version": "0.94.0",
    "x-stainless-retry-count": "0",
    "x-stainless-timeout": "600",
    "anthropic-beta": "claude-code-20250219,context-1m-2025-08-07,interleaved-thinking-2025-05-14,"
    "thinking-token-count-2026-05-13,context-management-2025-06-27,prompt-caching-scope-2026-01-05,"
    "mid-conversation-system-2026-04-07,effort-2025-11-24",
    "anthropic-dangerous-direct-browser-access": "true",
    "anthropic-version": "2023-06-01",
    "x-api-key": "k",
    "x-app": "cli",
}
WEATHER = {
    "name": "get_weather",
    "description": "The weather in a city.",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
}


def ask(text: str = "hi", **fields: Any) -> dict[str, Any]:
    return {"model": "nanobot", "max_tokens": 100, "messages": [{"role": "user", "content": text}], **fields}


def named_events(body: bytes) -> list[tuple[str, Any]]:
    """A complete Anthropic SSE body as ``(event, data)`` pairs, strictly: two lines an event."""
    text = body.decode()
    assert text.endswith("\n\n"), text[-80:]
    events = []
    for block in text.split("\n\n")[:-1]:
        name, data = block.split("\n")
        assert name.startswith("event: ") and data.startswith("data: "), block
        payload = json.loads(data[len("data: ") :])
        assert payload["type"] == name[len("event: ") :]
        events.append((name[len("event: ") :], payload))
    return events


def start(index: int, block: dict[str, Any]) -> str:
    return sse("content_block_start", {"type": "content_block_start", "index": index, "content_block": block})


def delta(index: int, kind: str, field: str, text: str) -> str:
    payload = {"type": "content_block_delta", "index": index, "delta": {"type": kind, field: text}}
    return sse("content_block_delta", payload)


def stop(index: int) -> str:
    return sse("content_block_stop", {"type": "content_block_stop", "index": index})


def sse(name: str, payload: dict[str, Any]) -> str:
    return f"event: {name}\ndata: {json.dumps(payload, separators=(',', ':'), ensure_ascii=False)}\n\n"


def message_start(input_tokens: int) -> str:
    usage = {
        "input_tokens": input_tokens,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
        "output_tokens": 0,
    }
    message: dict[str, Any] = {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "nanobot",
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": usage,
    }
    return sse("message_start", {"type": "message_start", "message": message})


def ending(reason: str, usage: dict[str, int]) -> str:
    payload = {
        "type": "message_delta",
        "delta": {"stop_reason": reason, "stop_sequence": None},
        "usage": usage,
    }
    return sse("message_delta", payload) + 'event: message_stop\ndata: {"type":"message_stop"}\n\n'


def assert_error(response: httpx.Response, status: int, kind: str) -> str:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body["type"] == "error" and set(body) == {"type", "error"}
    assert set(body["error"]) == {"type", "message"} and body["error"]["type"] == kind, body
    assert body["error"]["message"]
    return str(body["error"]["message"])


async def test_a_text_stream_byte_for_byte(serve: Serve) -> None:
    agent = ScriptedAgent(
        ["Hel", "lo ✓"], result=Result("Hello ✓", {"prompt_tokens": 3, "completion_tokens": 2})
    )
    client = await serve(agent, new_id=lambda: "1")
    response = await client.post(f"{MESSAGES}?beta=true", json=ask("hi there", stream=True))
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "text/event-stream"
    assert response.text == (
        message_start(2)
        + start(0, {"type": "text", "text": ""})
        + delta(0, "text_delta", "text", "Hel")
        + delta(0, "text_delta", "text", "lo ✓")
        + stop(0)
        + ending("end_turn", {"input_tokens": 3, "output_tokens": 2})
    )


async def test_a_tool_use_stream_byte_for_byte(serve: Serve) -> None:
    events: list[AgentEvent] = [
        ToolCallStart(0, "call_a", "get_weather"),
        ToolCallDelta(0, '{"city":'),
        ToolCallDelta(0, ' "Oslo"}'),
        ToolCallStart(1, "", "get_weather"),
        ToolCallDelta(1, "{}"),
        ToolCallEnd(0),
        ToolCallEnd(1),
    ]
    client = await serve(Emitter(events), new_id=lambda: "1")
    response = await client.post(MESSAGES, json=ask("weather?", stream=True, tools=[WEATHER]))
    assert response.status_code == 200, response.text
    assert response.text == (
        message_start(ask_tokens("weather?", [WEATHER]))
        + start(0, {"type": "tool_use", "id": "call_a", "name": "get_weather", "input": {}})
        + delta(0, "input_json_delta", "partial_json", '{"city":')
        + delta(0, "input_json_delta", "partial_json", ' "Oslo"}')
        + stop(0)
        + start(1, {"type": "tool_use", "id": "toolu_1_1", "name": "get_weather", "input": {}})
        + delta(1, "input_json_delta", "partial_json", "{}")
        + stop(1)
        + ending("tool_use", {"output_tokens": 3})
    )


def ask_tokens(text: str, tools: list[dict[str, Any]]) -> int:
    """What the server estimates for ``ask(text, tools=tools)`` (see ``estimate_tokens``)."""
    chat = [
        {
            "type": "function",
            "function": {"name": t["name"], "parameters": t["input_schema"], "description": t["description"]},
        }
        for t in tools
    ]
    return -(-(len(text) + len(json.dumps(chat, separators=(",", ":")))) // 4)


async def test_thinking_and_activity_stream_as_a_thinking_block(serve: Serve) -> None:
    events: list[AgentEvent] = [
        ReasoningDelta("Let me"),
        ReasoningDelta(" look."),
        ReasoningEnd(),
        Activity("start", "t1", "lookup", '{"q":"x"}'),
        Activity("end", "t1", "lookup", '{"q":"x"}', "found"),
    ]
    client = await serve(Emitter(events, text="Done."), new_id=lambda: "1")
    response = await client.post(MESSAGES, json=ask("go", stream=True))
    assert response.text == (
        message_start(1)
        + start(0, {"type": "thinking", "thinking": "", "signature": ""})
        + delta(0, "thinking_delta", "thinking", "Let me")
        + delta(0, "thinking_delta", "thinking", " look.")
        + stop(0)
        + start(1, {"type": "thinking", "thinking": "", "signature": ""})
        + delta(1, "thinking_delta", "thinking", '\n▸ lookup({"q":"x"})\n')
        + delta(1, "thinking_delta", "thinking", "✓ lookup: found\n")
        + stop(1)
        + start(2, {"type": "text", "text": ""})
        + delta(2, "text_delta", "text", "Done.")
        + stop(2)
        + ending("end_turn", {"output_tokens": 5})
    )


async def test_a_failure_mid_stream_is_one_error_event(serve: Serve) -> None:
    client = await serve(ScriptedAgent(["partial"], error=RuntimeError("boom")), new_id=lambda: "1")
    response = await client.post(MESSAGES, json=ask(stream=True))
    assert response.status_code == 200
    error = {"type": "error", "error": {"type": "api_error", "message": "The agent failed (RuntimeError)."}}
    assert response.text == (
        message_start(1)
        + start(0, {"type": "text", "text": ""})
        + delta(0, "text_delta", "text", "partial")
        + sse("error", error)
    )


async def test_the_message_object(serve: Serve) -> None:
    client = await serve(EchoAgent(), new_id=lambda: "1")
    response = await client.post(MESSAGES, json=ask("/think hello world"))
    assert response.status_code == 200, response.text
    assert response.json() == {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "nanobot",
        "content": [
            {"type": "thinking", "thinking": "Thinking about: hello world", "signature": ""},
            {"type": "text", "text": "hello world"},
        ],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {
            "input_tokens": 2,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
            "output_tokens": 2,
        },
    }


async def test_a_tool_use_message_object_and_its_result(serve: Serve) -> None:
    client = await serve(EchoAgent())
    response = await client.post(MESSAGES, json=ask('/call get_weather {"city": "Oslo"}', tools=[WEATHER]))
    message = response.json()
    assert message["stop_reason"] == "tool_use"
    [call] = message["content"]
    assert call["type"] == "tool_use" and call["name"] == "get_weather" and call["input"] == {"city": "Oslo"}
    history = [
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": message["content"]},
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": call["id"], "content": "Sunny, 21 C"}],
        },
    ]
    answer = await client.post(MESSAGES, json={**ask(), "messages": history, "tools": [WEATHER]})
    assert answer.status_code == 200, answer.text
    assert answer.json()["content"] == [{"type": "text", "text": "Sunny, 21 C"}]


@pytest.mark.parametrize(
    ("fixture", "echoed"),
    [(CLAUDE_CODE_BODY, "hello"), (CLAUDE_CODE_TOOL_RESULT, "hi-from-tool")],
    ids=["documented", "captured-2.1.197"],
)
async def test_the_body_claude_code_sends_is_accepted(serve: Serve, fixture: Path, echoed: str) -> None:
    client = await serve(EchoAgent(), api_key="k", model_aliases=[("claude-*", "nanobot")])
    body = json.loads(fixture.read_text())
    response = await client.post(f"{MESSAGES}?beta=true", json=body, headers=CLAUDE_CODE_HEADERS)
    assert response.status_code == 200, response.text
    events = named_events(response.content)
    assert [name for name, _ in events][:2] == ["message_start", "content_block_start"]
    assert events[-2][1]["delta"]["stop_reason"] == "end_turn" and events[-1][0] == "message_stop"
    text = "".join(e["delta"]["text"] for name, e in events if name == "content_block_delta")
    assert text == echoed
    # Claude Code retries a failed stream without "stream": the same body must be a message.
    whole = await client.post(
        f"{MESSAGES}?beta=true", json={**body, "stream": None}, headers=CLAUDE_CODE_HEADERS
    )
    assert whole.status_code == 200 and whole.json()["content"] == [{"type": "text", "text": echoed}]
    counted = await client.post(
        f"{COUNT}?beta=true", json={**body, "stream": None}, headers=CLAUDE_CODE_HEADERS
    )
    assert counted.status_code == 200 and counted.json()["input_tokens"] > 1000


async def test_count_tokens_is_an_estimate(serve: Serve) -> None:
    client = await serve(EchoAgent())
    body = {"model": "nanobot", "system": "abcd" * 10, "messages": [{"role": "user", "content": "x" * 40}]}
    response = await client.post(COUNT, json=body)
    assert response.status_code == 200 and response.json() == {"input_tokens": 20}
    assert_error(await client.post(COUNT, json={"model": "nanobot"}), 400, "invalid_request_error")
    assert_error(await client.post(COUNT, json={**body, "model": "gpt"}), 404, "not_found_error")


async def test_the_key_is_x_api_key_or_a_bearer_token(serve: Serve) -> None:
    client = await serve(EchoAgent(), api_key="k")
    assert (await client.post(MESSAGES, json=ask(), headers={"x-api-key": "k"})).status_code == 200
    assert (await client.post(MESSAGES, json=ask(), headers={"authorization": "Bearer k"})).status_code == 200
    for headers in ({}, {"x-api-key": "no"}, {"authorization": "Bearer no", "x-api-key": "k"}):
        assert_error(await client.post(MESSAGES, json=ask(), headers=headers), 401, "authentication_error")
    assert_error(await client.post(COUNT, json=ask()), 401, "authentication_error")
    chat = {"messages": [{"role": "user", "content": "hi"}]}
    assert (
        await client.post("/v1/chat/completions", json=chat, headers={"x-api-key": "k"})
    ).status_code == 200


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": "nanobot", "messages": [{"role": "user", "content": "hi"}]}, "max_tokens"),
        ({**ask(), "max_tokens": 0}, "max_tokens"),
        ({**ask(), "messages": []}, "messages"),
        ({**ask(), "messages": [{"role": "tool", "content": "x"}]}, "messages.0.role"),
        (
            {
                **ask(),
                "messages": [
                    {
                        "role": "user",
                        "content": [{"type": "image", "source": {"type": "url", "url": "http://x"}}],
                    }
                ],
            },
            "messages.0.content.0.source.type",
        ),
        ({**ask(), "tools": [{"name": "x"}]}, "tools.0.input_schema"),
        ({**ask(), "tool_choice": {"type": "tool", "name": "nope"}, "tools": [WEATHER]}, "tool_choice.name"),
        ({**ask(), "thinking": {"type": "enabled"}}, "thinking.budget_tokens"),
        ({**ask(), "stop_sequences": "x"}, "stop_sequences"),
        ({**ask(), "temperature": "hot"}, "temperature"),
        ({**ask(), "system": 3}, "system"),
    ],
)
async def test_invalid_requests_are_invalid_request_errors(
    serve: Serve, body: dict[str, Any], param: str
) -> None:
    client = await serve(EchoAgent())
    message = assert_error(await client.post(MESSAGES, json=body), 400, "invalid_request_error")
    assert param in message


async def test_errors_before_the_stream_in_anthropic_shape(serve: Serve) -> None:
    client = await serve(EchoAgent(), max_body_bytes=2000)
    assert_error(
        await client.post(MESSAGES, content=b"{", headers={"content-type": "application/json"}),
        400,
        "invalid_request_error",
    )
    assert_error(
        await client.post(MESSAGES, content=b"x" * 3000, headers={"content-type": "application/json"}),
        413,
        "request_too_large",
    )
    assert_error(
        await client.post(MESSAGES, content=b"{}", headers={"content-type": "text/plain"}),
        415,
        "invalid_request_error",
    )
    assert_error(await client.post(MESSAGES, json=ask(model="claude-opus-4-8")), 404, "not_found_error")
    assert_error(await client.get(MESSAGES), 405, "invalid_request_error")
    assert_error(await client.post(f"{MESSAGES}/batches", json=ask()), 404, "not_found_error")


async def test_model_aliases_let_claude_codes_names_through(serve: Serve) -> None:
    client = await serve(EchoAgent(), model_aliases=[("claude-*", "nanobot"), ("haiku", "nanobot")])
    for model in ("claude-opus-4-8", "claude-haiku-4-5-20251001", "haiku", "nanobot"):
        assert (await client.post(MESSAGES, json=ask(model=model))).status_code == 200, model
    assert_error(await client.post(MESSAGES, json=ask(model="gpt-4o")), 404, "not_found_error")
    assert (await client.get("/v1/models/claude-opus-4-8")).status_code == 200


async def test_overload_is_529_overloaded_error(serve: Serve) -> None:
    agent = GateAgent(before=["a"])
    client = await serve(agent, max_streams=1)
    async with client.stream("POST", MESSAGES, json=ask(stream=True)) as held:
        await agent.entered.wait()
        response = await client.post(MESSAGES, json=ask(stream=True))
        assert_error(response, 529, "overloaded_error")
        assert response.headers["retry-after"] == "1"
        agent.release.set()
        await held.aread()


async def test_a_timeout_mid_stream_is_a_timeout_error_event(serve: Serve) -> None:
    agent = GateAgent(before=["a"])
    client = await serve(agent, request_timeout=0.2)
    response = await client.post(MESSAGES, json=ask(stream=True))
    name, payload = named_events(response.content)[-1]
    assert name == "error" and payload["error"]["type"] == "timeout_error"


async def test_pings_are_anthropic_ping_events(serve: Serve) -> None:
    agent = GateAgent(before=["a"])
    client = await serve(agent, ping_interval=0.05)
    async with client.stream("POST", MESSAGES, json=ask(stream=True)) as response:
        seen = b""
        async for chunk in response.aiter_bytes():
            seen += chunk
            if PING in seen:
                agent.release.set()
    assert PING == b'event: ping\ndata: {"type":"ping"}\n\n'
    names = [name for name, _ in named_events(seen)]
    assert "ping" in names and names[-1] == "message_stop"


async def test_a_client_gone_mid_stream_cancels_the_turn(serve: Serve) -> None:
    agent = GateAgent(before=["a"])
    client = await serve(agent)
    async with client.stream("POST", MESSAGES, json=ask(stream=True)) as response:
        async for _ in response.aiter_bytes():
            break
    await asyncio.wait_for(agent.cancelled.wait(), 5)
