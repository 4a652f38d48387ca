"""The README's picture of the page: taken mid-conversation, reasoning open (no pixel compared).

Every run takes it; it replaces ``docs/chat-page.png`` only with ``NANOBOT_SCREENSHOT=1`` (its
TTFT figure differs each run, and a test run should not leave the checkout changed).
"""

from __future__ import annotations

import os
from pathlib import Path

from playwright.sync_api import Page, expect

from tests.ui.agents import Showcase
from tests.ui.conftest import ServerThread

SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "chat-page.png"


def test_screenshot_mid_conversation(page: Page, tmp_path: Path) -> None:
    picture = SCREENSHOT if os.environ.get("NANOBOT_SCREENSHOT") == "1" else tmp_path / "chat-page.png"
    agent = Showcase()
    server = ServerThread("aiohttp", agent, {"model_name": "nanobot"})
    url = server.start()
    try:
        page.set_viewport_size({"width": 960, "height": 640})
        page.goto(url + "/")
        page.locator("#input").fill("What should I do before tonight's release?")
        page.locator("#input").press("Enter")
        expect(page.locator(".msg.assistant .stats")).to_be_visible()
        page.locator("#input").fill("Which tests are the slowest?")
        page.locator("#input").press("Enter")
        reply = page.locator(".msg.assistant").last
        expect(reply.locator(".content")).to_contain_text("each")
        reply.locator("details.reasoning summary").click()
        expect(reply.locator(".reasoning-text")).to_contain_text("most of the time")
        picture.parent.mkdir(exist_ok=True)
        page.screenshot(path=picture)
        agent.release.set()
        expect(reply.locator(".stats")).to_be_visible()
    finally:
        server.stop()
    assert 10 * 1024 < picture.stat().st_size < 150 * 1024
