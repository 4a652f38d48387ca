"""Request head limits, the header deadline and ``Expect: 100-continue``, through raw sockets,
the same on both stacks."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from typing import Any

import pytest

from nanobot.api.limits import HeadLimits
from tests.conformance.conftest import Serve
from tests.support.agents import GateAgent, ScriptedAgent
from tests.support.servers import run_server
from tests.support.sse import data_events, text_of

pytestmark = pytest.mark.asyncio

LIMITS = HeadLimits(max_header_size=1024, max_headers=10, header_timeout=0.6)
#: How long a test waits for the server to close a connection: generous, never slept through.
CLOSE_BOUND = 5.0

Connection = tuple[asyncio.StreamReader, asyncio.StreamWriter]
Connect = Callable[[], Awaitable[Connection]]
Start = Callable[..., AbstractAsyncContextManager[Connect]]


@pytest.fixture
def server(stack: str) -> Start:
    """``async with server(agent) as connect``: a real server; ``await connect()`` a raw socket."""

    @asynccontextmanager
    async def start(agent: Any = None, limits: HeadLimits = LIMITS, **options: Any) -> AsyncIterator[Connect]:
        writers: list[asyncio.StreamWriter] = []
        async with run_server(stack, agent or ScriptedAgent(["hi"]), limits=limits, **options) as url:
            port = int(url.rsplit(":", 1)[1])

            async def connect() -> Connection:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writers.append(writer)
                return reader, writer

            try:
                yield connect
            finally:
                for writer in writers:
                    writer.close()

    return start


def request(path: str = "/health", headers: dict[str, str] | None = None, body: bytes = b"") -> bytes:
    lines = [f"{'POST' if body else 'GET'} {path} HTTP/1.1", "Host: 127.0.0.1"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    if body:
        lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
    return "\r\n".join([*lines, "", ""]).encode() + body


async def read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    """One response with a Content-Length or chunked body: status, headers, body."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), CLOSE_BOUND)
    status_line, *lines = head.decode("latin-1").split("\r\n")[:-2]
    headers = {name.lower(): value.strip() for name, value in (line.split(":", 1) for line in lines)}
    if "content-length" in headers:
        return int(status_line.split()[1]), headers, await reader.readexactly(int(headers["content-length"]))
    body = b""
    while size := int(await reader.readuntil(b"\r\n"), 16):
        body += await reader.readexactly(size + 2)
        body = body[:-2]
    await reader.readuntil(b"\r\n")
    return int(status_line.split()[1]), headers, body


async def seconds_until_closed(reader: asyncio.StreamReader) -> float:
    """Wait for the server to close the connection (EOF or reset); how long it took."""
    started = time.perf_counter()
    try:
        while await asyncio.wait_for(reader.read(65536), CLOSE_BOUND):
            pass
    except ConnectionError:
        pass
    return time.perf_counter() - started


async def answer_or_reset(reader: asyncio.StreamReader) -> int | None:
    """The status of the server's answer; None if a reset lost it (data sent after its close)."""
    try:
        status, _, _ = await read_response(reader)
    except (ConnectionError, asyncio.IncompleteReadError):
        return None
    return status


async def assert_refused(connect: Connect, raw: bytes) -> dict[str, Any]:
    """``raw`` is answered 431 with OpenAI's error JSON, and the connection closed."""
    reader, writer = await connect()
    writer.write(raw)
    status, headers, body = await read_response(reader)
    assert status == 431, body
    assert headers["content-type"].startswith("application/json")
    error: dict[str, Any] = json.loads(body)["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert (error["type"], error["code"]) == ("invalid_request_error", "request_header_fields_too_large")
    assert await seconds_until_closed(reader) < CLOSE_BOUND
    return error


async def assert_ok(connect: Connect, raw: bytes) -> None:
    reader, writer = await connect()
    writer.write(raw)
    status, _, body = await read_response(reader)
    assert status == 200, body


# Sizes: the request target, each header name and each header value count on their own.


async def test_header_value_at_the_limit_passes_one_byte_more_is_431(server: Start) -> None:
    async with server() as connect:
        await assert_ok(connect, request(headers={"X-Big": "a" * 1024, "X-Also": "b" * 1024}))
        error = await assert_refused(connect, request(headers={"X-Big": "a" * 1025}))
        assert "1024 bytes" in error["message"]


async def test_header_name_over_the_limit_is_431(server: Start) -> None:
    async with server() as connect:
        await assert_refused(connect, request(headers={"X" * 1025: "v"}))


async def test_request_target_over_the_limit_is_431(server: Start) -> None:
    async with server() as connect:
        await assert_ok(connect, request("/health?" + "q" * (1024 - 8)))
        await assert_refused(connect, request("/health?" + "q" * 1024))


async def test_more_headers_than_the_limit_is_431(server: Start) -> None:
    async with server() as connect:
        nine = {f"X-{n}": "v" for n in range(9)}  # and Host: ten
        await assert_ok(connect, request(headers=nine))
        error = await assert_refused(connect, request(headers={**nine, "X-9": "v"}))
        assert "more than 10 header" in error["message"]


async def test_many_small_headers_streamed_are_refused_early(server: Start) -> None:
    async with server() as connect:
        reader, writer = await connect()
        writer.write(b"GET /health HTTP/1.1\r\n")
        for n in range(100):
            writer.write(b"X-%d: v\r\n" % n)
            await writer.drain()
        assert await answer_or_reset(reader) in (431, None)  # lines sent after the close: a reset
        assert await seconds_until_closed(reader) < CLOSE_BOUND


async def test_a_32_mb_header_is_refused_long_before_it_is_read(server: Start) -> None:
    """The server answers (or at least closes) after a few KiB, never reading 32 MB."""
    async with server(limits=HeadLimits()) as connect:
        reader, writer = await connect()
        answer = asyncio.create_task(answer_or_reset(reader))
        writer.write(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: ")
        piece, sent = b"a" * 65536, 0
        with pytest.raises(ConnectionError):
            while sent < 32 * 2**20:
                writer.write(piece)
                await asyncio.wait_for(writer.drain(), CLOSE_BOUND)
                sent += len(piece)
        assert sent < 16 * 2**20  # what the socket buffers took in before the reset
        assert await answer in (431, None)  # the reset may discard the answer: the close matters
        await assert_ok(connect, request())  # and the server is fine


async def test_a_normal_head_in_tiny_pieces_and_a_long_body_line_pass(server: Start) -> None:
    """The meter follows a head across chunks and stops at its end: a body is not a header."""
    content = "x" * 20_000  # one body line far over max_header_size
    body = json.dumps({"messages": [{"role": "user", "content": content}]}).encode()
    async with server(ScriptedAgent(["ok"])) as connect:
        reader, writer = await connect()
        raw = request("/v1/chat/completions", {"X-A": "a" * 1000}, body)
        head_end = raw.index(b"\r\n\r\n") + 4
        for start in range(0, head_end, 7):
            writer.write(raw[start : min(start + 7, head_end)])
            await writer.drain()
        writer.write(raw[head_end:])
        status, _, answer = await read_response(reader)
        assert status == 200, answer
        await assert_ok(connect, raw)  # head and body in one chunk


async def test_pipelined_requests_are_all_answered(server: Start) -> None:
    async with server() as connect:
        reader, writer = await connect()
        writer.write(request() * 3)
        for _ in range(3):
            status, _, _ = await read_response(reader)
            assert status == 200


# The header deadline: LIMITS gives a connection 0.6 s to deliver a whole head.


async def test_a_silent_connection_is_closed_at_the_deadline(server: Start) -> None:
    async with server() as connect:
        reader, _ = await connect()
        assert 0.5 < await seconds_until_closed(reader) < CLOSE_BOUND


async def test_a_head_dripped_a_byte_at_a_time_is_closed_at_the_deadline(server: Start) -> None:
    async with server() as connect:
        reader, writer = await connect()
        started = time.perf_counter()
        writer.write(b"GET /health HTTP/1.1\r\nX-Slow: ")

        async def drip() -> None:
            while True:
                await asyncio.sleep(0.1)
                writer.write(b"a")

        dripping = asyncio.create_task(drip())
        try:
            await seconds_until_closed(reader)
        finally:
            dripping.cancel()
        assert 0.5 < time.perf_counter() - started < CLOSE_BOUND


async def test_an_idle_keep_alive_connection_is_closed_and_a_prompt_one_is_not(server: Start) -> None:
    async with server() as connect:
        reader, writer = await connect()
        for _ in range(4):  # each response restarts the clock: 4 x 0.2 s > 0.6 s in all
            writer.write(request())
            status, headers, _ = await read_response(reader)
            assert status == 200
            assert headers.get("connection", "keep-alive").lower() != "close"
            await asyncio.sleep(0.2)
        assert await seconds_until_closed(reader) < CLOSE_BOUND


class SlowAgent:
    """Streams ``count`` tokens ``gap`` seconds apart."""

    def __init__(self, count: int, gap: float) -> None:
        self.count, self.gap = count, gap

    async def process_direct(self, *, on_stream: Any = None, **kwargs: Any) -> str:
        for n in range(self.count):
            await asyncio.sleep(self.gap)
            await on_stream(f"t{n} ")
        return ""


async def test_a_stream_longer_than_the_deadline_is_not_cut(server: Start) -> None:
    body = json.dumps({"stream": True, "messages": [{"role": "user", "content": "go"}]}).encode()
    async with server(SlowAgent(count=5, gap=0.15)) as connect:
        reader, writer = await connect()
        writer.write(request("/v1/chat/completions", body=body))
        status, _, answer = await read_response(reader)
        assert status == 200
        assert text_of(data_events(answer)) == "t0 t1 t2 t3 t4 "


# Expect: 100-continue. The client sends its head and waits: a request refused from its head alone
# is answered at once, and 100 Continue comes only when the server is about to read the body.

CHAT = "/v1/chat/completions"
BODY = json.dumps({"messages": [{"role": "user", "content": "hi"}]}).encode()


def waiting_head(length: int, headers: dict[str, str] | None = None, expect: str = "100-continue") -> bytes:
    """A chat request's head announcing a ``length``-byte body, which it does not send yet."""
    return request(CHAT, {"Expect": expect, **(headers or {})}, b"x" * length)[:-length]


async def test_a_too_large_upload_awaiting_100_continue_is_answered_413_first(server: Start) -> None:
    async with server(max_body_bytes=1024) as connect:
        reader, writer = await connect()
        writer.write(waiting_head(64 * 2**20))
        status, _, body = await read_response(reader)
        assert status == 413, body
        assert json.loads(body)["error"]["code"] == "request_too_large"


async def test_an_unauthorized_upload_awaiting_100_continue_is_answered_401_first(server: Start) -> None:
    async with server(api_key="sk-test") as connect:
        reader, writer = await connect()
        writer.write(waiting_head(len(BODY)))
        status, _, body = await read_response(reader)
        assert status == 401, body


async def test_a_body_at_the_limit_gets_100_continue_then_its_answer(server: Start) -> None:
    async with server(max_body_bytes=len(BODY)) as connect:
        reader, writer = await connect()
        writer.write(waiting_head(len(BODY)))
        interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), CLOSE_BOUND)
        assert interim.startswith(b"HTTP/1.1 100 Continue\r\n")
        writer.write(BODY)
        status, _, answer = await read_response(reader)
        assert status == 200, answer
        assert json.loads(answer)["choices"][0]["message"]["content"] == "hi"


async def test_an_unknown_expectation_is_ignored(server: Start) -> None:
    async with server() as connect:
        reader, writer = await connect()
        writer.write(request(CHAT, {"Expect": "something-else"}, BODY))
        status, _, answer = await read_response(reader)
        assert status == 200, answer


# Limits on what a request may ask for, at their edge: the limit passes, one more is refused.


def padded(size: int) -> bytes:
    """A valid chat request of exactly ``size`` bytes (JSON allows trailing spaces)."""
    return BODY + b" " * (size - len(BODY))


async def test_a_body_of_exactly_max_body_bytes_passes_one_byte_more_is_413(serve: Serve) -> None:
    client = await serve(ScriptedAgent(["x"]), max_body_bytes=1000)

    async def chunked(body: bytes) -> AsyncIterator[bytes]:
        for start in range(0, len(body), 300):
            yield body[start : start + 300]

    for size, status in ((1000, 200), (1001, 413)):
        sized = await client.post(CHAT, content=padded(size), headers={"Content-Type": "application/json"})
        assert sized.status_code == status, sized.text
        unsized = await client.post(
            CHAT, content=chunked(padded(size)), headers={"Content-Type": "application/json"}
        )
        assert "content-length" not in unsized.request.headers
        assert unsized.status_code == status, unsized.text
    assert sized.json()["error"]["code"] == "request_too_large"


@pytest.mark.parametrize("max_pending", [1, 3])
async def test_max_pending_admits_exactly_that_many_waiting_turns(serve: Serve, max_pending: int) -> None:
    """One turn holds session ``s``; ``max_pending`` more wait for it; the next one is 503."""
    agent = GateAgent(after=["done"])
    client = await serve(agent, max_pending=max_pending)
    turn = {"messages": [{"role": "user", "content": "hi"}], "session_id": "s", "stream": True}
    async with AsyncExitStack() as streams:
        holder = await streams.enter_async_context(client.stream("POST", CHAT, json=turn))
        await agent.entered.wait()
        waiting = [
            await streams.enter_async_context(client.stream("POST", CHAT, json=turn))
            for _ in range(max_pending)
        ]
        assert [r.status_code for r in (holder, *waiting)] == [200] * (max_pending + 1)
        refused = await client.post(CHAT, json=turn)
        assert refused.status_code == 503, refused.text
        assert refused.json()["error"]["code"] == "overloaded"
        assert refused.headers["retry-after"] == "1"
        other = await client.post(CHAT, json={**turn, "session_id": "t", "stream": False})
        assert other.status_code == 503  # the count is per process, not per session
        agent.release.set()
        for response in (holder, *waiting):
            assert text_of(data_events(await response.aread())) == "done"
    assert (await client.post(CHAT, json=turn)).status_code == 200  # the queue is empty again
