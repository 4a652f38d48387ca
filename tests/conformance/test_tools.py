"""Client tools, reasoning and agent activity in Chat Completions, on both stacks."""

from __future__ import annotations

import asyncio
import itertools
import json
from typing import Any

import pytest

from nanobot.agents.echo import EchoAgent
from nanobot.core.events import (
    AgentEvent,
    OnEvent,
    ReasoningDelta,
    ToolCallDelta,
    ToolCallEnd,
    ToolCallStart,
)
from tests.conformance.conftest import Serve
from tests.conformance.test_http import assert_error
from tests.support.agents import ScriptedAgent
from tests.support.sse import data_events, parse_events, text_of

pytestmark = pytest.mark.asyncio

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}
TIME = {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object"}}}


def ask(text: str, **fields: Any) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": text}], **fields}


def deltas(events: list[Any]) -> list[dict[str, Any]]:
    return [e["choices"][0]["delta"] for e in events if isinstance(e, dict) and e.get("choices")]


def finish_reason(events: list[Any]) -> str:
    reasons = [e["choices"][0]["finish_reason"] for e in events if isinstance(e, dict) and e.get("choices")]
    assert all(r is None for r in reasons[:-1])
    return str(reasons[-1])


def reasoning_of(events: list[Any]) -> str:
    return "".join(d.get("reasoning_content") or "" for d in deltas(events))


class Emitter:
    """Sends a fixed list of events through ``on_event``, then returns ``text``."""

    def __init__(self, events: list[AgentEvent], text: str = "", gate: asyncio.Event | None = None) -> None:
        self.events = events
        self.text = text
        self.gate = gate
        self.cancelled = asyncio.Event()
        self.tools: Any = None

    async def process_direct(
        self,
        *,
        content: str,
        session_key: str,
        channel: str,
        chat_id: str,
        on_stream: Any = None,
        on_stream_end: Any = None,
        on_event: OnEvent | None = None,
        tools: Any = None,
        **kwargs: Any,
    ) -> str:
        self.tools = tools
        assert on_event is not None
        try:
            for event in self.events:
                await on_event(event)
            if self.gate is not None:
                await self.gate.wait()
        except asyncio.CancelledError:
            self.cancelled.set()
            raise
        if on_stream is not None and self.text:
            await on_stream(self.text)
        return self.text


class NanobotProgress:
    """Reports reasoning and tool events through nanobot's ``on_progress``, then answers."""

    def __init__(self, gate: asyncio.Event | None = None) -> None:
        self.gate = gate
        self.reached = asyncio.Event()
        self.cancelled = asyncio.Event()

    async def process_direct(
        self,
        content: str,
        session_key: str = "",
        channel: str = "",
        chat_id: str = "",
        media: list[str] | None = None,
        on_progress: Any = None,
        on_stream: Any = None,
        on_stream_end: Any = None,
    ) -> str:
        call = {"version": 1, "call_id": "t1", "name": "read_file", "arguments": {"path": "notes.md"}}
        try:
            await on_progress("Let me look at the notes.", reasoning=True)
            await on_progress("", reasoning_end=True)
            await on_progress(
                'read_file("notes.md")', tool_hint=True, tool_events=[{**call, "phase": "start"}]
            )
            self.reached.set()
            if self.gate is not None:
                await self.gate.wait()
            await on_progress("", tool_events=[{**call, "phase": "end", "result": "3 lines"}])
            await on_progress(
                "", tool_events=[{**call, "call_id": "t2", "phase": "error", "error": "denied"}]
            )
        except asyncio.CancelledError:
            self.cancelled.set()
            raise
        if on_stream:
            await on_stream("The notes say hi.")
        return "The notes say hi."


async def test_a_client_tool_call_streams_as_openai_sends_it(serve: Serve) -> None:
    client = await serve(EchoAgent())
    body = ask('/call get_weather {"city": "Paris"}', tools=[WEATHER, TIME], stream=True)
    response = await client.post("/v1/chat/completions", json=body)
    assert response.status_code == 200
    events = data_events(response.content)
    assert events[-1] == "[DONE]"
    calls = [d["tool_calls"] for d in deltas(events) if "tool_calls" in d]
    first = calls[0][0]
    assert first["index"] == 0 and first["type"] == "function" and first["id"].startswith("call_")
    assert first["function"] == {"name": "get_weather", "arguments": ""}
    assert deltas(events)[0]["role"] == "assistant" and deltas(events)[0]["content"] is None
    later = [c[0] for c in calls[1:]]
    assert len(later) > 1 and all(
        set(c) == {"index", "function"} and set(c["function"]) == {"arguments"} for c in later
    )
    assert json.loads("".join(c["function"]["arguments"] for c in later)) == {"city": "Paris"}
    assert finish_reason(events) == "tool_calls"
    assert text_of(events) == ""


async def test_a_non_streamed_tool_call_has_null_content(serve: Serve) -> None:
    client = await serve(EchoAgent())
    response = await client.post("/v1/chat/completions", json=ask("/call get_time", tools=[WEATHER, TIME]))
    choice = response.json()["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    message = choice["message"]
    assert message["content"] is None
    [call] = message["tool_calls"]
    assert call["type"] == "function" and call["function"] == {"name": "get_time", "arguments": "{}"}


async def test_the_openai_sdk_streaming_tool_round_trip(serve: Serve) -> None:
    from openai import AsyncOpenAI

    client = await serve(EchoAgent())
    sdk = AsyncOpenAI(base_url=f"{str(client.base_url).rstrip('/')}/v1", api_key="unused", max_retries=0)
    messages: list[Any] = [{"role": "user", "content": '/call get_weather {"city": "Oslo"}'}]
    stream = await sdk.chat.completions.create(
        model="nanobot", messages=messages, tools=[WEATHER], stream=True
    )
    ids, names, arguments = {}, {}, {}
    async for chunk in stream:
        for call in chunk.choices[0].delta.tool_calls or [] if chunk.choices else []:
            if call.id:
                ids[call.index], names[call.index] = call.id, call.function.name
            arguments[call.index] = arguments.get(call.index, "") + (call.function.arguments or "")
    assert names == {0: "get_weather"} and json.loads(arguments[0]) == {"city": "Oslo"}
    messages.append(
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": ids[0],
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": arguments[0]},
                }
            ],
        }
    )
    messages.append({"role": "tool", "tool_call_id": ids[0], "content": "Sunny, 21 C"})
    final = await sdk.chat.completions.create(model="nanobot", messages=messages, tools=[WEATHER])
    assert final.choices[0].message.content == "Sunny, 21 C"
    assert final.choices[0].finish_reason == "stop"
    await sdk.close()


async def test_parallel_calls_are_told_apart_by_index(serve: Serve) -> None:
    events: list[AgentEvent] = [
        ToolCallStart(0, "call_a", "get_weather"),
        ToolCallStart(1, "call_b", "get_time"),
        ToolCallDelta(0, '{"city":'),
        ToolCallDelta(1, '{"tz":'),
        ToolCallDelta(0, ' "Rome"}'),
        ToolCallDelta(1, ' "UTC"}'),
        ToolCallEnd(0),
        ToolCallEnd(1),
    ]
    client = await serve(Emitter(events))
    for stream in (True, False):
        response = await client.post(
            "/v1/chat/completions", json=ask("x", tools=[WEATHER, TIME], stream=stream)
        )
        if stream:
            chunks = data_events(response.content)
            args: dict[int, str] = {}
            for delta in deltas(chunks):
                for call in delta.get("tool_calls", []):
                    args[call["index"]] = args.get(call["index"], "") + call["function"]["arguments"]
            assert finish_reason(chunks) == "tool_calls"
        else:
            calls = response.json()["choices"][0]["message"]["tool_calls"]
            args = {i: c["function"]["arguments"] for i, c in enumerate(calls)}
            assert [c["id"] for c in calls] == ["call_a", "call_b"]
        assert json.loads(args[0]) == {"city": "Rome"} and json.loads(args[1]) == {"tz": "UTC"}


async def test_fifty_fragments_with_non_ascii_and_line_separators(serve: Serve) -> None:
    value = "Zürich \u2028 東京 \u2029 ok " * 10
    arguments = json.dumps({"q": value}, ensure_ascii=False)
    cuts = [len(arguments) * i // 50 for i in range(51)]
    pieces = [arguments[a:b] for a, b in itertools.pairwise(cuts)]
    assert len(pieces) == 50 and all(pieces)
    events: list[AgentEvent] = [ToolCallStart(0, "call_x", "get_weather")]
    events += [ToolCallDelta(0, piece) for piece in pieces]
    client = await serve(Emitter([*events, ToolCallEnd(0)]))
    response = await client.post("/v1/chat/completions", json=ask("x", tools=[WEATHER], stream=True))
    assert "\u2028".encode() not in response.content and "\u2029".encode() not in response.content
    chunks = data_events(response.content)
    fragments = [d["tool_calls"][0]["function"]["arguments"] for d in deltas(chunks) if "tool_calls" in d]
    assert fragments[1:] == pieces
    assert json.loads("".join(fragments)) == {"q": value}


async def test_reasoning_and_activity_arrive_in_order_before_the_answer(serve: Serve) -> None:
    client = await serve(NanobotProgress())
    response = await client.post("/v1/chat/completions", json=ask("hi", stream=True))
    chunks = data_events(response.content)
    kinds = [
        "reasoning" if "reasoning_content" in d else "text" if d.get("content") else ""
        for d in deltas(chunks)
    ]
    assert (
        kinds[: kinds.index("text")] == ["reasoning"] * kinds.index("text")
        and "reasoning" not in kinds[kinds.index("text") :]
    )
    reasoning = reasoning_of(chunks)
    assert (
        reasoning.index("Let me look")
        < reasoning.index("read_file(")
        < reasoning.index("3 lines")
        < reasoning.index("denied")
    )
    assert not any("tool_calls" in d for d in deltas(chunks))
    assert text_of(chunks) == "The notes say hi." and finish_reason(chunks) == "stop"
    message = (await client.post("/v1/chat/completions", json=ask("hi"))).json()["choices"][0]["message"]
    assert message["content"] == "The notes say hi." and "read_file" in message["reasoning_content"]
    assert "tool_calls" not in message


async def test_a_disconnect_during_agent_activity_cancels_the_turn(serve: Serve) -> None:
    agent = NanobotProgress(gate=asyncio.Event())
    client = await serve(agent)
    async with client.stream("POST", "/v1/chat/completions", json=ask("hi", stream=True)) as response:
        async for piece in response.aiter_raw():
            if b"read_file" in piece:
                break
    await asyncio.wait_for(agent.cancelled.wait(), 2)


async def test_echo_shows_reasoning_and_activity_offline(serve: Serve) -> None:
    client = await serve(EchoAgent())
    response = await client.post(
        "/v1/chat/completions", json=ask("/think /activity hello world", stream=True)
    )
    chunks = data_events(response.content)
    assert reasoning_of(chunks).startswith("Thinking about: hello world")
    assert "echo_lookup" in reasoning_of(chunks) and "2 words" in reasoning_of(chunks)
    assert text_of(chunks) == "hello world"


async def test_tools_reach_only_agents_that_take_them(serve: Serve) -> None:
    emitter = Emitter([ReasoningDelta("hm")], text="ok")
    client = await serve(emitter)
    response = await client.post("/v1/chat/completions", json=ask("x", tools=[WEATHER], tool_choice="auto"))
    assert response.json()["choices"][0]["message"]["content"] == "ok"
    assert emitter.tools == [WEATHER]
    scripted = ScriptedAgent(["x"])
    other = await serve(scripted)
    assert_error(await other.post("/v1/chat/completions", json=ask("x", tools=[WEATHER])), 400, param="tools")
    assert scripted.calls == []


async def test_a_large_tool_result_reaches_the_agent(serve: Serve) -> None:
    agent = ScriptedAgent(["done"])
    client = await serve(agent)
    result = "r" * (1024 * 1024)
    call = {"id": "c1", "type": "function", "function": {"name": "get_time", "arguments": "{}"}}
    body = {
        "messages": [
            {"role": "user", "content": "what time?"},
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "c1", "content": result},
        ]
    }
    response = await client.post("/v1/chat/completions", json=body)
    assert response.status_code == 200, response.text
    [seen] = agent.calls
    assert seen["content"] == result
    assert seen["messages"][1]["tool_calls"] == [call] and seen["messages"][2]["tool_call_id"] == "c1"


async def test_an_agent_that_breaks_the_event_contract_fails_the_stream(serve: Serve) -> None:
    client = await serve(Emitter([ToolCallDelta(3, "{}")]))
    response = await client.post("/v1/chat/completions", json=ask("x", tools=[WEATHER], stream=True))
    events = parse_events(response.content)
    assert events[-1].data["error"]["code"] == "agent_contract"
    assert not any(e.done for e in events)


def _call(call_id: str = "c1", name: str = "get_time") -> dict[str, Any]:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": "{}"}}


BAD_TOOLS: list[tuple[dict[str, Any], str]] = [
    ({"tools": {"type": "function"}}, "tools"),
    ({"tools": [{"type": "function", "function": {"description": "no name"}}]}, "tools[0].function.name"),
    ({"tools": [{"type": "function", "function": {"name": "has space"}}]}, "tools[0].function.name"),
    ({"tools": [{"type": "function", "function": {"name": "x" * 65}}]}, "tools[0].function.name"),
    (
        {"tools": [{"type": "function", "function": {"name": "f", "parameters": []}}]},
        "tools[0].function.parameters",
    ),
    (
        {"tools": [{"type": "function", "function": {"name": "f", "strict": "yes"}}]},
        "tools[0].function.strict",
    ),
    ({"tools": [{"type": "web_search"}]}, "tools[0].type"),
    ({"tools": [TIME, TIME]}, "tools[1].function.name"),
    (
        {"tools": [TIME], "tool_choice": {"type": "function", "function": {"name": "absent"}}},
        "tool_choice.function.name",
    ),
    ({"tools": [TIME], "tool_choice": "sometimes"}, "tool_choice"),
    ({"tool_choice": "required"}, "tool_choice"),
    ({"tools": [TIME], "parallel_tool_calls": "no"}, "parallel_tool_calls"),
    ({"functions": [{"name": "f"}]}, "functions"),
    ({"function_call": {"name": "f"}}, "function_call"),
]


@pytest.mark.parametrize(("fields", "param"), BAD_TOOLS)
async def test_bad_tool_input_is_400_naming_the_field(
    serve: Serve, fields: dict[str, Any], param: str
) -> None:
    client = await serve(EchoAgent())
    assert_error(await client.post("/v1/chat/completions", json=ask("x", **fields)), 400, param=param)


BAD_MESSAGES: list[tuple[list[dict[str, Any]], str]] = [
    (
        [{"role": "user", "content": "q"}, {"role": "tool", "tool_call_id": "nope", "content": "r"}],
        "messages[1].tool_call_id",
    ),
    (
        [
            {"role": "user", "content": "q"},
            {"role": "assistant", "tool_calls": [_call("c1")]},
            {"role": "tool", "tool_call_id": "c2", "content": "r"},
        ],
        "messages[2].tool_call_id",
    ),
    ([{"role": "user", "content": "q"}, {"role": "tool", "content": "r"}], "messages[1].tool_call_id"),
    (
        [{"role": "assistant", "tool_calls": {"id": "c1"}}, {"role": "user", "content": "q"}],
        "messages[0].tool_calls",
    ),
    (
        [
            {"role": "assistant", "tool_calls": [{"id": "", "function": {"name": "f", "arguments": "{}"}}]},
            {"role": "user", "content": "q"},
        ],
        "messages[0].tool_calls[0].id",
    ),
    (
        [
            {"role": "assistant", "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": {}}}]},
            {"role": "user", "content": "q"},
        ],
        "messages[0].tool_calls[0].function.arguments",
    ),
]


@pytest.mark.parametrize(("messages", "param"), BAD_MESSAGES)
async def test_bad_tool_messages_are_400_naming_the_field(
    serve: Serve, messages: list[dict[str, Any]], param: str
) -> None:
    client = await serve(EchoAgent())
    assert_error(await client.post("/v1/chat/completions", json={"messages": messages}), 400, param=param)


async def test_a_session_may_send_only_its_tool_result(serve: Serve) -> None:
    agent = ScriptedAgent(["ok"])
    client = await serve(agent)
    body = {"session_id": "s1", "messages": [{"role": "tool", "tool_call_id": "c9", "content": "42"}]}
    response = await client.post("/v1/chat/completions", json=body)
    assert response.status_code == 200, response.text
    assert agent.calls[0]["content"] == "42"


async def test_max_tools_is_a_limit_at_its_edge(serve: Serve) -> None:
    client = await serve(EchoAgent(), max_tools=2)
    two = [TIME, WEATHER]
    assert (await client.post("/v1/chat/completions", json=ask("x", tools=two))).status_code == 200
    three = [*two, {"type": "function", "function": {"name": "third"}}]
    assert_error(
        await client.post("/v1/chat/completions", json=ask("x", tools=three)),
        400,
        param="tools",
        code="too_many_tools",
    )
