"""Token usage as the agent reported it, and the usage chunk only when asked; both stacks."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conformance.conftest import Serve
from tests.support.agents import Result, ScriptedAgent
from tests.support.sse import data_events

pytestmark = pytest.mark.asyncio

HI = {"messages": [{"role": "user", "content": "hi"}]}


class Counted:
    """A result whose usage is an object with attributes, as provider SDKs return it."""

    def __init__(self, content: str, **usage: int) -> None:
        self.content = content
        self.usage = type("Usage", (), usage)()


async def post(serve: Serve, result: Any, **body: Any) -> Any:
    client = await serve(ScriptedAgent(["a", "b"], result=result))
    response = await client.post("/v1/chat/completions", json={**HI, **body})
    assert response.status_code == 200, response.text
    return data_events(response.content) if body.get("stream") else response.json()


@pytest.mark.parametrize(
    "result",
    [Result("ab", {"total_tokens": 42}), Counted("ab", total_tokens=42)],
    ids=["mapping", "object"],
)
@pytest.mark.parametrize("stream", [False, True])
async def test_a_usage_with_only_a_total_keeps_it(serve: Serve, result: Any, stream: bool) -> None:
    expected = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 42}
    if stream:
        events = await post(serve, result, stream=True, stream_options={"include_usage": True})
        assert events[-1] == "[DONE]"
        assert events[-2]["choices"] == [] and events[-2]["usage"] == expected
    else:
        assert (await post(serve, result))["usage"] == expected


async def test_a_partial_usage_keeps_what_was_given(serve: Serve) -> None:
    body = await post(serve, Result("ab", {"completion_tokens": 4, "total_tokens": 9}))
    assert body["usage"] == {"prompt_tokens": 0, "completion_tokens": 4, "total_tokens": 9}


USAGE = {"prompt_tokens": 3, "completion_tokens": 5}


@pytest.mark.parametrize("options", [None, {}, {"include_usage": False}], ids=["absent", "empty", "false"])
async def test_a_stream_carries_no_usage_unless_asked(serve: Serve, options: dict[str, Any] | None) -> None:
    extra = {} if options is None else {"stream_options": options}
    events = await post(serve, Result("ab", USAGE), stream=True, **extra)
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert all("usage" not in chunk for chunk in chunks)
    assert all(len(chunk["choices"]) == 1 for chunk in chunks)
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


async def test_an_asked_for_usage_is_one_chunk_after_the_finish(serve: Serve) -> None:
    events = await post(serve, Result("ab", USAGE), stream=True, stream_options={"include_usage": True})
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    carrying = [i for i, chunk in enumerate(chunks) if chunk["usage"] is not None]
    assert carrying == [len(chunks) - 1]
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"] == {"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8}
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert all(len(chunk["choices"]) == 1 for chunk in chunks[:-1])
