"""Upstream faults reach the client as clear errors, on both stacks, and never touch history."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import aiohttp
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from nanobot.agents.chunks import MAX_EVENT_BYTES
from nanobot.agents.openai import OpenAIAgent
from nanobot.agents.upstream import Upstream
from tests.agents.conftest import UPSTREAM_MODEL, Relay, make_agent
from tests.conformance.conftest import Serve
from tests.support.servers import listening_socket
from tests.support.sse import data_events, text_of
from tests.support.upstream import (
    FakeUpstream,
    Script,
    answer,
    chunk,
    complete,
    event,
    raw,
    redirect,
    refuse,
    run_recorder,
    silent,
)

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


def closed_port_url() -> str:
    with listening_socket() as sock:  # bound, then closed: nothing listens on that port
        return f"http://127.0.0.1:{sock.getsockname()[1]}/v1"


@contextmanager
def full_backlog() -> Iterator[str]:
    """A port whose accept queue is full: the kernel drops further SYNs, so connecting hangs."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(0)
        fillers = [socket.socket() for _ in range(3)]
        try:
            for filler in fillers:
                filler.setblocking(False)
                filler.connect_ex(server.getsockname())
            yield f"http://127.0.0.1:{server.getsockname()[1]}/v1"
        finally:
            for filler in fillers:
                filler.close()


async def test_an_unreachable_upstream_is_502_saying_why_in_a_few_words(
    serve: Serve, caplog: pytest.LogCaptureFixture
) -> None:
    url = closed_port_url()
    client = await serve(make_agent(url))
    says = f"Cannot reach the upstream at {url}/chat/completions (connection refused)."
    with caplog.at_level(logging.WARNING, logger="nanobot.agents.upstream"):
        error = error_of(await client.post(CHAT, json=HI), 502)
    assert (error["code"], error["message"]) == ("upstream_error", says)
    error = stream_error(await client.post(CHAT, json={**HI, "stream": True}))
    assert (error["code"], error["message"]) == ("upstream_error", says)
    warnings = [r.getMessage() for r in caplog.records if r.name == "nanobot.agents.upstream"]
    assert warnings == [f"cannot reach the upstream at {url}/chat/completions (connection refused)"] * 2


async def test_an_upstream_host_that_does_not_resolve_is_502_saying_so(serve: Serve) -> None:
    url = "http://nowhere.invalid/v1"  # .invalid never resolves (RFC 2606)
    client = await serve(make_agent(url))
    error = error_of(await client.post(CHAT, json=HI), 502)
    says = f"Cannot reach the upstream at {url}/chat/completions (host name 'nowhere.invalid' not found)."
    assert (error["code"], error["message"]) == ("upstream_error", says)


async def test_an_upstream_that_never_accepts_the_connection_is_504_saying_so(serve: Serve) -> None:
    with full_backlog() as url:
        client = await serve(make_agent(url, timeout=aiohttp.ClientTimeout(connect=0.2, sock_read=60)))
        error = error_of(await client.post(CHAT, json=HI), 504)
    says = f"Cannot reach the upstream at {url}/chat/completions (no connection within 0.2 s)."
    assert (error["code"], error["message"]) == ("timeout", says)


# -- redirects: never followed beyond the upstream's origin, and only when allowed -----------------


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
async def test_an_upstream_redirect_is_502_and_nothing_is_followed(
    relay: Relay, upstream: FakeUpstream, status: int
) -> None:
    """A 307 would re-send the prompt elsewhere, a 302 fetch any address: neither happens."""
    async with run_recorder() as elsewhere:
        upstream.will(redirect(status, f"{elsewhere.url}/steal"), redirect(status, "/v1/chat/completions"))
        client = await relay()
        error = error_of(await client.post(CHAT, json=HI), 502)
        assert error["code"] == "upstream_redirect"
        assert f"answered {status}, a redirect to '{elsewhere.url}/steal'" in error["message"]
        assert "follows no redirects" in error["message"]
        assert "--upstream-follow-redirects" in error["message"]
        error = stream_error(await client.post(CHAT, json={**HI, "stream": True}))
        assert error["code"] == "upstream_redirect"  # same-origin, still not followed by default
        assert elsewhere.seen == []
    assert [seen.path for seen in upstream.requests] == ["/v1/chat/completions"] * 2


def following(url: str) -> OpenAIAgent:
    return OpenAIAgent(Upstream(url, UPSTREAM_MODEL, follow_redirects=True))


async def test_an_operator_may_allow_same_origin_redirects(serve: Serve, upstream: FakeUpstream) -> None:
    upstream.will(redirect(307, "/v2/chat/completions"), answer("moved", "here"))
    client = await serve(following(upstream.url))
    body = (await client.post(CHAT, json=HI)).json()
    assert body["choices"][0]["message"]["content"] == "movedhere"
    assert [seen.path for seen in upstream.requests] == ["/v1/chat/completions", "/v2/chat/completions"]
    assert upstream.requests[0].body == upstream.requests[1].body


@pytest.mark.parametrize("target", ["{elsewhere}/steal", "http://169.254.169.254/latest/meta-data/", ""])
async def test_allowed_redirects_never_leave_the_origin(
    serve: Serve, upstream: FakeUpstream, target: str
) -> None:
    async with run_recorder() as elsewhere:
        location = target.format(elsewhere=elsewhere.url)
        upstream.will(redirect(302, location), redirect(307, location))
        client = await serve(following(upstream.url))
        error = error_of(await client.post(CHAT, json=HI), 502)
        assert error["code"] == "upstream_redirect"
        assert "only same-origin redirects are followed" in error["message"]
        assert (
            stream_error(await client.post(CHAT, json={**HI, "stream": True}))["code"] == "upstream_redirect"
        )
        assert elsewhere.seen == []
    assert len(upstream.requests) == 2


async def test_a_redirect_loop_ends_in_a_502(serve: Serve, upstream: FakeUpstream) -> None:
    upstream.will(*[redirect(307, "/v1/chat/completions")] * 6)
    client = await serve(following(upstream.url))
    error = error_of(await client.post(CHAT, json=HI), 502)
    assert error["code"] == "upstream_redirect" and "redirected more than 5 times" in error["message"]
    assert len(upstream.requests) == 6


# -- network faults are counted in nanobot_upstream_failures_total ------------------------------


async def failures(client: httpx.AsyncClient, kind: str) -> float:
    """``nanobot_upstream_failures_total{kind}``, read through ``/metrics``."""
    text = (await client.get("/metrics")).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "nanobot_upstream_failures_total" and sample.labels == {"kind": kind}:
                return float(sample.value)
    return 0.0


FAULTS = [
    pytest.param(None, "upstream_error", 502, id="unreachable"),
    pytest.param(raw(TOKEN, then="drop"), "upstream_broken", 502, id="cut-off"),
    pytest.param(silent(), "timeout", 504, id="silent"),
    pytest.param(redirect(302, "http://169.254.169.254/"), "upstream_redirect", 502, id="redirect"),
]


@pytest.mark.parametrize(("script", "kind", "status"), FAULTS)
async def test_network_faults_are_counted_as_upstream_failures(
    serve: Serve, upstream: FakeUpstream, script: Script | None, kind: str, status: int
) -> None:
    url = closed_port_url() if script is None else upstream.url
    if script is not None:
        upstream.will(script, script)
    client = await serve(make_agent(url, timeout=aiohttp.ClientTimeout(connect=5.0, sock_read=0.1)))
    before = await failures(client, kind)
    assert error_of(await client.post(CHAT, json=HI), status)["code"] == kind
    text = "partial" if kind == "upstream_broken" else ""
    assert stream_error(await client.post(CHAT, json={**HI, "stream": True}), text)["code"] == kind
    assert await failures(client, kind) == before + 2


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
