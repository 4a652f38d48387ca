"""One fixture, both stacks: every conformance test runs against aiohttp and against ASGI."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AsyncExitStack
from typing import Any

import httpx
import pytest
import pytest_asyncio

from nanobot.core.agent import Agent
from tests.support.servers import STACKS, end_leftover_tasks, run_server
from tests.support.watchdog import teardown_watchdog

Serve = Callable[..., Awaitable[httpx.AsyncClient]]


@pytest.fixture(params=STACKS)
def stack(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item) -> Iterator[None]:
    """Teardown ends the run past a limit, even after a failure (see tests.support.watchdog)."""
    with teardown_watchdog(item.nodeid):
        return (yield)


@pytest_asyncio.fixture(autouse=True)
async def bounded_teardown() -> AsyncIterator[None]:
    """Set up first, so torn down last: whatever the test left running (an agent that swallowed
    its cancellation after a failed assertion) ends within a bound instead of hanging the run."""
    yield
    await end_leftover_tasks()


@pytest_asyncio.fixture
async def serve(stack: str) -> AsyncIterator[Serve]:
    """``await serve(agent, **options)`` starts a real server and gives a client bound to it."""
    async with AsyncExitStack() as resources:

        async def start(agent: Agent, **options: Any) -> httpx.AsyncClient:
            url = await resources.enter_async_context(run_server(stack, agent, **options))
            client = httpx.AsyncClient(base_url=url, timeout=10, verify=False)  # plain HTTP: skip loading CAs
            return await resources.enter_async_context(client)

        yield start
