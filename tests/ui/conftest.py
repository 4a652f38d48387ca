"""The chat page in a real headless Chromium (Debian's ``chromium``, driven by Playwright) against
real servers on both stacks.

Playwright's sync API runs in the test's thread; each server runs in a thread of its own, with its
own event loop (``tests.support.servers.run_server``), so the test agents signal the tests through
``threading`` events. One browser serves the whole session; every test gets a fresh context (no
localStorage carried over).
"""

from __future__ import annotations

import asyncio
import shutil
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, expect, sync_playwright

from nanobot.core.agent import Agent
from tests.support.servers import STACKS, STOP_BOUND, run_server

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
#: How long a page condition may take before the test fails (ms).
WAIT_MS = 10_000
START_BOUND = 10.0

expect.set_options(timeout=WAIT_MS)


class ServerThread:
    """A real server (``run_server``) in a thread with its own event loop."""

    def __init__(self, stack: str, agent: Agent, options: dict[str, Any]) -> None:
        self._stack, self._agent, self._options = stack, agent, options
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=asyncio.run, args=(self._main(),), name=f"{stack}-server")
        self.url = ""

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        try:
            async with run_server(self._stack, self._agent, **self._options) as url:
                self.url = url
                self._ready.set()
                await self._stop.wait()
        except BaseException as exc:
            self._error = exc
        finally:
            self._ready.set()

    def start(self) -> str:
        self._thread.start()
        assert self._ready.wait(START_BOUND), f"the {self._stack} server did not start"
        if self._error is not None:
            raise self._error
        return self.url

    def stop(self) -> None:
        assert self._loop is not None and self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(STOP_BOUND + 5)
        assert not self._thread.is_alive(), f"the {self._stack} server did not stop"
        if self._error is not None:
            raise self._error


Serve = Callable[..., str]


@pytest.fixture(params=STACKS)
def stack(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def serve(stack: str) -> Iterator[Serve]:
    """``serve(agent, **options)`` starts a real server on ``stack``; gives its base URL."""
    servers: list[ServerThread] = []

    def start(agent: Agent, **options: Any) -> str:
        server = ServerThread(stack, agent, options)
        servers.append(server)
        return server.start()

    yield start
    for server in servers:
        server.stop()


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield browser
        browser.close()


class PageProblems:
    """What the page reported that no test expects: script errors, CSP violations, dialogs."""

    def __init__(self) -> None:
        self.errors: list[str] = []
        self.dialogs: list[str] = []

    def console(self, message: ConsoleMessage) -> None:
        # A refused request (401, 404) is logged by Chromium itself: expected, not the page's error.
        if message.type == "error" and not message.text.startswith("Failed to load resource"):
            self.errors.append(message.text)


@pytest.fixture
def problems() -> PageProblems:
    return PageProblems()


@pytest.fixture
def page(browser: Browser, problems: PageProblems) -> Iterator[Page]:
    """A fresh browser context and page; the test fails if the page logged an error."""
    context = browser.new_context(viewport={"width": 1100, "height": 720})
    context.set_default_timeout(WAIT_MS)
    page = context.new_page()
    page.on("console", problems.console)
    page.on("pageerror", lambda error: problems.errors.append(f"uncaught: {error}"))

    def dialog(d: Any) -> None:
        problems.dialogs.append(d.message)
        d.dismiss()

    page.on("dialog", dialog)
    yield page
    context.close()
    assert not problems.errors, problems.errors
    assert not problems.dialogs, problems.dialogs
