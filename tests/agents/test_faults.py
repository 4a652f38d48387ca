"""Upstream faults reach the client as clear errors, on both stacks, and never touch history."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import httpx
import pytest

from nanobot.agents.chunks import MAX_EVENT_BYTES
from tests.agents.conftest import Relay, make_agent
from tests.conformance.conftest import Serve
from tests.support.servers import listening_socket
from tests.support.sse import data_events, text_of
from tests.support.upstream import FakeUpstream, Script, answer, chunk, complete, event, raw, refuse, silent

pytestmark = pytest.mark.asyncio

CHAT = "/v1/chat/completions"
HI = {"messages": [{"role": "user", "content": "hi"}]}
TOKEN = chunk({"role": "assistant", "content": "partial"})


def error_of(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    return error


def stream_error(response: httpx.Response, text: str = "") -> dict[str, Any]:
    """The one error event a failed stream ends with, after ``text``; no stop chunk, no ``[DONE]``."""
    assert response.status_code == 200
    events = data_events(response.content)
    assert text_of(events) == text
    assert "[DONE]" not in events
    assert all(c["choices"][0]["finish_reason"] is None for c in events[:-1])
    error: dict[str, Any] = events[-1]["error"]
    return error


REFUSALS = [
    pytest.param(refuse(401), 502, "upstream_unauthorized", "rejected our API key (401)", id="401"),
    pytest.param(refuse(403), 502, "upstream_unauthorized", "rejected our API key (403)", id="403"),
    pytest.param(refuse(500), 502, "upstream_error", "answered 500: refused with 500", id="500"),
    pytest.param(
        refuse(503, b"<html>"), 502, "upstream_error", "answered 503: Service Unavailable", id="503"
    ),
    pytest.param(refuse(404, {"detail": "no"}), 502, "upstream_error", "no; check --upstream-url", id="404"),
    pytest.param(
        refuse(404, {"error": {"message": "No model 'nanobot'."}}),
        502,
        "upstream_error",
        "No model 'nanobot'; check --upstream-url",  # one stop, not '.;'
        id="404-sentence",
    ),
    pytest.param(refuse(429, headers={"Retry-After": "7"}), 429, "rate_limit_exceeded", "(429)", id="429"),
]


@pytest.mark.parametrize(("script", "status", "code", "says"), REFUSALS)
async def test_upstream_refusals_are_clear_statuses(
    relay: Relay, upstream: FakeUpstream, script: Script, status: int, code: str, says: str
) -> None:
    upstream.will(script, script)
    client = await relay(api_key="sk-secret")
    response = await client.post(CHAT, json=HI)
    error = error_of(response, status)
    assert (error["code"], error["type"]) == (code, "rate_limit_error" if status == 429 else "server_error")
    assert says in error["message"] and upstream.url in error["message"]
    assert "sk-secret" not in response.text
    if status == 429:
        assert response.headers["retry-after"] == "7"
        assert "x-should-retry" not in response.headers  # the upstream did no work: retrying is safe
    else:
        assert response.headers["x-should-retry"] == "false"
    assert stream_error(await client.post(CHAT, json={**HI, "stream": True}))["code"] == code


RATE_LIMITS = [
    pytest.param({"Retry-After": "7"}, "; retry after 7 s", id="seconds"),
    pytest.param({"Retry-After": "7", "Retry-After-Ms": "6500"}, "; retry after 6.5 s", id="ms"),
    pytest.param({}, "", id="none"),
]


@pytest.mark.parametrize(("headers", "hint"), RATE_LIMITS)
async def test_an_upstream_429_says_when_to_retry_streaming_or_not(
    relay: Relay, upstream: FakeUpstream, headers: dict[str, str], hint: str
) -> None:
    """A streaming client gets 200 before the upstream is asked: its error event's message says it."""
    upstream.will(refuse(429, headers=headers), refuse(429, headers=headers))
    client = await relay()
    says = f"is rate limiting us (429): refused with 429{hint}"
    response = await client.post(CHAT, json=HI)
    error = error_of(response, 429)
    assert error["message"].endswith(says)
    assert {k: v for k in ("Retry-After", "Retry-After-Ms") if (v := response.headers.get(k))} == headers
    error = stream_error(await client.post(CHAT, json={**HI, "stream": True}))
    assert (error["type"], error["code"]) == ("rate_limit_error", "rate_limit_exceeded")
    assert error["message"] == f"The upstream at {upstream.url}/chat/completions {says}"


async def test_an_unreachable_upstream_is_502_naming_it(serve: Serve) -> None:
    with listening_socket() as sock:  # bound, then closed: nothing listens on that port
        url = f"http://127.0.0.1:{sock.getsockname()[1]}/v1"
    client = await serve(make_agent(url))
    error = error_of(await client.post(CHAT, json=HI), 502)
    assert error["code"] == "upstream_error"
    assert error["message"].startswith(f"Cannot reach the upstream at {url}/chat/completions")
    assert stream_error(await client.post(CHAT, json={**HI, "stream": True}))["code"] == "upstream_error"


MID_STREAM = [
    pytest.param(raw(TOKEN, b"data: {oops\n\n"), "upstream_malformed", "malformed chunk", id="malformed"),
    pytest.param(raw(TOKEN, then="drop"), "upstream_broken", "broke off the answer", id="dropped"),
    pytest.param(raw(TOKEN), "upstream_broken", "ended the stream before", id="no-done"),
    pytest.param(
        raw(TOKEN, event({"error": {"message": "CUDA out of memory"}})),
        "upstream_error",
        "failed mid-answer: CUDA out of memory",
        id="error-event",
    ),
]


@pytest.mark.parametrize(("script", "code", "says"), MID_STREAM)
async def test_an_answer_broken_mid_stream_ends_in_an_error_event(
    relay: Relay, upstream: FakeUpstream, script: Script, code: str, says: str
) -> None:
    upstream.will(script, script)
    client = await relay()
    error = stream_error(await client.post(CHAT, json={**HI, "stream": True}), text="partial")
    assert error["code"] == code and says in error["message"]
    assert error_of(await client.post(CHAT, json=HI), 502)["code"] == code


ENDLESS_LINE = [b"data: " + b"x" * (64 * 1024 - 6), *[b"x" * 64 * 1024] * (MAX_EVENT_BYTES // (64 * 1024))]
TOO_LARGE = (
    f"sent an event larger than {MAX_EVENT_BYTES // 2**20} MiB, the most the relay buffers for one event"
)


async def test_a_line_past_the_event_limit_fails_the_turn_at_once(
    relay: Relay, upstream: FakeUpstream
) -> None:
    """The upstream sends one byte more than the limit, no newline, and waits: we fail, not wait."""
    upstream.will(raw(TOKEN, *ENDLESS_LINE, then="stall"), raw(TOKEN, *ENDLESS_LINE, then="stall"))
    client = await relay()
    async with asyncio.timeout(10):
        error = stream_error(await client.post(CHAT, json={**HI, "stream": True}), text="partial")
        assert error["code"] == "upstream_event_too_large" and TOO_LARGE in error["message"]
        await upstream.closed.wait()
        upstream.closed.clear()
        error = error_of(await client.post(CHAT, json=HI), 502)
        assert error["code"] == "upstream_event_too_large" and TOO_LARGE in error["message"]
        await upstream.closed.wait()


async def test_an_event_at_the_limit_is_read(relay: Relay, upstream: FakeUpstream) -> None:
    """An event's size is its line with one line end: an answer just that size gets through."""
    overhead = len(chunk({"role": "assistant", "content": ""}, "stop")) - 1
    text = "y" * (MAX_EVENT_BYTES - overhead)
    event = chunk({"role": "assistant", "content": text}, "stop")
    assert len(event) - 1 == MAX_EVENT_BYTES
    upstream.will(raw(event))
    client = await relay()
    body = (await client.post(CHAT, json=HI)).json()
    assert body["choices"][0]["message"]["content"] == text


async def test_a_non_streamed_answer_past_the_limit_is_502(relay: Relay, upstream: FakeUpstream) -> None:
    upstream.will(complete("z" * MAX_EVENT_BYTES), complete("z" * MAX_EVENT_BYTES))
    client = await relay()
    error = error_of(await client.post(CHAT, json=HI), 502)
    assert error["code"] == "upstream_event_too_large"
    assert "sent a non-streamed answer larger than 4 MiB" in error["message"]
    error = stream_error(await client.post(CHAT, json={**HI, "stream": True}))
    assert error["code"] == "upstream_event_too_large"


async def test_a_silent_upstream_times_out_as_504(relay: Relay, upstream: FakeUpstream) -> None:
    """The agent's own read timeout (here 50 ms; 300 s by default) catches a dead upstream."""
    upstream.will(silent(), silent())
    client = await relay(timeout=aiohttp.ClientTimeout(connect=5.0, sock_read=0.05))
    error = error_of(await client.post(CHAT, json=HI), 504)
    assert error["code"] == "timeout" and "did not answer in time" in error["message"]
    assert stream_error(await client.post(CHAT, json={**HI, "stream": True}))["code"] == "timeout"


async def test_the_server_request_timeout_ends_the_turn_and_closes_the_upstream(
    relay: Relay, upstream: FakeUpstream
) -> None:
    upstream.will(raw(TOKEN, then="stall"))
    client = await relay(server={"request_timeout": 0.2})
    error = stream_error(await client.post(CHAT, json={**HI, "stream": True}), text="partial")
    assert error["code"] == "timeout"
    await upstream.closed.wait()


async def test_failed_turns_leave_history_unchanged(relay: Relay, upstream: FakeUpstream) -> None:
    upstream.will(answer("A1"), refuse(500), raw(TOKEN, then="drop"), answer("A2"))
    client = await relay()
    for text, status in (("one", 200), ("lost", 502), ("broken", 502), ("two", 200)):
        turn = {"messages": [{"role": "user", "content": text}], "session_id": "s"}
        response = await client.post(CHAT, json=turn)
        assert response.status_code == status
    assert upstream.last.messages == [
        {"role": "user", "content": "one"},
        {"role": "assistant", "content": "A1"},
        {"role": "user", "content": "two"},
    ]
