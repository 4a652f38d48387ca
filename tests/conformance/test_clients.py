"""Real OpenAI clients against both stacks: the openai SDK (async and sync), httpx-sse, curl."""

from __future__ import annotations

import asyncio
import shutil
from typing import Any

import httpx
import openai
import pytest
from httpx_sse import aconnect_sse

from tests.conformance.conftest import Serve
from tests.support.agents import GateAgent, Result, ScriptedAgent
from tests.support.sse import data_events, text_of

pytestmark = pytest.mark.asyncio

USER = [{"role": "user", "content": "hello there"}]
TOKENS = ["Hello", ",", " wor", "ld", " ✓"]


def sdk(client: httpx.AsyncClient, key: str = "unused", **options: Any) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{str(client.base_url).rstrip('/')}/v1", api_key=key, **options)


async def test_sdk_streamed_text_equals_non_streamed(serve: Serve) -> None:
    usage = {"prompt_tokens": 3, "completion_tokens": 5}
    http = await serve(ScriptedAgent(TOKENS, result=Result("".join(TOKENS), usage)), model_name="m")
    parts = []
    last = None
    async with sdk(http) as client:
        whole = await client.chat.completions.create(model="m", messages=USER)  # type: ignore[arg-type]
        stream = await client.chat.completions.create(
            model="m",
            messages=USER,
            stream=True,
            stream_options={"include_usage": True},  # type: ignore[arg-type]
        )
        async for chunk in stream:
            last = chunk
            if chunk.choices:
                parts.append(chunk.choices[0].delta.content or "")
    assert whole.choices[0].message.content == "".join(parts) == "Hello, world ✓"
    assert whole.usage is not None and whole.usage.total_tokens == 8
    assert last is not None and last.choices == [] and last.usage is not None
    assert (last.usage.prompt_tokens, last.usage.completion_tokens, last.usage.total_tokens) == (3, 5, 8)


async def test_sdk_raises_on_mid_stream_failure(serve: Serve) -> None:
    received = []
    async with sdk(await serve(ScriptedAgent(["partial"], error=RuntimeError("x")))) as client:
        stream = await client.chat.completions.create(model="nanobot", messages=USER, stream=True)  # type: ignore[arg-type]
        with pytest.raises(openai.APIError):
            async for chunk in stream:
                received.append(chunk.choices[0].delta.content)
    assert received == ["partial"]


async def test_sdk_error_classes(serve: Serve) -> None:
    http = await serve(ScriptedAgent(["x"]), api_key="right", model_name="m")
    async with sdk(http, "wrong") as stranger, sdk(http, "right") as client:
        with pytest.raises(openai.AuthenticationError):
            await stranger.chat.completions.create(model="m", messages=USER)  # type: ignore[arg-type]
        with pytest.raises(openai.BadRequestError) as bad:
            await client.chat.completions.create(model="m", messages=[], stream=True)
        assert bad.value.body["param"] == "messages"  # type: ignore[index]
        with pytest.raises(openai.NotFoundError) as missing:
            await client.chat.completions.create(model="gpt-9", messages=USER)  # type: ignore[arg-type]
        assert missing.value.code == "model_not_found"
        models = await client.models.list()
        assert [m.id for m in models.data] == ["m"]
        assert (await client.models.retrieve("m")).id == "m"


@pytest.mark.parametrize("stream", [False, True])
async def test_sdk_does_not_replay_a_failed_turn(serve: Serve, stream: bool) -> None:
    agent = ScriptedAgent([], error=RuntimeError("boom"))
    async with sdk(await serve(agent), max_retries=3) as client:
        with pytest.raises(openai.APIError):
            response = await client.chat.completions.create(model="nanobot", messages=USER, stream=stream)  # type: ignore[call-overload]
            if stream:
                async for _ in response:
                    pass
    assert len(agent.calls) == 1


async def test_sdk_does_not_replay_a_timed_out_turn(serve: Serve) -> None:
    agent = GateAgent()
    async with sdk(await serve(agent, request_timeout=0.05), max_retries=3) as client:
        with pytest.raises(openai.InternalServerError) as caught:
            await client.chat.completions.create(model="nanobot", messages=USER)  # type: ignore[arg-type]
    assert caught.value.status_code == 504
    assert agent.log == ["start hello there"]


async def test_sync_sdk_in_a_thread(serve: Serve) -> None:
    http = await serve(ScriptedAgent(TOKENS))

    def run() -> tuple[str, str]:
        with openai.OpenAI(base_url=f"{str(http.base_url).rstrip('/')}/v1", api_key="unused") as client:
            whole = client.chat.completions.create(model="nanobot", messages=USER)  # type: ignore[arg-type]
            stream = client.chat.completions.create(model="nanobot", messages=USER, stream=True)  # type: ignore[arg-type]
            streamed = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
            return whole.choices[0].message.content or "", streamed

    whole, streamed = await asyncio.to_thread(run)
    assert whole == streamed == "Hello, world ✓"


async def test_httpx_sse_reads_the_same_events(serve: Serve) -> None:
    http = await serve(ScriptedAgent(TOKENS))
    body = {"messages": USER, "stream": True}
    async with aconnect_sse(http, "POST", "/v1/chat/completions", json=body) as source:
        events = [sse async for sse in source.aiter_sse()]
    assert {e.event for e in events} == {"message"}
    assert events[-1].data == "[DONE]"
    assert text_of([e.json() for e in events[:-1]]) == "Hello, world ✓"


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
async def test_curl_streams(serve: Serve) -> None:
    http = await serve(ScriptedAgent(TOKENS))
    process = await asyncio.create_subprocess_exec(
        "curl",
        "-sN",
        "--max-time",
        "20",
        f"{str(http.base_url).rstrip('/')}/v1/chat/completions",
        "-H",
        "Content-Type: application/json",
        "-H",
        "Accept: application/json",
        "-d",
        '{"stream": true, "messages": [{"role": "user", "content": "hi"}]}',
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await process.communicate()
    assert process.returncode == 0
    events = data_events(out)
    assert text_of(events) == "Hello, world ✓"
    assert events[-1] == "[DONE]"
