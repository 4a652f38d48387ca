"""Issue 9 on both stacks: unshared sessions, bounded requests, timeouts that hold, browser guards."""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import pytest

from tests.conformance.conftest import Serve
from tests.conformance.test_http import assert_error
from tests.support.agents import GateAgent, ScriptedAgent
from tests.support.sse import data_events

pytestmark = pytest.mark.asyncio

PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\0" * 16).decode()


def body(content: str = "hi", **extra: Any) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": content}], **extra}


class Stubborn:
    """An agent that swallows its cancellation and keeps its turn going until ``release``."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.swallowed = asyncio.Event()
        self.finished = asyncio.Event()
        self.entered = asyncio.Event()
        self.sessions: list[str] = []

    async def process_direct(self, *, content: str, session_key: str, **kwargs: Any) -> str:
        self.sessions.append(session_key)
        self.entered.set()
        if content == "quick":
            return "quick answer"
        while not self.release.is_set():
            try:
                await self.release.wait()
            except asyncio.CancelledError:
                self.swallowed.set()
        self.finished.set()
        return "late"


# -- 1. no conversation shared without a session id ---------------------------------------------


async def test_clients_that_name_no_session_run_in_parallel_as_api_default(serve: Serve) -> None:
    agent = GateAgent()
    client = await serve(agent)
    first = asyncio.create_task(client.post("/v1/chat/completions", json=body("one")))
    await agent.entered.wait()
    agent.entered.clear()
    second = asyncio.create_task(client.post("/v1/chat/completions", json=body("two")))
    await agent.entered.wait()  # the second turn started while the first still runs
    agent.release.set()
    replies = await asyncio.gather(first, second)
    assert [r.status_code for r in replies] == [200, 200]
    assert sorted(agent.log) == ["end one", "end two", "start one", "start two"]


async def test_agents_that_take_it_are_told_the_turn_is_stateless(serve: Serve) -> None:
    agent = ScriptedAgent(["ok"])
    client = await serve(agent)
    await client.post("/v1/chat/completions", json=body())
    await client.post("/v1/chat/completions", json=body(session_id="mine"))
    assert [(c["session_key"], c["stateless"]) for c in agent.calls] == [
        ("api:default", True),
        ("api:mine", False),
    ]


# -- 2. bounded requests --------------------------------------------------------------------------


async def test_too_many_messages_is_a_clear_400(serve: Serve) -> None:
    client = await serve(ScriptedAgent(["ok"]), max_messages=3)
    many = {"messages": [{"role": "user", "content": "x"}] * 4}
    assert_error(await client.post("/v1/chat/completions", json=many), 400, code="too_many_messages")
    few = {"messages": [{"role": "user", "content": "x"}] * 3}
    assert (await client.post("/v1/chat/completions", json=few)).status_code == 200


async def test_too_many_images_is_a_clear_400(serve: Serve, tmp_path: Any) -> None:
    client = await serve(ScriptedAgent(["ok"]), max_attachments=2, media_dir=tmp_path)
    part = {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}}
    three = {"messages": [{"role": "user", "content": [part] * 3}]}
    error = assert_error(await client.post("/v1/chat/completions", json=three), 400)
    assert error["code"] == "too_many_images"
    two = {"messages": [{"role": "user", "content": [part] * 2}]}
    assert (await client.post("/v1/chat/completions", json=two)).status_code == 200


async def test_too_many_files_is_a_clear_400(serve: Serve, tmp_path: Any) -> None:
    client = await serve(ScriptedAgent(["ok"]), max_attachments=2, media_dir=tmp_path)
    png = base64.b64decode(PNG)
    files = [("files", (f"{i}.png", png, "image/png")) for i in range(3)]
    reply = await client.post("/v1/chat/completions", data={"message": "look"}, files=files)
    assert_error(reply, 400, code="too_many_files", param="files")
    reply = await client.post("/v1/chat/completions", data={"message": "look"}, files=files[:2])
    assert reply.status_code == 200


async def test_a_body_that_never_arrives_is_a_408(serve: Serve) -> None:
    client = await serve(ScriptedAgent(["ok"]), body_timeout=0.3)
    host, port = client.base_url.host, client.base_url.port
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{"
    )
    try:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        assert head.startswith(b"HTTP/1.1 408")
    finally:
        writer.close()


# -- 7. timeouts that hold against any agent --------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
async def test_an_agent_that_swallows_cancellation_is_abandoned_at_the_deadline(
    serve: Serve, stream: bool
) -> None:
    agent = Stubborn()
    client = await serve(agent, request_timeout=0.3)
    reply = await client.post("/v1/chat/completions", json=body("slow", session_id="s", stream=stream))
    assert agent.swallowed.is_set() and not agent.finished.is_set()
    if stream:
        assert reply.status_code == 200
        assert data_events(reply.content)[-1]["error"]["code"] == "timeout"
    else:
        assert_error(reply, 504, code="timeout")
    # The session is free again for its next turn, though the abandoned agent still runs.
    quick = await client.post("/v1/chat/completions", json=body("quick", session_id="s"))
    assert quick.json()["choices"][0]["message"]["content"] == "quick answer"
    agent.release.set()
    await agent.finished.wait()


async def test_time_queued_behind_a_session_counts_against_the_timeout(serve: Serve) -> None:
    agent = Stubborn()  # holds its session for the abandon grace past its own deadline
    client = await serve(agent, request_timeout=0.3)
    first = asyncio.create_task(client.post("/v1/chat/completions", json=body("one", session_id="s")))
    await agent.entered.wait()
    queued = await client.post("/v1/chat/completions", json=body("two", session_id="s"))
    assert_error(queued, 504, code="timeout")
    assert agent.sessions == ["api:s"]  # the queued turn timed out waiting: it never reached the agent
    assert_error(await first, 504, code="timeout")
    agent.release.set()
    await agent.finished.wait()


# -- 8. browser guards without a key -------------------------------------------------------------------


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", None])
async def test_a_body_that_is_not_json_or_a_form_is_a_415(serve: Serve, content_type: str | None) -> None:
    client = await serve(ScriptedAgent(["ok"]))
    headers = {"Content-Type": content_type} if content_type else {}
    raw = b'{"messages": [{"role": "user", "content": "hi"}]}'
    reply = await client.post("/v1/chat/completions", content=raw, headers=headers)
    assert_error(reply, 415, code="unsupported_media_type")


async def test_json_with_a_charset_is_accepted(serve: Serve) -> None:
    client = await serve(ScriptedAgent(["ok"]))
    raw = b'{"messages": [{"role": "user", "content": "hi"}]}'
    headers = {"Content-Type": "application/json; charset=utf-8"}
    assert (await client.post("/v1/chat/completions", content=raw, headers=headers)).status_code == 200


async def test_a_foreign_host_on_loopback_is_refused_without_a_key(serve: Serve) -> None:
    agent = ScriptedAgent(["ok"])
    client = await serve(agent)
    for host in ("attacker.example", "attacker.example:8900", "127.0.0.1.nip.io"):
        reply = await client.post("/v1/chat/completions", json=body(), headers={"Host": host})
        assert_error(reply, 421, code="host_not_allowed")
    for host in ("localhost:1234", "127.0.0.1", "[::1]:80", "app.localhost"):
        reply = await client.post("/v1/chat/completions", json=body(), headers={"Host": host})
        assert reply.status_code == 200, (host, reply.text)
    assert len(agent.calls) == 4


async def test_allowed_hosts_and_a_key_lift_the_host_check(serve: Serve) -> None:
    client = await serve(ScriptedAgent(["ok"]), allowed_hosts=["api.example"])
    reply = await client.post("/v1/chat/completions", json=body(), headers={"Host": "api.example"})
    assert reply.status_code == 200


async def test_a_key_lifts_the_browser_guards(serve: Serve) -> None:
    client = await serve(ScriptedAgent(["ok"]), api_key="k")
    headers = {"Host": "attacker.example", "Origin": "https://attacker.example", "Authorization": "Bearer k"}
    assert (await client.post("/v1/chat/completions", json=body(), headers=headers)).status_code == 200


async def test_a_foreign_origin_is_refused_without_a_key(serve: Serve) -> None:
    agent = ScriptedAgent(["ok"])
    client = await serve(agent, cors_origins=["https://good.example"])
    reply = await client.post("/v1/chat/completions", json=body(), headers={"Origin": "https://evil.example"})
    assert_error(reply, 403, code="origin_not_allowed")
    reply = await client.post("/v1/chat/completions", json=body(), headers={"Origin": "https://good.example"})
    assert reply.status_code == 200
    assert len(agent.calls) == 1


# -- 9. smaller ----------------------------------------------------------------------------------------


async def test_a_full_session_queue_answers_429_with_retry_after(serve: Serve) -> None:
    agent = GateAgent()
    client = await serve(agent, max_session_queue=0)
    first = asyncio.create_task(client.post("/v1/chat/completions", json=body(session_id="s")))
    await agent.entered.wait()
    second = await client.post("/v1/chat/completions", json=body(session_id="s"))
    assert_error(second, 429, code="session_busy")
    assert second.headers["retry-after"] == "1"
    agent.release.set()
    assert (await first).status_code == 200


@pytest.mark.parametrize("stream", [False, True])
async def test_an_agent_that_breaks_the_text_contract_gets_a_clear_error(serve: Serve, stream: bool) -> None:
    client = await serve(ScriptedAgent([5] if stream else [], result=5))  # type: ignore[list-item]
    reply = await client.post("/v1/chat/completions", json=body(stream=stream))
    if stream:
        error = data_events(reply.content)[-1]["error"]
        assert error["code"] == "agent_contract" and "int" in error["message"]
    else:
        error = assert_error(reply, 500, code="agent_contract")
        assert "int" in error["message"]


async def test_a_non_ascii_api_key_works_the_same_on_both_stacks(serve: Serve) -> None:
    key = "clé-ß-✓"
    client = await serve(ScriptedAgent(["ok"]), api_key=key)
    host, port = client.base_url.host, client.base_url.port
    raw = b'{"messages": [{"role": "user", "content": "hi"}]}'

    def request(token: bytes) -> bytes:
        return (
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
            b"Content-Type: application/json\r\nAuthorization: Bearer " + token + b"\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(raw), raw)
        )

    async def status(token: bytes) -> bytes:
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(request(token))
        try:
            return (await asyncio.wait_for(reader.readline(), 10)).split(b" ")[1]
        finally:
            writer.close()

    assert await status(key.encode()) == b"200"
    assert await status(b"cl\xe9") == b"401"  # latin-1 bytes of another key
    assert await status(b"\xff\xfe") == b"401"  # not UTF-8 at all: 401, never 500


@pytest.mark.parametrize(
    ("method", "path"),
    [("POST", "/v1/chat/completions/"), ("GET", "/health/"), ("GET", "/v1/models/"), ("GET", "//health")],
)
async def test_a_trailing_slash_is_a_404_on_both_stacks(serve: Serve, method: str, path: str) -> None:
    client = await serve(ScriptedAgent(["ok"]))
    url = client.base_url.copy_with(raw_path=path.encode())  # as given: httpx would send '//health' as '/'
    reply = await client.request(method, url, json=body())
    assert_error(reply, 404)


@pytest.mark.parametrize(("version", "status"), [(b"1.1", b"400"), (b"1.0", b"200")])
async def test_a_missing_host_is_judged_by_the_http_version(
    serve: Serve, version: bytes, status: bytes
) -> None:
    client = await serve(ScriptedAgent(["ok"]))
    reader, writer = await asyncio.open_connection(client.base_url.host, client.base_url.port)
    writer.write(b"GET /health HTTP/%s\r\n\r\n" % version)
    try:
        assert (await asyncio.wait_for(reader.readline(), 10)).split(b" ")[1] == status
    finally:
        writer.close()
