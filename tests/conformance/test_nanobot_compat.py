"""nanobot's newer server contract, on both stacks: prepare_agent, _last_usage, positional
on_stream_end, files without a message. Agents here behave as nanobot's do."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from nanobot.api.asgi import create_asgi_app
from nanobot.api.form import FILES_PROMPT
from nanobot.api.server import create_app
from tests.conformance.conftest import Serve
from tests.conformance.test_http import assert_error
from tests.support.sse import data_events, text_of

pytestmark = pytest.mark.asyncio

PNG = b"\x89PNG\r\n\x1a\n" + b"\0" * 16


class NanobotLike:
    """Streams, ends its segment positionally, records usage on itself, returns plain text."""

    def __init__(self) -> None:
        self.log: list[str] = []
        self._last_usage: dict[str, int] | None = None

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
        self.log.append(f"turn {content}")
        if on_stream:
            await on_stream("hi")
        if on_stream_end:
            await on_stream_end(False)  # positional, as nanobot calls it
        self._last_usage = {"prompt_tokens": 11, "completion_tokens": 3, "total_tokens": 20}
        return "hi"


async def test_create_app_takes_prepare_agent_positionally() -> None:
    async def prepare() -> None:
        pass

    for factory in (create_app, create_asgi_app):
        factory(NanobotLike(), "nanobot", 120.0, "", prepare)  # nanobot's own call


async def test_prepare_agent_runs_before_each_turn_inside_its_session(serve: Serve) -> None:
    agent = NanobotLike()

    async def prepare() -> None:
        agent.log.append("prepare")
        await asyncio.sleep(0)

    client = await serve(agent, prepare_agent=prepare)
    body = {"session_id": "s", "messages": [{"role": "user", "content": "one"}]}
    first = client.post("/v1/chat/completions", json=body)
    second = client.post(
        "/v1/chat/completions", json={**body, "messages": [{"role": "user", "content": "two"}]}
    )
    await asyncio.gather(first, second)
    assert agent.log in (
        ["prepare", "turn one", "prepare", "turn two"],
        ["prepare", "turn two", "prepare", "turn one"],
    )


async def test_a_slow_prepare_agent_is_bounded_by_the_request_timeout(serve: Serve) -> None:
    async def prepare() -> None:
        await asyncio.Event().wait()

    client = await serve(NanobotLike(), request_timeout=0.3, prepare_agent=prepare)
    reply = await client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "x"}]})
    assert_error(reply, 504, code="timeout")


@pytest.mark.parametrize("stream", [False, True])
async def test_last_usage_is_reported_and_the_providers_total_kept(serve: Serve, stream: bool) -> None:
    client = await serve(NanobotLike())
    body: dict[str, Any] = {"stream": stream, "messages": [{"role": "user", "content": "x"}]}
    if stream:
        body["stream_options"] = {"include_usage": True}
    reply = await client.post("/v1/chat/completions", json=body)
    if stream:
        events = data_events(reply.content)
        assert text_of(events) == "hi"  # on_stream_end(False) did not end the stream
        usage = events[-2]["usage"]
    else:
        usage = reply.json()["usage"]
    assert usage == {"prompt_tokens": 11, "completion_tokens": 3, "total_tokens": 20}


async def test_files_without_a_message_get_a_default_instruction(serve: Serve, tmp_path: Any) -> None:
    agent = NanobotLike()
    client = await serve(agent, media_dir=tmp_path)
    files = [("files", ("a.png", PNG, "image/png"))]
    reply = await client.post("/v1/chat/completions", files=files)
    assert reply.status_code == 200
    assert agent.log == [f"turn {FILES_PROMPT}"]


async def test_a_form_with_neither_message_nor_file_is_a_400(serve: Serve) -> None:
    client = await serve(NanobotLike())
    reply = await client.post("/v1/chat/completions", data={"message": " "}, files=[("x", ("", b"", ""))])
    assert reply.status_code == 400


async def test_the_echo_agent_says_which_files_arrived(serve: Serve, tmp_path: Any) -> None:
    from nanobot.agents.echo import EchoAgent

    client = await serve(EchoAgent(), media_dir=tmp_path)
    files = [("files", ("photo.png", PNG, "image/png"))]
    reply = await client.post("/v1/chat/completions", data={"message": "look"}, files=files)
    assert (
        reply.json()["choices"][0]["message"]["content"] == "look\n[received photo.png: image/png, 24 bytes]"
    )
