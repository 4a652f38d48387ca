"""Session routing, per-session order and cross-session parallelism, on both stacks."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from nanobot.api.service import ChatService
from tests.conformance.conftest import Serve
from tests.support.agents import GateAgent, ScriptedAgent

pytestmark = pytest.mark.asyncio


def body(content: str = "hi", **extra: Any) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": content}], **extra}


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize(
    ("extra", "headers", "key"),
    [
        ({}, {}, "api:default"),
        ({"session_id": "s-1"}, {}, "api:s-1"),
        ({}, {"X-Session-Id": "hdr.2"}, "api:hdr.2"),
        (
            {},
            {"X-OpenWebUI-Chat-Id": "3f2b9c1e-8d7a-4b5c-9e0f-1a2b3c4d5e6f"},
            "api:3f2b9c1e-8d7a-4b5c-9e0f-1a2b3c4d5e6f",
        ),
        ({"session_id": "body"}, {"X-Session-Id": "header"}, "api:body"),
    ],
)
async def test_session_routing(
    serve: Serve, stream: bool, extra: dict[str, Any], headers: dict[str, str], key: str
) -> None:
    agent = ScriptedAgent(["ok"])
    client = await serve(agent)
    response = await client.post("/v1/chat/completions", json=body(stream=stream, **extra), headers=headers)
    assert response.status_code == 200
    assert agent.calls[0]["session_key"] == key


@pytest.mark.parametrize(
    ("extra", "headers", "param"),
    [
        ({"session_id": "../etc/passwd"}, {}, "session_id"),
        ({"session_id": ""}, {}, "session_id"),
        ({"session_id": "x" * 200}, {}, "session_id"),
        ({"session_id": 7}, {}, "session_id"),
        ({}, {"X-Session-Id": "a b"}, "x-session-id"),
    ],
)
async def test_bad_session_ids_are_refused(
    serve: Serve, extra: dict[str, Any], headers: dict[str, str], param: str
) -> None:
    agent = ScriptedAgent(["ok"])
    client = await serve(agent)
    response = await client.post("/v1/chat/completions", json=body(stream=True, **extra), headers=headers)
    assert response.status_code == 400
    assert response.json()["error"]["param"] == param
    assert agent.calls == []


async def test_one_session_runs_one_turn_at_a_time_in_order(serve: Serve) -> None:
    agent = GateAgent(before=["x"])
    client = await serve(agent)

    def turn(content: str) -> Any:
        return client.stream("POST", "/v1/chat/completions", json=body(content, stream=True, session_id="s"))

    # A streamed turn's headers go out before it waits for its session: once the client has them,
    # the server holds the turn in the session's queue.
    async with turn("one") as one:
        await agent.entered.wait()
        async with turn("two") as two, turn("three") as three:
            assert agent.log == ["start one"]
            agent.release.set()
            bodies = [await r.aread() for r in (one, two, three)]
    assert all(b.endswith(b"data: [DONE]\n\n") for b in bodies)
    assert agent.log == ["start one", "end one", "start two", "end two", "start three", "end three"]


async def test_different_sessions_run_concurrently(serve: Serve) -> None:
    both_in = asyncio.Barrier(3)

    class Meeting:
        async def process_direct(self, *, content: str, **kwargs: Any) -> str:
            await both_in.wait()  # only passes when both turns are inside the agent at once
            return content

    client = await serve(Meeting())
    turns = [
        asyncio.create_task(client.post("/v1/chat/completions", json=body(name, session_id=name)))
        for name in ("a", "b")
    ]
    await both_in.wait()
    responses = await asyncio.gather(*turns)
    assert [r.json()["choices"][0]["message"]["content"] for r in responses] == ["a", "b"]


async def test_full_session_queue_answers_429(serve: Serve) -> None:
    agent = GateAgent()
    client = await serve(agent, max_session_queue=1)

    def turn() -> Any:
        return client.stream("POST", "/v1/chat/completions", json=body(stream=True, session_id="busy"))

    async with turn() as holding, turn() as waiting:
        response = await client.post("/v1/chat/completions", json=body(session_id="busy"))
        assert response.status_code == 429
        assert response.json()["error"]["type"] == "rate_limit_error"
        agent.release.set()
        assert [(await r.aread()).endswith(b"[DONE]\n\n") for r in (holding, waiting)] == [True, True]
    assert agent.log == ["start hi", "end hi", "start hi", "end hi"]


async def test_idle_sessions_are_released() -> None:
    service = ChatService(ScriptedAgent(["ok"]))
    for name in ("a", "b", "c"):
        async with service.sessions.hold(f"api:{name}"):
            assert len(service.sessions) == 1
    assert len(service.sessions) == 0
