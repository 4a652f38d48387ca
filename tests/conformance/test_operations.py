"""Operations on both stacks: /metrics counts exactly (in the format the scraper asks for), one
log line per request saying how it ended (cut ones too), abandoned agents counted and named,
overload answered 503 before any byte of a stream."""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import orjson
import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families as openmetrics_families
from prometheus_client.parser import text_string_to_metric_families

from tests.conformance.conftest import Serve
from tests.conformance.test_hardening import Stubborn
from tests.conformance.test_http import assert_error
from tests.support.agents import GateAgent, Result, ScriptedAgent
from tests.support.sse import data_events

pytestmark = pytest.mark.asyncio


class Mixed:
    """'fail' raises; anything else streams its words."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.waiting = 0

    async def process_direct(self, *, content: str, on_stream: Any = None, **kwargs: Any) -> str:
        if content == "fail":
            raise RuntimeError("boom")
        if content == "wait":
            self.waiting += 1
            await self.release.wait()
        for word in content.split():
            if on_stream:
                await on_stream(word)
        return content


async def scrape(client: httpx.AsyncClient) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    reply = await client.get("/metrics")
    assert reply.status_code == 200 and reply.headers["content-type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(reply.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def delta(before: dict[Any, float], after: dict[Any, float], name: str, **labels: str) -> float:
    key = (name, tuple(sorted(labels.items())))
    return after.get(key, 0.0) - before.get(key, 0.0)


def access_lines(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    """The fields of every request log line captured."""
    return [r.access for r in caplog.records if r.name == "nanobot.access"]  # type: ignore[attr-defined]


def chat(content: str, stream: bool = False) -> dict[str, Any]:
    return {"stream": stream, "messages": [{"role": "user", "content": content}]}


async def test_metrics_count_a_known_mix_exactly(serve: Serve) -> None:
    client = await serve(Mixed())
    before = await scrape(client)
    for _ in range(2):
        assert (await client.post("/v1/chat/completions", json=chat("a b c", stream=True))).status_code == 200
    await client.post("/v1/chat/completions", json=chat("x y"))
    failed = await client.post("/v1/chat/completions", json=chat("fail", stream=True))
    assert data_events(failed.content)[-1]["error"]["code"] == "agent_error"
    await client.post("/v1/chat/completions", json={"messages": []})
    await client.get("/health")
    after = await scrape(client)
    chat_route = "/v1/chat/completions"
    assert delta(before, after, "nanobot_requests_total", route=chat_route, status="200") == 4
    assert delta(before, after, "nanobot_requests_total", route=chat_route, status="400") == 1
    assert delta(before, after, "nanobot_requests_total", route="/health", status="200") == 1
    assert delta(before, after, "nanobot_tokens_streamed_total") == 6
    assert delta(before, after, "nanobot_turns_total", outcome="completed") == 3
    assert delta(before, after, "nanobot_turns_total", outcome="failed") == 1
    assert delta(before, after, "nanobot_time_to_first_token_seconds_count") == 2
    assert delta(before, after, "nanobot_inter_token_gap_seconds_count") == 4
    assert delta(before, after, "nanobot_inter_token_gap_seconds_bucket", le="+Inf") == 4
    assert delta(before, after, "nanobot_turn_duration_seconds_count") == 4
    assert after[("nanobot_streams_open", ())] == before.get(("nanobot_streams_open", ()), 0)


async def test_metrics_are_behind_the_key_unless_public(serve: Serve) -> None:
    client = await serve(Mixed(), api_key="k")
    assert_error(await client.get("/metrics"), 401)
    assert (await client.get("/metrics", headers={"Authorization": "Bearer k"})).status_code == 200
    public = await serve(Mixed(), api_key="k", metrics_public=True)
    assert (await public.get("/metrics")).status_code == 200


async def test_one_log_line_per_request_with_its_fields(
    serve: Serve, caplog: pytest.LogCaptureFixture
) -> None:
    client = await serve(Mixed())
    with caplog.at_level(logging.INFO, logger="nanobot.access"):
        body = {**chat("a b", stream=True), "session_id": "s1"}
        await client.post(
            "/v1/chat/completions",
            json=body,
            headers={"X-Request-Id": "r-1", "Authorization": "Bearer secret"},
        )
        await client.post("/v1/chat/completions", json=chat("fail", stream=True))
        await client.get("/health")
    lines = access_lines(caplog)
    assert len(lines) == 3
    streamed, failed, health = lines
    assert streamed["method"] == "POST" and streamed["path"] == "/v1/chat/completions"
    assert streamed["status"] == 200 and streamed["tokens"] == 2 and streamed["ttft_ms"] is not None
    assert streamed["session"] == "api:s1" and streamed["request_id"] == "r-1"
    assert streamed["outcome"] == "completed" and streamed["client"] == "127.0.0.1"
    assert failed["outcome"] == "failed" and failed["tokens"] == 0 and failed["error"] == "agent_error"
    assert health["path"] == "/health" and health["status"] == 200
    text = caplog.text
    assert "secret" not in text and "a b" not in text  # never a key, a prompt or a reply


async def test_a_disconnected_stream_is_logged_as_such(
    serve: Serve, caplog: pytest.LogCaptureFixture
) -> None:
    agent = Mixed()
    client = await serve(agent)
    with caplog.at_level(logging.INFO, logger="nanobot.access"):
        async with client.stream("POST", "/v1/chat/completions", json=chat("wait", stream=True)) as response:
            assert response.status_code == 200
        await client.get("/health")  # after the server has seen the disconnect and ended the turn
        for _ in range(100):
            if any(getattr(r, "access", {}).get("outcome") == "disconnected" for r in caplog.records):
                break
            await asyncio.sleep(0.01)
    outcomes = [line["outcome"] for line in access_lines(caplog) if line["path"] == "/v1/chat/completions"]
    assert outcomes == ["disconnected"]


async def test_past_max_streams_exactly_the_overflow_gets_503_before_any_byte(serve: Serve) -> None:
    agent = Mixed()
    client = await serve(agent, max_streams=10)
    requests = [client.post("/v1/chat/completions", json=chat("wait", stream=True)) for _ in range(50)]
    tasks = [asyncio.create_task(r) for r in requests]
    for _ in range(500):  # until every request has been answered or admitted
        if agent.waiting == 10 and sum(t.done() for t in tasks) == 40:
            break
        await asyncio.sleep(0.01)
    refused = [t.result() for t in tasks if t.done()]
    assert len(refused) == 40
    for reply in refused:
        assert_error(reply, 503, code="overloaded")
        assert reply.headers["retry-after"] == "1"
    agent.release.set()
    served = await asyncio.gather(*tasks)
    assert sum(r.status_code == 200 for r in served) == 10
    assert (await client.post("/v1/chat/completions", json=chat("ok", stream=True))).status_code == 200


class Heard(logging.Handler):
    """Sets ``event`` when a request log line for ``path`` is emitted (the servers run in this loop)."""

    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = path
        self.event = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(record, "access", {}).get("path") == self.path:
            self.event.set()


@contextmanager
def hearing(path: str) -> Iterator[asyncio.Event]:
    """An event set once the request log has a line for ``path``."""
    handler = Heard(path)
    access_logger = logging.getLogger("nanobot.access")
    access_logger.addHandler(handler)
    try:
        yield handler.event
    finally:
        access_logger.removeHandler(handler)


async def test_every_line_says_how_the_request_ended(serve: Serve, caplog: pytest.LogCaptureFixture) -> None:
    agent = ScriptedAgent(result=Result("four words of answer", usage={"completion_tokens": 4}))
    client = await serve(agent, api_key="k")
    key = {"Authorization": "Bearer k"}
    with caplog.at_level(logging.INFO, logger="nanobot.access"):
        replies = [
            await client.get("/v1/models"),
            await client.get("/v1/models/other", headers=key),
            await client.post("/v1/chat/completions", json={**chat("hi"), "model": "other"}, headers=key),
            await client.get("/nowhere", headers=key),
            await client.post("/v1/chat/completions", json=chat("hi"), headers=key),
            await client.get("/v1/models", headers=key),
        ]
    lines = access_lines(caplog)
    assert (
        [line["status"] for line in lines]
        == [r.status_code for r in replies]
        == [401, 404, 404, 404, 200, 200]
    )
    for line, reply in zip(lines, replies, strict=True):  # GET routes too: the id the client got
        assert line["request_id"] == reply.headers["x-request-id"]
        assert isinstance(line["duration_ms"], float) and line["duration_ms"] >= 0
    errors = [line["error"] for line in lines]
    assert errors == ["invalid_api_key", "model_not_found", "model_not_found", "not_found", None, None]
    assert [line["outcome"] for line in lines] == ["refused"] * 4 + ["completed"] * 2
    assert lines[4]["tokens"] == 4  # a non-streaming turn: the tokens its agent reported
    assert all("e-0" not in record.getMessage() for record in caplog.records)  # fixed notation


async def test_a_client_that_leaves_before_its_answer_is_counted_and_logged(
    serve: Serve, caplog: pytest.LogCaptureFixture
) -> None:
    agent = GateAgent()
    client = await serve(agent)
    before = await scrape(client)
    with caplog.at_level(logging.INFO, logger="nanobot.access"), hearing("/v1/chat/completions") as heard:
        waiting = asyncio.create_task(client.post("/v1/chat/completions", json=chat("hi")))
        await agent.entered.wait()
        waiting.cancel()  # the client leaves while its (non-streaming) turn runs
        await asyncio.wait_for(heard.wait(), 5)
    after = await scrape(client)
    (line,) = [line for line in access_lines(caplog) if line["path"] == "/v1/chat/completions"]
    assert line["status"] == 499 and line["outcome"] == "disconnected"
    assert delta(before, after, "nanobot_requests_total", route="/v1/chat/completions", status="499") == 1
    assert delta(before, after, "nanobot_turns_total", outcome="disconnected") == 1


async def test_a_stream_cut_before_its_head_is_counted_and_logged(
    serve: Serve, caplog: pytest.LogCaptureFixture
) -> None:
    agent = Mixed()
    client = await serve(agent)
    before = await scrape(client)
    port = httpx.URL(str(client.base_url)).port
    body = orjson.dumps(chat("wait", stream=True))
    head = "POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
    with caplog.at_level(logging.INFO, logger="nanobot.access"), hearing("/v1/chat/completions") as heard:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body)
        await writer.drain()
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()  # a reset, at once: no response head can reach the client
        await asyncio.wait_for(heard.wait(), 5)
    agent.release.set()
    after = await scrape(client)
    (line,) = [line for line in access_lines(caplog) if line["path"] == "/v1/chat/completions"]
    assert line["status"] == 200 and line["outcome"] == "disconnected"
    assert delta(before, after, "nanobot_requests_total", route="/v1/chat/completions", status="200") == 1


OPENMETRICS = "application/openmetrics-text"
#: What Prometheus 3 sends when it scrapes.
PROMETHEUS_ACCEPT = (
    "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.6,"
    "application/openmetrics-text;version=0.0.1;q=0.5,text/plain;version=1.0.0;escaping=allow-utf-8;q=0.4,"
    "text/plain;version=0.0.4;q=0.3,*/*;q=0.2"
)


@pytest.mark.parametrize(
    ("accept", "content_type"),
    [
        (None, "text/plain; version=0.0.4"),
        ("text/plain", "text/plain; version=0.0.4"),
        (f"{OPENMETRICS}; version=1.0.0", OPENMETRICS),
        (PROMETHEUS_ACCEPT, OPENMETRICS),
    ],
)
async def test_metrics_follow_the_scrapers_accept_without_created_series(
    serve: Serve, accept: str | None, content_type: str
) -> None:
    client = await serve(Mixed())
    await client.post("/v1/chat/completions", json=chat("a b", stream=True))
    reply = await client.get("/metrics", headers={"Accept": accept} if accept else {})
    assert reply.status_code == 200 and reply.headers["content-type"].startswith(content_type)
    names = {line.split("{")[0].split(" ")[0] for line in reply.text.splitlines() if not line.startswith("#")}
    assert "nanobot_tokens_streamed_total" in names and "nanobot_turn_duration_seconds_count" in names
    assert not [name for name in names if name.endswith("_created")]
    if content_type == OPENMETRICS:
        assert reply.text.endswith("# EOF\n")
        parsed = {f.name for f in openmetrics_families(reply.text)}
        assert {"nanobot_requests", "nanobot_turns_abandoned"} <= parsed


@pytest.mark.parametrize("stream", [False, True])
async def test_an_agent_that_ignores_its_cancellation_is_counted_and_named_once(
    serve: Serve, caplog: pytest.LogCaptureFixture, stream: bool
) -> None:
    agent = Stubborn()
    client = await serve(agent, request_timeout=0.2)
    try:
        before = await scrape(client)
        with caplog.at_level(logging.WARNING, logger="nanobot.api"):
            body = {**chat("slow", stream=stream), "session_id": "stuck-7"}
            reply = await client.post("/v1/chat/completions", json=body, headers={"X-Request-Id": "r-77"})
        if stream:
            assert data_events(reply.content)[-1]["error"]["code"] == "timeout"
        else:
            assert_error(reply, 504, code="timeout")
        after = await scrape(client)
        assert delta(before, after, "nanobot_turns_abandoned_total") == 1
        abandoned = [getattr(r, "fields", {}) for r in caplog.records if r.name == "nanobot.api"]
        abandoned = [fields for fields in abandoned if fields.get("event") == "turn_abandoned"]
        assert abandoned == [{"event": "turn_abandoned", "session": "api:stuck-7", "request_id": "r-77"}]
    finally:  # the agent ignores cancellation: only this ends it, so that the server can stop
        agent.release.set()
    await asyncio.wait_for(agent.finished.wait(), 5)
