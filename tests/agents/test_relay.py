"""The openai agent relays an upstream's stream through our server, token by token, on both stacks."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest

from tests.agents.conftest import UPSTREAM_MODEL, Relay
from tests.support.sse import data_events, text_of
from tests.support.upstream import DONE, FakeUpstream, answer, chunk, complete, raw

pytestmark = pytest.mark.asyncio

HI = {"messages": [{"role": "user", "content": "hi"}]}
CHAT = "/v1/chat/completions"


async def post_stream(client: httpx.AsyncClient, **extra: Any) -> list[Any]:
    response = await client.post(CHAT, json={**HI, "stream": True, **extra})
    assert response.status_code == 200, response.text
    return data_events(response.content)


async def test_stream_relays_the_upstream_answer_and_its_usage(relay: Relay, upstream: FakeUpstream) -> None:
    upstream.will(answer("Hel", "lo", usage=(7, 2)))
    client = await relay(api_key="sk-up", server={"model_name": "ours"})
    response = await client.post(
        CHAT,
        json={**HI, "stream": True, "stream_options": {"include_usage": True}},
        headers={"X-Request-Id": "req-42"},
    )
    events = data_events(response.content)
    assert text_of(events) == "Hello"
    assert events[-1] == "[DONE]"
    assert events[-2]["usage"] == {"prompt_tokens": 7, "completion_tokens": 2, "total_tokens": 9}
    assert events[-3]["choices"][0]["finish_reason"] == "stop"
    assert {e["model"] for e in events[:-1]} == {"ours"}
    seen = upstream.last
    assert seen.body == {
        "model": UPSTREAM_MODEL,
        "messages": [{"role": "user", "content": "hi"}],
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    assert seen.headers["authorization"] == "Bearer sk-up"
    assert seen.headers["x-request-id"] == "req-42"
    assert seen.headers["accept-encoding"] == "identity"  # a compressor would hold tokens back


async def test_each_token_reaches_the_client_before_the_upstream_sends_the_next(
    relay: Relay, upstream: FakeUpstream
) -> None:
    tokens = [f" t{k}" for k in range(6)]
    received = [asyncio.Event() for _ in tokens]

    async def gate(k: int) -> None:
        if k:
            await received[k - 1].wait()

    upstream.will(answer(*tokens, gate=gate))
    client = await relay()
    count = 0
    async with asyncio.timeout(5), client.stream("POST", CHAT, json={**HI, "stream": True}) as response:
        async for line in response.aiter_lines():
            text = text_of([json.loads(line.removeprefix("data: "))]) if line.startswith("data: {") else ""
            if text:
                assert text == tokens[count]
                received[count].set()
                count += 1
    assert count == len(tokens)


async def test_non_streaming_turn_returns_the_whole_answer(relay: Relay, upstream: FakeUpstream) -> None:
    upstream.will(answer("Hel", "lo", usage=(7, 2)))
    client = await relay()
    body = (await client.post(CHAT, json=HI)).json()
    assert body["choices"][0]["message"] == {"role": "assistant", "content": "Hello"}
    assert body["usage"] == {"prompt_tokens": 7, "completion_tokens": 2, "total_tokens": 9}
    assert upstream.last.body["stream"] is True


async def test_an_upstream_that_ignores_stream_is_read_whole(relay: Relay, upstream: FakeUpstream) -> None:
    upstream.will(complete("all at once", usage=(4, 3)))
    client = await relay()
    events = await post_stream(client, stream_options={"include_usage": True})
    assert text_of(events) == "all at once"
    assert events[-2]["usage"]["completion_tokens"] == 3


async def test_an_answer_that_finished_may_end_without_done(relay: Relay, upstream: FakeUpstream) -> None:
    """Some servers (older llama.cpp) end the body after the finishing chunk, with no ``[DONE]``."""
    upstream.will(raw(chunk({"role": "assistant", "content": "fin"}), chunk({}, "length")))
    client = await relay()
    events = await post_stream(client)
    assert (text_of(events), events[-1]) == ("fin", "[DONE]")


async def test_odd_but_valid_streams_are_read(relay: Relay, upstream: FakeUpstream) -> None:
    """CRLF line ends, comments, an event cut across writes, data split over lines, empty choices."""
    first = chunk({"role": "assistant", "content": "a"}).replace(b"\n", b"\r\n")
    upstream.will(
        raw(
            b": comment\r\n\r\n",
            first[:20],
            first[20:],
            b'data: {"choices": [{"index": 0,\ndata: "delta": {"content": "b"}}]}\n\n',
            b'data: {"choices": [], "usage": null}\n\n',
            chunk({"content": None}, "stop"),
            b"data: [DONE]",  # the body ends without the blank line
        )
    )
    client = await relay()
    events = await post_stream(client)
    assert (text_of(events), events[-1]) == ("ab", "[DONE]")


SEPARATORS = "one\u2028two\u2029three\x85four"  # line ends to str.splitlines, text to SSE and JSON


async def test_u2028_u2029_and_u0085_in_upstream_json_reach_the_client(
    relay: Relay, upstream: FakeUpstream
) -> None:
    """Raw, unescaped in the upstream's JSON (as vLLM and llama.cpp send them), streamed or not."""
    events = [
        chunk({"role": "assistant", "content": SEPARATORS}, ensure_ascii=False),
        chunk({"content": None}, "stop"),
        DONE,
    ]
    assert "\u2028".encode() in events[0]
    upstream.will(raw(*events), raw(*events), complete(SEPARATORS, ensure_ascii=False))
    client = await relay()
    assert text_of(await post_stream(client)) == SEPARATORS
    for _ in range(2):
        body = (await client.post(CHAT, json=HI)).json()
        assert body["choices"][0]["message"]["content"] == SEPARATORS


@pytest.mark.parametrize("end", [b"\r", b"\r\n"], ids=["cr", "crlf"])
async def test_cr_and_crlf_streams_are_read_even_one_byte_per_write(
    relay: Relay, upstream: FakeUpstream, end: bytes
) -> None:
    """Every line end, UTF-8 character and event split across writes: the answer comes out whole."""
    tokens = ["h\u00e9", " \U0001f600", " \u2028\u00bd"]
    events = [chunk({"role": "assistant", "content": ""}), b": keepalive\n\n"]
    events += [chunk({"content": token}, ensure_ascii=False) for token in tokens]
    events += [chunk({}, "stop"), DONE]
    body = b"".join(events).replace(b"\n", end)
    upstream.will(raw(body), raw(*(body[k : k + 1] for k in range(len(body)))))
    client = await relay()
    for _ in range(2):
        events = await post_stream(client)
        assert (text_of(events), events[-1]) == ("".join(tokens), "[DONE]")
