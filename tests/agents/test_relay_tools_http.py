"""Client tools and reasoning through our server and the relay, on both stacks: the upstream's
tool calls and reasoning reach the client as OpenAI streams them, a session client sends only
its tool result, a bad one is a 400, and a client gone mid tool call closes the upstream request."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from tests.agents.conftest import Relay
from tests.support.sse import data_events
from tests.support.upstream import FakeUpstream, answer, call_start, calls_events, complete, raw

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(20)]

CHAT = "/v1/chat/completions"
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}
USER = {"role": "user", "content": "Weather in Oslo?"}
FRAGMENTS = ['{"ci', 'ty": "Os', "lo\u2028\u00e9", '"}']


def deltas(events: list[Any]) -> list[dict[str, Any]]:
    return [e["choices"][0]["delta"] for e in events if isinstance(e, dict) and e.get("choices")]


async def test_tool_calls_and_reasoning_stream_to_the_client_as_openai_sends_them(
    relay: Relay, upstream: FakeUpstream
) -> None:
    upstream.will(raw(*calls_events(("call_1", "get_weather", FRAGMENTS), thoughts=["Check", " it."])))
    client = await relay()
    body = {"messages": [USER], "tools": [WEATHER], "tool_choice": "auto", "stream": True}
    response = await client.post(CHAT, json=body)
    assert response.status_code == 200, response.text
    events = data_events(response.content)
    sent = deltas(events)
    assert "".join(d.get("reasoning_content") or "" for d in sent) == "Check it."
    calls = [call for d in sent for call in d.get("tool_calls") or []]
    assert calls[0] == {
        "index": 0,
        "id": "call_1",
        "type": "function",
        "function": {"name": "get_weather", "arguments": ""},
    }
    assert [c["function"]["arguments"] for c in calls[1:]] == FRAGMENTS
    assert all(c == {"index": 0, "function": {"arguments": c["function"]["arguments"]}} for c in calls[1:])
    finish = [e["choices"][0]["finish_reason"] for e in events if isinstance(e, dict) and e.get("choices")]
    assert finish[-1] == "tool_calls" and events[-1] == "[DONE]"
    assert upstream.last.body["tools"] == [WEATHER] and upstream.last.body["tool_choice"] == "auto"


async def test_a_non_streamed_tool_call_answer(relay: Relay, upstream: FakeUpstream) -> None:
    upstream.will(raw(*calls_events(("call_1", "get_weather", FRAGMENTS), thoughts=["Hm."])))
    client = await relay()
    response = await client.post(CHAT, json={"messages": [USER], "tools": [WEATHER]})
    assert response.status_code == 200, response.text
    choice = response.json()["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"] == {
        "role": "assistant",
        "content": None,
        "reasoning_content": "Hm.",
        "tool_calls": [
            {
                "id": "call_1",
                "type": "function",
                "function": {"name": "get_weather", "arguments": "".join(FRAGMENTS)},
            }
        ],
    }


async def test_a_session_client_sends_only_its_tool_result(relay: Relay, upstream: FakeUpstream) -> None:
    upstream.will(raw(*calls_events(("call_1", "get_weather", FRAGMENTS))), answer("Cold."))
    client = await relay()
    first = await client.post(CHAT, json={"messages": [USER], "tools": [WEATHER], "session_id": "t"})
    assert first.json()["choices"][0]["finish_reason"] == "tool_calls"
    result = {"role": "tool", "tool_call_id": "call_1", "content": "-3 °C" + "x" * 1_000_000}
    second = await client.post(
        CHAT, json={"messages": [result], "tools": [WEATHER], "session_id": "t", "stream": True}
    )
    assert second.status_code == 200, second.text
    assert "".join(d.get("content") or "" for d in deltas(data_events(second.content))) == "Cold."
    issued = first.json()["choices"][0]["message"]
    assert upstream.last.messages == [
        USER,
        {"role": "assistant", "content": None, "tool_calls": issued["tool_calls"]},
        result,
    ]


async def test_a_tool_result_the_session_never_issued_is_a_400(relay: Relay, upstream: FakeUpstream) -> None:
    upstream.will(raw(*calls_events(("call_1", "get_weather", ["{}"]))))
    client = await relay()
    await client.post(CHAT, json={"messages": [USER], "tools": [WEATHER], "session_id": "t"})
    stray = {"role": "tool", "tool_call_id": "call_9", "content": "?"}
    response = await client.post(CHAT, json={"messages": [stray], "session_id": "t"})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert (error["param"], error["code"]) == ("messages[0].tool_call_id", "unknown_tool_call_id")
    # Streaming, the check is the agent's (the session's history is), made once the stream is
    # open: the client gets the same error as the stream's error event.
    response = await client.post(CHAT, json={"messages": [stray], "session_id": "t", "stream": True})
    (event,) = data_events(response.content)
    assert event["error"]["type"] == "invalid_request_error"
    assert (event["error"]["param"], event["error"]["code"]) == (
        "messages[0].tool_call_id",
        "unknown_tool_call_id",
    )
    assert len(upstream.requests) == 1


async def test_a_client_gone_mid_tool_call_closes_the_upstream_request(
    relay: Relay, upstream: FakeUpstream
) -> None:
    upstream.will(raw(call_start(0, "call_1", "get_weather", '{"city": "Os'), then="stall"))
    client = await relay()
    body = {"messages": [USER], "tools": [WEATHER], "stream": True, "session_id": "gone"}
    async with client.stream("POST", CHAT, json=body) as response:
        async for line in response.aiter_lines():
            if line.startswith("data: {") and "Os" in json.dumps(json.loads(line[6:])):
                break
    await asyncio.wait_for(upstream.closed.wait(), 5)
    upstream.will(answer("fine"))
    await client.post(CHAT, json={"messages": [{"role": "user", "content": "next"}], "session_id": "gone"})
    assert upstream.last.messages == [{"role": "user", "content": "next"}]  # the cut turn was not kept


async def test_a_whole_answer_with_tool_calls_from_an_upstream_that_ignores_stream(
    relay: Relay, upstream: FakeUpstream
) -> None:
    call = {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}
    upstream.will(complete(None, finish="tool_calls", tool_calls=[call], reasoning="Quick."))
    client = await relay()
    response = await client.post(CHAT, json={"messages": [USER], "tools": [WEATHER], "stream": True})
    sent = deltas(data_events(response.content))
    assert "".join(d.get("reasoning_content") or "" for d in sent) == "Quick."
    calls = [c for d in sent for c in d.get("tool_calls") or []]
    assert calls[0]["id"] == "c1" and "".join(c["function"]["arguments"] for c in calls) == "{}"
