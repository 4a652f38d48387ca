"""A complete relay: the client's sampling fields and images go upstream, its finish_reason comes
back, and a request the upstream rejects is the client's 400, on both stacks, streaming or not."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from tests.agents.conftest import Relay
from tests.conformance.test_http import assert_error
from tests.support.sse import data_events
from tests.support.upstream import DONE, FakeUpstream, answer, chunk, complete, raw, refuse

pytestmark = pytest.mark.asyncio

CHAT = "/v1/chat/completions"
SAMPLING = {
    "temperature": 0.2,
    "top_p": 0.9,
    "max_tokens": 7,
    "max_completion_tokens": 8,
    "stop": ["\n\n", "END"],
    "seed": 42,
    "presence_penalty": 0.5,
    "frequency_penalty": -0.5,
    "response_format": {"type": "json_object"},
    "user": "user-1",
    "logit_bias": {"50256": -100},
}
PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\0" * 16).decode()


def turn(content: Any = "hi", **extra: Any) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": content}], **extra}


@pytest.mark.parametrize("stream", [False, True])
async def test_sampling_fields_go_upstream_as_sent(
    relay: Relay, upstream: FakeUpstream, stream: bool
) -> None:
    upstream.will(answer("ok"))
    client = await relay()
    reply = await client.post(CHAT, json=turn(stream=stream, **SAMPLING, model="nanobot", n=1))
    assert reply.status_code == 200
    body = upstream.last.body
    assert {name: body[name] for name in SAMPLING} == SAMPLING
    assert body["model"] == "up-model" and body["stream"] is True  # never overridden by the client
    assert "n" not in body and "session_id" not in body  # only the sampling fields


async def test_nothing_is_added_when_the_client_sends_no_sampling_field(
    relay: Relay, upstream: FakeUpstream
) -> None:
    upstream.will(answer("ok"))
    await (await relay()).post(CHAT, json=turn())
    assert set(upstream.last.body) == {"model", "messages", "stream", "stream_options"}


@pytest.mark.parametrize("session", [None, "s"])
async def test_images_go_upstream_as_content_parts_and_history_keeps_the_text(
    relay: Relay, upstream: FakeUpstream, session: str | None, tmp_path: Any
) -> None:
    upstream.will(answer("a cat"), answer("yes"))
    client = await relay(server={"media_dir": tmp_path})
    url = f"data:image/png;base64,{PNG}"
    parts = [{"type": "text", "text": "what is this?"}, {"type": "image_url", "image_url": {"url": url}}]
    extra = {"session_id": session} if session else {}
    assert (await client.post(CHAT, json=turn(parts, **extra))).status_code == 200
    assert upstream.last.messages == [{"role": "user", "content": parts}]
    await client.post(CHAT, json=turn("sure?", **extra))
    if session:  # the stored turn keeps its text; the image went with its own turn
        assert upstream.last.messages == [
            {"role": "user", "content": "what is this?"},
            {"role": "assistant", "content": "a cat"},
            {"role": "user", "content": "sure?"},
        ]
    else:
        assert upstream.last.messages == [{"role": "user", "content": "sure?"}]


@pytest.mark.parametrize("reason", ["length", "content_filter"])
async def test_the_upstream_finish_reason_comes_through(
    relay: Relay, upstream: FakeUpstream, reason: str
) -> None:
    upstream.will(
        raw(chunk({"role": "assistant", "content": "cut"}), chunk({}, reason), DONE),
        complete("cut", finish=reason),
    )
    client = await relay()
    streamed = data_events((await client.post(CHAT, json=turn(stream=True))).content)
    assert [e["choices"][0]["finish_reason"] for e in streamed[:-1]] == [None, reason]
    whole = (await client.post(CHAT, json=turn())).json()
    assert whole["choices"][0]["finish_reason"] == reason


@pytest.mark.parametrize("status", [400, 422])
async def test_a_request_the_upstream_rejects_is_the_clients_400(
    relay: Relay, upstream: FakeUpstream, status: int
) -> None:
    error = {
        "error": {
            "message": "temperature must be <= 2",
            "type": "invalid_request_error",
            "param": "temperature",
            "code": "bad_temp",
        }
    }
    upstream.will(refuse(status, error), refuse(status, error))
    client = await relay()
    body = assert_error(
        await client.post(CHAT, json=turn(temperature=9)), 400, param="temperature", code="bad_temp"
    )
    assert "temperature must be <= 2" in body["message"]
    event = data_events((await client.post(CHAT, json=turn(temperature=9, stream=True))).content)[-1]
    assert event["error"]["type"] == "invalid_request_error" and event["error"]["param"] == "temperature"


async def test_response_format_is_refused_for_agents_that_relay_nothing(serve: Any) -> None:
    from tests.support.agents import ScriptedAgent

    client = await serve(ScriptedAgent(["ok"]))
    reply = await client.post(CHAT, json=turn(response_format={"type": "json_object"}))
    assert_error(reply, 400, param="response_format")
