"""The conformance suite's ``serve`` fixture (both stacks), a fake upstream, and the relay between."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import httpx
import pytest
import pytest_asyncio

from nanobot.agents.history import History
from nanobot.agents.openai import OpenAIAgent
from nanobot.agents.upstream import DEFAULT_TIMEOUT, Upstream
from tests.conformance.conftest import Serve, bounded_teardown, pytest_runtest_teardown, serve, stack
from tests.support.upstream import FakeUpstream, run_upstream

__all__ = [
    "Relay",
    "bounded_teardown",
    "make_agent",
    "pytest_runtest_teardown",
    "relay",
    "serve",
    "stack",
    "upstream",
]

Relay = Callable[..., Awaitable[httpx.AsyncClient]]
UPSTREAM_MODEL = "up-model"


@pytest_asyncio.fixture
async def upstream() -> AsyncIterator[FakeUpstream]:
    async with run_upstream() as fake:
        yield fake


def make_agent(
    url: str,
    *,
    api_key: str | None = None,
    timeout: aiohttp.ClientTimeout = DEFAULT_TIMEOUT,
    history: History | None = None,
    system_prompt: str | None = None,
    max_messages: int = 100,
) -> OpenAIAgent:
    return OpenAIAgent(
        Upstream(url, UPSTREAM_MODEL, api_key=api_key, timeout=timeout),
        history=history,
        system_prompt=system_prompt,
        max_messages=max_messages,
    )


@pytest.fixture
def relay(serve: Serve, upstream: FakeUpstream) -> Relay:
    """``await relay(server={...}, **agent_options)``: our server, its openai agent on the fake upstream."""

    async def start(*, server: dict[str, Any] | None = None, **agent_options: Any) -> httpx.AsyncClient:
        return await serve(make_agent(upstream.url, **agent_options), **(server or {}))

    return start
