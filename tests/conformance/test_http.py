"""Routes, auth, headers and every kind of bad input, on both stacks."""

from __future__ import annotations

import asyncio
import gzip
import json
import time
import zlib
from typing import Any

import httpx
import pytest

from tests.conformance.conftest import Serve
from tests.support.agents import GateAgent, ScriptedAgent
from tests.support.sse import data_events

pytestmark = pytest.mark.asyncio

HI = {"messages": [{"role": "user", "content": "hi"}]}
KEY = "sk-test-123"
JSON = {"Content-Type": "application/json"}


def assert_error(response: httpx.Response, status: int, **fields: Any) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert response.headers["x-request-id"]
    error: dict[str, Any] = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"]
    for name, value in fields.items():
        assert error[name] == value, error
    return error


async def test_non_streaming_shape(serve: Serve) -> None:
    agent = ScriptedAgent(["a", "b"], result="the answer")
    client = await serve(agent, model_name="m")
    body = (await client.post("/v1/chat/completions", json={**HI, "model": "m"})).json()
    assert body["object"] == "chat.completion"
    assert body["id"].startswith("chatcmpl-")
    assert body["model"] == "m"
    assert isinstance(body["created"], int)
    assert body["choices"] == [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "the answer"},
            "finish_reason": "stop",
            "logprobs": None,
        }
    ]
    assert body["usage"] == {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}


async def test_stream_defaults_to_false_and_false_means_json(serve: Serve) -> None:
    client = await serve(ScriptedAgent(["x"]))
    for extra in ({}, {"stream": False}, {"stream": None}):
        response = await client.post("/v1/chat/completions", json={**HI, **extra})
        assert response.headers["content-type"].startswith("application/json")
        assert response.json()["object"] == "chat.completion"


async def test_non_streaming_agent_failure_is_500_not_to_be_retried(serve: Serve) -> None:
    client = await serve(ScriptedAgent([], error=RuntimeError("boom")))
    response = await client.post("/v1/chat/completions", json=HI)
    assert_error(response, 500, type="server_error")
    assert response.headers["x-should-retry"] == "false"


async def test_non_streaming_timeout_is_504(serve: Serve) -> None:
    agent = GateAgent()
    client = await serve(agent, request_timeout=0.1)
    response = await client.post("/v1/chat/completions", json=HI)
    assert_error(response, 504, code="timeout")
    assert response.headers["x-should-retry"] == "false"
    assert agent.cancelled.is_set()


async def test_auth(serve: Serve) -> None:
    client = await serve(ScriptedAgent(["x"]), api_key=KEY)
    assert (await client.get("/health")).status_code == 200
    for headers in (
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": KEY},
        {"Authorization": "Basic " + KEY},
    ):
        for method, path in (
            ("GET", "/v1/models"),
            ("GET", "/v1/models/nanobot"),
            ("POST", "/v1/chat/completions"),
        ):
            response = await client.request(method, path, json={**HI, "stream": True}, headers=headers)
            assert_error(response, 401, type="authentication_error", code="invalid_api_key")
    good = {"Authorization": f"Bearer {KEY}"}
    assert (await client.get("/v1/models", headers=good)).status_code == 200
    response = await client.post("/v1/chat/completions", json={**HI, "stream": True}, headers=good)
    assert data_events(response.content)[-1] == "[DONE]"


async def test_models(serve: Serve) -> None:
    client = await serve(ScriptedAgent(["x"]), model_name="my-model")
    listing = (await client.get("/v1/models")).json()
    assert listing["object"] == "list"
    assert [m["id"] for m in listing["data"]] == ["my-model"]
    assert listing["data"][0]["object"] == "model"
    assert (await client.get("/v1/models/my-model")).json()["id"] == "my-model"
    assert_error(await client.get("/v1/models/other"), 404, code="model_not_found")


@pytest.mark.parametrize("stream", [False, True])
async def test_unknown_model_is_404_model_not_found(serve: Serve, stream: bool) -> None:
    agent = ScriptedAgent(["x"])
    client = await serve(agent, model_name="m")
    response = await client.post("/v1/chat/completions", json={**HI, "model": "gpt-4o", "stream": stream})
    assert_error(response, 404, code="model_not_found", param="model")
    assert agent.calls == []


async def test_unknown_route_and_method_are_error_json(serve: Serve) -> None:
    client = await serve(ScriptedAgent(["x"]))
    assert_error(await client.get("/v1/nothing"), 404, type="invalid_request_error")
    assert_error(await client.get("/v1/chat/completions"), 405, type="invalid_request_error")
    assert_error(await client.delete("/v1/models"), 405)


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("GET", "/v1/chat/completions", {"POST"}),
        ("DELETE", "/v1/models", {"GET"}),
        ("POST", "/health", {"GET"}),
    ],
)
async def test_a_405_says_which_methods_the_route_allows(
    serve: Serve, method: str, path: str, allowed: set[str]
) -> None:
    client = await serve(ScriptedAgent(["x"]))
    response = await client.request(method, path)
    assert_error(response, 405, type="invalid_request_error")
    methods = {m.strip() for m in response.headers["allow"].split(",")}
    assert allowed <= methods <= allowed | {"HEAD", "OPTIONS"}, methods


async def test_stream_headers(serve: Serve) -> None:
    client = await serve(ScriptedAgent(["x" * 2000] * 20))
    headers = {"Accept-Encoding": "gzip, deflate", "Accept": "application/json", "X-Request-Id": "abc-123"}
    response = await client.post("/v1/chat/completions", json={**HI, "stream": True}, headers=headers)
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["cache-control"] == "no-cache"
    assert response.headers["x-accel-buffering"] == "no"
    assert "content-encoding" not in response.headers
    assert response.headers["x-request-id"] == "abc-123"
    assert data_events(response.content)[-1] == "[DONE]"


async def test_request_ids(serve: Serve) -> None:
    client = await serve(ScriptedAgent(["x"]))
    for path in ("/health", "/v1/models", "/v1/nothing"):
        given = await client.get(path, headers={"X-Request-Id": "mine"})
        assert given.headers["x-request-id"] == "mine"
        fresh = [(await client.get(path)).headers["x-request-id"] for _ in range(2)]
        assert fresh[0] != fresh[1]
    evil = await client.get("/health", headers={"X-Request-Id": "a" * 300})
    assert evil.headers["x-request-id"] != "a" * 300


BAD_BODIES: list[tuple[bytes, str | None]] = [
    (b"{not json", None),
    (b"[1, 2]", None),
    (b'"text"', None),
    (b"", None),
    (b'{"messages": []}', "messages"),
    (b'{"messages": "hi"}', "messages"),
    (b'{"messages": [{"role": "user"}]}', "messages[0].content"),
    (b'{"messages": [{"role": "wizard", "content": "x"}]}', "messages[0].role"),
    (b'{"messages": [{"role": "user", "content": 5}]}', "messages[0].content"),
    (b'{"messages": [{"role": "user", "content": [{"type": "audio"}]}]}', "messages[0].content[0]"),
    (b'{"messages": [{"role": "user", "content": "  "}]}', "messages[0].content"),
    (
        b'{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}',
        "messages[1].role",
    ),
    (b'{"messages": [{"role": "user", "content": "a"}], "stream": "yes"}', "stream"),
    (b'{"messages": [{"role": "user", "content": "a"}], "model": 3}', "model"),
    (b'{"messages": [{"role": "user", "content": "a"}], "stream_options": 1}', "stream_options"),
    (b'{"messages": [{"role": "user", "content": "a"}], "n": 2}', "n"),
    (b'{"messages": [{"role": "user", "content": "a"}], "logprobs": true}', "logprobs"),
    (
        b'{"messages": [{"role": "user", "content": "a"}], "tools": [{"type": "function"}]}',
        "tools[0].function",
    ),
    (
        b'{"messages": [{"role": "user", "content": "a"}], "response_format": {"type": "json_object"}}',
        "response_format",
    ),
    (
        b'{"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "http://x/y.png"}}]}]}',
        "messages[0].content[0].image_url.url",
    ),
]


@pytest.mark.parametrize(("raw", "param"), BAD_BODIES)
async def test_bad_input_is_400_with_the_field_named(serve: Serve, raw: bytes, param: str | None) -> None:
    agent = ScriptedAgent(["x"])
    client = await serve(agent)
    response = await client.post(
        "/v1/chat/completions", content=raw, headers={"Content-Type": "application/json"}
    )
    assert_error(response, 400, type="invalid_request_error", param=param)
    assert agent.calls == []
    assert (await client.post("/v1/chat/completions", json=HI)).status_code == 200  # still up


async def test_harmless_fields_are_ignored(serve: Serve) -> None:
    client = await serve(ScriptedAgent(["x"]))
    extra = {
        "temperature": 0.2,
        "top_p": 0.9,
        "max_tokens": 10,
        "user": "u",
        "seed": 1,
        "metadata": {"a": "b"},
        "n": 1,
        "tool_choice": "auto",
        "stop": ["\n"],
        "presence_penalty": 0,
        "frequency_penalty": 0,
        "something_new": {"x": 1},
        "response_format": {"type": "text"},
    }
    response = await client.post("/v1/chat/completions", json={**HI, **extra})
    assert response.status_code == 200, response.text


async def test_oversize_bodies_are_413(serve: Serve) -> None:
    client = await serve(ScriptedAgent(["x"]), max_body_bytes=1000)
    big = {"messages": [{"role": "user", "content": "x" * 2000}]}
    assert_error(await client.post("/v1/chat/completions", json=big), 413)

    async def chunked() -> Any:
        for _ in range(10):
            yield b" " * 500

    assert_error(await client.post("/v1/chat/completions", content=chunked(), headers=JSON), 413)
    assert (await client.post("/v1/chat/completions", json=HI)).status_code == 200


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "br", "GZIP, identity"])
async def test_a_compressed_body_is_415_naming_content_encoding(serve: Serve, encoding: str) -> None:
    agent = ScriptedAgent(["x"])
    client = await serve(agent)
    body = gzip.compress(json.dumps(HI).encode())
    headers = {**JSON, "Content-Encoding": encoding}
    response = await client.post("/v1/chat/completions", content=body, headers=headers)
    error = assert_error(response, 415, param="content-encoding", code="unsupported_content_encoding")
    assert "uncompressed" in error["message"]
    assert agent.calls == []
    plain = {**JSON, "Content-Encoding": "identity"}
    assert (
        await client.post("/v1/chat/completions", content=json.dumps(HI), headers=plain)
    ).status_code == 200


def gzip_bomb(mebibytes: int) -> bytes:
    """About 1 KB of gzip per MiB of zeros it inflates to, made in milliseconds: after a full
    flush the compressor's output for the same input repeats (the trailer's CRC is not redone)."""
    zeros, compressor = bytes(2**20), zlib.compressobj(9, zlib.DEFLATED, 31)
    head = compressor.compress(zeros) + compressor.flush(zlib.Z_FULL_FLUSH)
    again = compressor.compress(zeros) + compressor.flush(zlib.Z_FULL_FLUSH)
    return head + again * (mebibytes - 1) + compressor.flush()


async def test_a_gzip_bomb_is_refused_without_inflating_it(serve: Serve) -> None:
    """1 MB of gzip inflates to 1 GiB: aiohttp used to inflate it in the event loop (2.3 s of
    CPU, 1.2 s without a tick) before refusing it. Now neither stack inflates a byte."""
    client = await serve(ScriptedAgent(["x"]))
    bomb = gzip_bomb(1024)
    cpu = time.process_time()
    response = await client.post(
        "/v1/chat/completions", content=bomb, headers={**JSON, "Content-Encoding": "gzip"}
    )
    assert_error(response, 415, code="unsupported_content_encoding")
    assert (await client.get("/health")).status_code == 200
    assert time.process_time() - cpu < 0.5


async def test_agent_gets_messages_only_when_it_accepts_them(serve: Serve) -> None:
    seen: list[dict[str, Any]] = []

    class Strict:
        async def process_direct(
            self,
            *,
            content: str,
            session_key: str,
            channel: str,
            chat_id: str,
            media: Any = None,
            on_stream: Any = None,
            on_stream_end: Any = None,
        ) -> str:
            seen.append({"content": content})
            return "ok"

    class Curious:
        async def process_direct(self, *, content: str, messages: list[dict[str, str]], **kwargs: Any) -> str:
            seen.append({"messages": messages, "request_id": kwargs.get("request_id")})
            return "ok"

    history = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": [{"type": "text", "text": "one"}, {"type": "text", "text": "two"}]},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": "three"},
    ]
    for agent in (Strict(), Curious()):
        client = await serve(agent)
        response = await client.post(
            "/v1/chat/completions", json={"messages": history}, headers={"X-Request-Id": "r1"}
        )
        assert response.status_code == 200
    assert seen[0] == {"content": "three"}
    assert seen[1] == {
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "one\ntwo"},
            {"role": "assistant", "content": "ok"},
            {"role": "user", "content": "three"},
        ],
        "request_id": "r1",
    }


async def test_server_survives_many_bad_requests_in_parallel(serve: Serve) -> None:
    client = await serve(ScriptedAgent(["x"]))
    bad = [client.post("/v1/chat/completions", content=raw, headers=JSON) for raw, _ in BAD_BODIES]
    statuses = {r.status_code for r in await asyncio.gather(*bad)}
    assert statuses == {400}
    assert (await client.post("/v1/chat/completions", json=HI)).status_code == 200


async def test_every_route_with_a_body_refuses_a_compressed_one(serve: Serve) -> None:
    """The check sits where every body is read, so no route inflates or misreads one."""
    client = await serve(ScriptedAgent(["x"]))
    body = gzip.compress(json.dumps({"max_tokens": 5, **HI}).encode())
    headers = {**JSON, "Content-Encoding": "gzip"}
    for path in ("/v1/chat/completions", "/v1/responses", "/v1/messages", "/v1/messages/count_tokens"):
        response = await client.post(path, content=body, headers=headers)
        assert response.status_code == 415, (path, response.text)
