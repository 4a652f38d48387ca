"""The streamed completion, as DESIGN section 2 promises it, on both stacks."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import httpx
import pytest

from nanobot.api.driver import EMPTY_REPLY
from nanobot.core.errors import RateLimited
from tests.conformance.conftest import Serve
from tests.support.agents import GateAgent, Result, ScriptedAgent
from tests.support.sse import data_events, parse_events, text_of

pytestmark = pytest.mark.asyncio

HI = {"messages": [{"role": "user", "content": "hi"}]}


async def post_stream(client: httpx.AsyncClient, **extra: Any) -> httpx.Response:
    response = await client.post("/v1/chat/completions", json={**HI, "stream": True, **extra})
    assert response.status_code == 200, response.text
    return response


async def test_stream_shape_and_order(serve: Serve) -> None:
    client = await serve(ScriptedAgent(["Hel", "lo", " world"]), model_name="m")
    response = await post_stream(client)
    assert response.headers["content-type"].startswith("text/event-stream")
    events = data_events(response.content)
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert [c["choices"][0]["delta"] for c in chunks] == [
        {"role": "assistant", "content": "Hel"},
        {"content": "lo"},
        {"content": " world"},
        {},
    ]
    assert [c["choices"][0]["finish_reason"] for c in chunks] == [None, None, None, "stop"]
    assert {c["id"] for c in chunks} == {chunks[0]["id"]}
    assert chunks[0]["id"].startswith("chatcmpl-")
    assert {c["created"] for c in chunks} == {chunks[0]["created"]}
    assert {(c["object"], c["model"], c["choices"][0]["index"]) for c in chunks} == {
        ("chat.completion.chunk", "m", 0)
    }
    assert all("usage" not in c for c in chunks)


async def test_include_usage_adds_usage_chunk_last(serve: Serve) -> None:
    agent = ScriptedAgent(["a", "b"], result=Result("ab", {"prompt_tokens": 5, "completion_tokens": 2}))
    client = await serve(agent)
    response = await post_stream(client, stream_options={"include_usage": True})
    events = data_events(response.content)
    assert events[-1] == "[DONE]"
    usage_chunk = events[-2]
    assert usage_chunk["choices"] == []
    assert usage_chunk["usage"] == {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}
    assert events[-3]["choices"][0]["finish_reason"] == "stop"
    assert all(e["usage"] is None for e in events[:-2])


async def test_streams_are_byte_identical_with_injected_ids_and_clock(serve: Serve) -> None:
    ids = itertools.count()
    agent = ScriptedAgent(["é", ' "q"', "\n", None, "end"])
    client = await serve(agent, model_name="m", clock=lambda: 1700000000.5, new_id=lambda: f"x{next(ids)}")
    response = await post_stream(client, stream_options={"include_usage": True})
    head = b'data: {"id":"chatcmpl-x1","object":"chat.completion.chunk","created":1700000000,"model":"m",'
    tail = b',"usage":null}\n\n'
    assert response.content == b"".join(
        [
            head + b'"choices":[{"index":0,"delta":{"role":"assistant","content":"\xc3\xa9"},'
            b'"finish_reason":null}]' + tail,
            head + b'"choices":[{"index":0,"delta":{"content":" \\"q\\""},"finish_reason":null}]' + tail,
            head + b'"choices":[{"index":0,"delta":{"content":"\\n"},"finish_reason":null}]' + tail,
            head + b'"choices":[{"index":0,"delta":{"content":"end"},"finish_reason":null}]' + tail,
            head + b'"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]' + tail,
            head + b'"choices":[],"usage":{"prompt_tokens":0,"completion_tokens":0,"total_tokens":0}}\n\n',
            b"data: [DONE]\n\n",
        ]
    )
    assert response.headers["x-request-id"] == "req_x0"


async def test_segment_end_does_not_end_the_stream(serve: Serve) -> None:
    client = await serve(ScriptedAgent(["thinking", None, " done"]))
    events = data_events((await post_stream(client)).content)
    assert text_of(events) == "thinking done"
    assert events[-1] == "[DONE]"
    assert [e["choices"][0]["finish_reason"] for e in events[:-1]].count("stop") == 1


async def test_final_text_is_sent_when_agent_streamed_nothing(serve: Serve) -> None:
    client = await serve(ScriptedAgent([], result="all at once"))
    events = data_events((await post_stream(client)).content)
    assert events[0]["choices"][0]["delta"] == {"role": "assistant", "content": "all at once"}
    assert events[-2]["choices"][0]["finish_reason"] == "stop"
    assert events[-1] == "[DONE]"


async def test_an_empty_answer_gets_the_fallback_text_and_the_role(serve: Serve) -> None:
    client = await serve(ScriptedAgent([], result=""))
    events = data_events((await post_stream(client)).content)
    fallback = {"role": "assistant", "content": EMPTY_REPLY}
    assert [e["choices"][0]["delta"] for e in events[:-1]] == [fallback, {}]
    reply = await client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "x"}]})
    assert reply.json()["choices"][0]["message"]["content"] == EMPTY_REPLY


@pytest.mark.parametrize("tokens", [[], ["partial", " answer"]])
async def test_failure_mid_stream_is_one_error_event_without_done(serve: Serve, tokens: list[str]) -> None:
    client = await serve(ScriptedAgent(tokens, error=RuntimeError("secret detail")))
    response = await post_stream(client)
    events = data_events(response.content)
    assert text_of(events) == "".join(tokens)
    error = events[-1]["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "server_error"
    assert "secret detail" not in error["message"]
    assert "[DONE]" not in events
    assert all(e["choices"][0]["finish_reason"] is None for e in events[:-1])


async def test_agent_api_error_passes_through_as_error_event(serve: Serve) -> None:
    client = await serve(ScriptedAgent(["x"], error=RateLimited("slow down", headers={"Retry-After": "3"})))
    events = data_events((await post_stream(client)).content)
    assert events[-1]["error"]["code"] == "rate_limit_exceeded"
    assert events[-1]["error"]["message"] == "slow down"


async def test_timeout_mid_stream_is_an_error_event(serve: Serve) -> None:
    agent = GateAgent(before=["a"])
    client = await serve(agent, request_timeout=0.2)
    events = data_events((await post_stream(client)).content)
    assert text_of(events) == "a"
    assert events[-1]["error"]["code"] == "timeout"
    assert agent.cancelled.is_set()


async def test_pings_flow_while_the_agent_is_silent(serve: Serve) -> None:
    agent = GateAgent(before=["a"], after=["b"])
    client = await serve(agent, ping_interval=0.05)
    async with client.stream("POST", "/v1/chat/completions", json={**HI, "stream": True}) as response:
        body = b""
        async for piece in response.aiter_raw():
            body += piece
            if body.count(b": ping\n\n") >= 2:
                agent.release.set()
    events = parse_events(body)
    assert [e.comment for e in events if e.comment is not None][:2] == ["ping", "ping"]
    assert text_of([e.data for e in events if e.comment is None]) == "ab"
    assert events[-1].done


async def test_no_pings_when_disabled(serve: Serve) -> None:
    agent = GateAgent(before=["a"], after=["b"])
    client = await serve(agent, ping_interval=0)

    async def release_soon() -> None:
        await agent.entered.wait()
        for _ in range(20):  # let the server idle for a while on the event loop
            await asyncio.sleep(0)
        agent.release.set()

    releaser = asyncio.create_task(release_soon())
    body = (await post_stream(client)).content
    await releaser
    assert b": ping" not in body
