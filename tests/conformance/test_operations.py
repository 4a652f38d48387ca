"""Operations on both stacks: /metrics counts exactly, one log line per request, overload
answered 503 before any byte of a stream."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conformance.conftest import Serve
from tests.conformance.test_http import assert_error
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
