"""Request parsing and session resolution: untrusted bytes in, typed values or named errors out."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import orjson
import pytest

from nanobot.api.request import Message, check_body_size, parse_chat_request, read_body, resolve_session
from nanobot.core.errors import InvalidRequest, PayloadTooLarge


def test_minimal_request() -> None:
    request = parse_chat_request(b'{"messages":[{"role":"user","content":"hi"}]}')
    assert request.messages == (Message("user", "hi"),)
    assert (request.stream, request.include_usage, request.model, request.session_id) == (
        False,
        False,
        None,
        None,
    )


def test_full_request() -> None:
    request = parse_chat_request(
        b'{"model":"m","stream":true,"stream_options":{"include_usage":true},"session_id":"s",'
        b'"messages":[{"role":"developer","content":"d"},{"role":"assistant","content":null,'
        b'"tool_calls":[{"id":"c1","type":"function","function":{"name":"f","arguments":"{}"}}]},'
        b'{"role":"tool","tool_call_id":"c1","content":"t"},{"role":"user","content":[{"type":"text","text":"a"},'
        b'{"type":"image_url","image_url":{"url":"data:image/png;base64,AAAA"}}]}]}'
    )
    assert request.stream and request.include_usage
    assert request.model == "m"
    assert request.prompt == Message("user", "a", ("data:image/png;base64,AAAA",))
    assert [m.role for m in request.messages] == ["developer", "assistant", "tool", "user"]


def test_errors_name_the_field() -> None:
    with pytest.raises(InvalidRequest) as caught:
        parse_chat_request(b'{"messages":[{"role":"user","content":"a"}],"n":3}')
    assert caught.value.param == "n"
    assert caught.value.to_body()["error"]["code"] == "unsupported_parameter"


def test_session_resolution_order() -> None:
    with_body = parse_chat_request(b'{"messages":[{"role":"user","content":"a"}],"session_id":"b"}')
    without = parse_chat_request(b'{"messages":[{"role":"user","content":"a"}]}')
    assert resolve_session(with_body, {"x-session-id": "h"}) == "api:b"
    assert resolve_session(without, {"x-session-id": "h"}) == "api:h"
    assert resolve_session(without, {"x-openwebui-chat-id": "w"}) == "api:w"
    assert resolve_session(without, {}) == "api:default"
    with pytest.raises(InvalidRequest):
        resolve_session(without, {"x-session-id": "no/slash"})


async def _chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


def test_read_body_limits() -> None:
    assert asyncio.run(read_body(_chunks(b"ab", b"c"), limit=3, declared=None)) == b"abc"
    with pytest.raises(PayloadTooLarge):
        asyncio.run(read_body(_chunks(b"ab", b"cd"), limit=3, declared=None))
    with pytest.raises(PayloadTooLarge):
        asyncio.run(read_body(_chunks(), limit=3, declared=4))


def test_a_body_that_arrived_whole_has_the_same_limits() -> None:
    assert check_body_size(b"abc", limit=3, declared=3) == b"abc"
    with pytest.raises(PayloadTooLarge):
        check_body_size(b"abcd", limit=3, declared=None)
    with pytest.raises(PayloadTooLarge):
        check_body_size(b"ab", limit=3, declared=4)


def test_a_large_body_of_countless_tiny_values_is_refused_before_parsing() -> None:
    hostile = b'{"x": [' + b"[]," * 200_000 + b'[]], "messages": [{"role": "user", "content": "hi"}]}'
    with pytest.raises(InvalidRequest) as caught:
        parse_chat_request(hostile)
    assert caught.value.code == "request_too_complex"
    strings = b'{"x": [' + b'"\\\\",' * 150_000 + b'""], "messages": [{"role": "user", "content": "hi"}]}'
    with pytest.raises(InvalidRequest):  # escaped backslashes before a quote do not hide strings
        parse_chat_request(strings)


def test_a_large_body_of_prose_full_of_commas_and_quotes_is_accepted() -> None:
    prose = 'He said, "yes, no, [maybe], {perhaps}", and left, ' * 20_000
    body = orjson.dumps({"messages": [{"role": "user", "content": prose}]})
    assert len(body) > 1_000_000
    assert parse_chat_request(body).prompt.content == prose
