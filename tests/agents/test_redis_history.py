"""The openai agent's sessions in Redis: one JSON value per session, trimmed, expiring when idle,
shared by every worker; Redis down is a 503, never a 500."""

from __future__ import annotations

import asyncio
import itertools
import os
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest
import pytest_asyncio
import redis.asyncio

from nanobot.agents.history import (
    DEFAULT_SESSION_TTL,
    ChatMessage,
    HistoryNotSaved,
    RedisHistory,
    open_history,
)
from nanobot.api.redis_sessions import ServiceUnavailable
from nanobot.config import ConfigError
from tests.agents.conftest import Relay
from tests.support.redis import RedisServer, broken_redis, redis_server
from tests.support.upstream import FakeUpstream, answer, refuse

__all__ = ["redis_server"]

pytestmark = pytest.mark.asyncio

_PREFIXES = itertools.count()


@pytest.fixture
def prefix() -> str:
    return f"h{os.getpid()}-{next(_PREFIXES)}"


@pytest_asyncio.fixture
async def peek(redis_server: RedisServer) -> AsyncIterator[redis.asyncio.Redis]:
    client = redis.asyncio.Redis.from_url(redis_server.url)
    yield client
    await client.aclose()


def msg(role: str, content: str) -> ChatMessage:
    return ChatMessage(role=role, content=content)


def turns(*names: str) -> list[ChatMessage]:
    return [m for name in names for m in (msg("user", name), msg("assistant", name.upper()))]


def user(text: str) -> dict[str, str]:
    return {"role": "user", "content": text}


async def stored(peek: redis.asyncio.Redis, prefix: str, session: str) -> Any:
    raw = await peek.get(f"{prefix}:h:{session}")
    return None if raw is None else orjson.loads(raw)


async def test_sessions_are_json_values_that_expire_when_idle_and_every_worker_sees_them(
    redis_server: RedisServer, peek: redis.asyncio.Redis, prefix: str
) -> None:
    first = RedisHistory(redis_server.url, ttl=60, prefix=prefix)
    second = RedisHistory(redis_server.url, ttl=60, prefix=prefix)  # another worker
    try:
        await first.save("api:x", [msg("system", "é"), *turns("a")])
        await first.save("api:x", turns("b"))
        await first.save("api:y", turns("y"))
        assert await second.load("api:x") == turns("b")
        assert await second.load("api:y") == turns("y")
        assert await second.load("api:z") == []
        assert await stored(peek, prefix, "api:x") == turns("b")
        key = f"{prefix}:h:api:x"
        assert 0 < await peek.pttl(key) <= 60_000
        await peek.pexpire(key, 1_000)
        await second.save("api:x", turns("c"))  # a save refreshes the TTL
        assert await peek.pttl(key) > 1_000
    finally:
        await first.aclose()
        await second.aclose()


async def test_an_idle_session_expires_and_no_ttl_keeps_it(
    redis_server: RedisServer, peek: redis.asyncio.Redis, prefix: str
) -> None:
    short = RedisHistory(redis_server.url, ttl=0.05, prefix=prefix, timeout=2.0)  # expiry, not speed
    forever = RedisHistory(redis_server.url, ttl=None, prefix=prefix, timeout=2.0)
    try:
        await short.save("api:brief", turns("a"))
        await forever.save("api:kept", turns("k"))
        async with asyncio.timeout(10):
            while await short.load("api:brief"):  # noqa: ASYNC110 - polling Redis, no event to wait on
                await asyncio.sleep(0.01)
        assert await peek.pttl(f"{prefix}:h:api:kept") == -1
        assert await short.load("api:kept") == turns("k")
    finally:
        await short.aclose()
        await forever.aclose()


async def test_open_history_takes_redis_urls(redis_server: RedisServer) -> None:
    store = open_history(redis_server.url, ttl=5)
    assert isinstance(store, RedisHistory) and store.ttl == 5
    await store.aclose()
    default = open_history("rediss://127.0.0.1:1/0")  # TLS; nothing connects until used
    assert isinstance(default, RedisHistory) and default.ttl == DEFAULT_SESSION_TTL
    await default.aclose()
    forever = open_history(redis_server.url, ttl=0)
    assert isinstance(forever, RedisHistory) and forever.ttl is None
    await forever.aclose()
    for bad in ("redis:x", "redis", "rediss:"):
        with pytest.raises(ConfigError, match="'memory' or 'sqlite:PATH'"):
            open_history(bad)
    with pytest.raises(ConfigError, match="Cannot use the history store"):
        RedisHistory("redis://127.0.0.1:notaport/0")


async def test_redis_down_is_a_503_from_load_and_a_no_replay_503_from_save(
    redis_server: RedisServer, prefix: str
) -> None:
    history = RedisHistory(redis_server.url, prefix=prefix)
    try:
        await history.save("api:x", turns("a"))
        redis_server.stop()
        started = time.monotonic()
        with pytest.raises(ServiceUnavailable) as failed:
            await history.load("api:x")
        assert time.monotonic() - started < 0.5
        assert failed.value.status == 503 and failed.value.code == "service_unavailable"
        assert failed.value.headers() == {"Retry-After": "1"}
        with pytest.raises(HistoryNotSaved) as unsaved:
            await history.save("api:x", turns("b"))
        assert unsaved.value.headers() == {"Retry-After": "1", "x-should-retry": "false"}
        redis_server.start()
        assert await history.load("api:x") == []  # a fresh, empty Redis
        await history.save("api:x", turns("c"))
        assert await history.load("api:x") == turns("c")
    finally:
        await history.aclose()


# -- the openai agent through it, on both stacks -----------------------------------------------


async def say(client: httpx.AsyncClient, text: str, session_id: str = "s") -> httpx.Response:
    return await client.post(
        "/v1/chat/completions", json={"messages": [user(text)], "session_id": session_id}
    )


async def test_the_agent_keeps_trimmed_turns_in_redis_shared_by_two_servers(
    relay: Relay, upstream: FakeUpstream, redis_server: RedisServer, peek: redis.asyncio.Redis, prefix: str
) -> None:
    upstream.will(*(answer(f"A{k}") for k in range(1, 4)))
    servers = [
        await relay(history=RedisHistory(redis_server.url, prefix=prefix), max_messages=4) for _ in range(2)
    ]
    for k in range(1, 4):  # the turns alternate between the two servers
        response = await say(servers[k % 2], f"u{k}")
        assert response.status_code == 200, response.text
    assert upstream.last.messages == [
        user("u1"),
        {"role": "assistant", "content": "A1"},
        user("u2"),
        {"role": "assistant", "content": "A2"},
        user("u3"),
    ]
    assert await stored(peek, prefix, "api:s") == [*turns_of(2, 3)]
    assert 0 < await peek.pttl(f"{prefix}:h:api:s") <= DEFAULT_SESSION_TTL * 1000


def turns_of(*numbers: int) -> list[dict[str, str]]:
    return [m for k in numbers for m in (user(f"u{k}"), {"role": "assistant", "content": f"A{k}"})]


async def test_a_turn_the_upstream_did_not_finish_leaves_redis_history_as_it_was(
    relay: Relay, upstream: FakeUpstream, redis_server: RedisServer, peek: redis.asyncio.Redis, prefix: str
) -> None:
    upstream.will(answer("A1"), refuse(500))
    client = await relay(history=RedisHistory(redis_server.url, prefix=prefix))
    assert (await say(client, "u1")).status_code == 200
    failed = await say(client, "u2")
    assert failed.status_code == 502, failed.text
    assert await stored(peek, prefix, "api:s") == turns_of(1)


async def test_redis_down_is_a_503_never_a_500_and_service_resumes(
    relay: Relay, upstream: FakeUpstream, redis_server: RedisServer, prefix: str
) -> None:
    client = await relay(history=RedisHistory(redis_server.url, prefix=prefix))
    assert (await say(client, "u1")).status_code == 200
    redis_server.stop()
    started = time.monotonic()
    response = await say(client, "u2")
    assert time.monotonic() - started < 0.5
    assert response.status_code == 503, response.text
    assert response.json()["error"]["code"] == "service_unavailable"
    assert response.headers["retry-after"] == "1"
    streamed = await client.post(
        "/v1/chat/completions", json={"messages": [user("u2")], "session_id": "s", "stream": True}
    )
    assert streamed.status_code == 200  # the stream had begun: the 503 is its error event
    assert '"code":"service_unavailable"' in streamed.text.replace(" ", "")
    assert "[DONE]" not in streamed.text
    stateless = await client.post("/v1/chat/completions", json={"messages": [user("no session")]})
    assert stateless.status_code == 200  # a turn that keeps no history does not need Redis
    redis_server.start()
    assert (await say(client, "u3")).status_code == 200


async def test_an_answer_redis_cannot_store_is_a_503_not_to_be_replayed(
    relay: Relay, upstream: FakeUpstream, redis_server: RedisServer, prefix: str
) -> None:
    async def redis_dies(position: int) -> None:
        redis_server.stop()

    upstream.will(answer("A1", gate=redis_dies))
    client = await relay(history=RedisHistory(redis_server.url, prefix=prefix))
    response = await say(client, "u1")
    assert response.status_code == 503, response.text
    assert response.json()["error"]["code"] == "answer_not_saved"
    assert response.headers["x-should-retry"] == "false"
    assert response.headers["retry-after"] == "1"


async def test_connections_that_died_while_idle_are_replaced_before_use(
    redis_server: RedisServer, peek: redis.asyncio.Redis, prefix: str
) -> None:
    # The property is that dead pooled connections are replaced, not how fast: a budget well
    # above the default 0.4 s, so 20 reconnections on a busy machine do not time out.
    history = RedisHistory(redis_server.url, prefix=prefix, timeout=2.0)

    async def burst() -> list[BaseException | None]:
        async def one(session: str) -> None:
            await history.load(session)
            await history.save(session, turns("a"))

        async with asyncio.timeout(10):
            return await asyncio.gather(*(one(f"api:{i}") for i in range(20)), return_exceptions=True)

    try:
        assert await burst() == [None] * 20  # connections pooled
        await peek.client_kill_filter(_type="normal")
        assert await burst() == [None] * 20
        redis_server.restart()
        assert await burst() == [None] * 20
    finally:
        await history.aclose()


@pytest.mark.parametrize("kind", ["silent", "closing"])
async def test_a_redis_that_hangs_or_fails_at_the_socket_level_is_a_503(relay: Relay, kind: str) -> None:
    async with broken_redis(kind) as url:
        client = await relay(history=RedisHistory(url))
        started = time.monotonic()
        response = await say(client, "u1")
        assert time.monotonic() - started < 0.5
        assert response.status_code == 503, response.text
        assert response.json()["error"]["code"] == "service_unavailable"
        assert response.headers["retry-after"] == "1"
