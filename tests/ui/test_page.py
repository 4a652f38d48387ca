"""The chat page in headless Chromium, on both stacks: streaming, reasoning, Stop, figures,
safety, the API key, sessions, uploads, a phone-width window."""

from __future__ import annotations

import base64
import re

from playwright.sync_api import Locator, Page, expect

from nanobot.agents.echo import EchoAgent
from tests.support.agents import ScriptedAgent
from tests.ui.agents import GATE_BOUND, Caller, MediaRecorder, Stoppable, Thinker
from tests.ui.conftest import Serve

#: A 1x1 PNG.
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
)


def open_page(page: Page, url: str) -> None:
    page.goto(url + "/")
    expect(page.locator("#input")).to_be_focused()


def say(page: Page, text: str) -> None:
    """Type ``text`` and send it with Enter, as a user does."""
    page.locator("#input").fill(text)
    page.locator("#input").press("Enter")


def last_reply(page: Page) -> Locator:
    return page.locator("#messages .msg.assistant").last


def wait_done(page: Page) -> None:
    expect(page.locator("#send")).to_be_visible()
    expect(page.locator(".msg.assistant.streaming")).to_have_count(0)


def test_reply_streams_token_by_token_with_ttft_and_rate(page: Page, serve: Serve) -> None:
    url = serve(EchoAgent(delay=0.1))
    open_page(page, url)
    words = "one two three four five six seven eight"
    say(page, words)
    content = last_reply(page).locator(".content")
    expect(content).not_to_have_text("")
    first = content.inner_text()
    assert first != words  # seen mid-stream
    page.wait_for_function(
        "n => document.querySelector('.msg.assistant .content').innerText.length > n", arg=len(first)
    )
    expect(content).to_have_text(words)
    wait_done(page)
    stats = last_reply(page).locator(".stats")
    expect(stats.locator(".ttft")).to_have_text(re.compile(r"^TTFT \d+ ms$"))
    expect(stats.locator(".tps")).to_have_text(re.compile(r"^\d+\.\d tok/s$"))
    expect(stats.locator(".tokens")).to_have_text("8 tokens")


def test_shift_enter_is_a_newline_and_enter_sends(page: Page, serve: Serve) -> None:
    open_page(page, serve(EchoAgent()))
    box = page.locator("#input")
    box.type("line one")
    box.press("Shift+Enter")
    box.type("line two")
    expect(page.locator(".msg")).to_have_count(0)
    box.press("Enter")
    expect(page.locator(".msg.user .text")).to_have_text("line one\nline two")
    expect(last_reply(page).locator(".content")).to_have_text("line one\nline two", use_inner_text=True)
    expect(box).to_have_value("")


def test_stop_cancels_the_turn_on_the_server(page: Page, serve: Serve) -> None:
    agent = Stoppable()
    open_page(page, serve(agent))
    say(page, "go on forever")
    expect(last_reply(page).locator(".content")).to_have_text("first words")
    page.locator("#stop").click()
    assert agent.cancelled.wait(GATE_BOUND), "the server did not cancel the turn"
    expect(last_reply(page).locator(".status")).to_have_text("Stopped.")
    wait_done(page)
    expect(page.locator("#stop")).to_be_hidden()


def test_reasoning_and_activity_appear_before_the_answer(page: Page, serve: Serve) -> None:
    agent = Thinker("Forty-two, **surely**.")
    open_page(page, serve(agent))
    say(page, "what is it?")
    reply = last_reply(page)
    reasoning = reply.locator("details.reasoning")
    expect(reasoning.locator(".reasoning-text")).to_contain_text("Weighing the question: what is it?")
    expect(reasoning.locator(".reasoning-text")).to_contain_text("✓ read_file: 3 lines")
    expect(reasoning).to_have_attribute("open", "")  # open while the agent thinks
    expect(reply.locator(".content")).to_have_text("")  # and no answer yet
    agent.release.set()
    expect(reply.locator(".content")).to_have_text("Forty-two, surely.")
    expect(reply.locator(".content strong")).to_have_text("surely")
    expect(reasoning).not_to_have_attribute("open", "")  # folded once the answer came
    reasoning.locator("summary").click()
    expect(reasoning.locator(".reasoning-text")).to_be_visible()


def test_echo_commands_show_reasoning_then_activity_then_answer(page: Page, serve: Serve) -> None:
    open_page(page, serve(EchoAgent()))
    say(page, "/think /activity hello there")
    reply = last_reply(page)
    expect(reply.locator(".content")).to_have_text("hello there")
    text = reply.locator(".reasoning-text").text_content() or ""
    assert text.index("Thinking about: hello there") < text.index("▸ echo_lookup")


def test_client_tool_calls_are_shown(page: Page, serve: Serve) -> None:
    open_page(page, serve(Caller()))
    say(page, "weather in Oslo?")
    call = last_reply(page).locator(".tool-call")
    expect(call).to_have_text('get_weather({"city": "Oslo"})')
    wait_done(page)
    expect(last_reply(page).locator(".status")).to_have_text("")


XSS = (
    "<img src=x onerror=\"window.__pwned='img'\"> "
    "[click me](javascript:window.__pwned='link') "
    "<script>window.__pwned='script'</script> "
    "[data](data:text/html,<script>alert(1)</script>) "
    "![pic](javascript:alert(1)) "
    '<a href="javascript:alert(1)">raw</a> '
    "[safe](https://example.com/path?q=1)"
)


def test_a_hostile_reply_runs_nothing(page: Page, serve: Serve) -> None:
    open_page(page, serve(EchoAgent()))
    say(page, XSS)
    content = last_reply(page).locator(".content")
    expect(content).to_contain_text("<img src=x onerror=")  # shown as text
    expect(content).to_contain_text("<script>window.__pwned='script'</script>")
    wait_done(page)
    assert content.locator("img, script, iframe, object").count() == 0
    links = content.locator("a")
    expect(links).to_have_count(1)
    expect(links).to_have_attribute("href", "https://example.com/path?q=1")
    expect(links).to_have_attribute("rel", "noopener noreferrer nofollow")
    content.get_by_text("click me").click()
    content.get_by_text("raw").click()
    assert page.evaluate("window.__pwned") is None
    assert page.url.endswith("/")  # no navigation happened


def test_markdown_blocks_render(page: Page, serve: Serve) -> None:
    open_page(page, serve(EchoAgent()))
    text = "# Title\n\n- one\n- two *em*\n\n1. first\n2. second\n\n```py\nprint('<b>')\n```\n\n| a | b |\n|---|---|\n| `1` | 2 |\n\n> quoted"
    page.locator("#input").fill(text)
    page.locator("#input").press("Enter")
    content = last_reply(page).locator(".content")
    expect(content.locator("h1")).to_have_text("Title")
    expect(content.locator("ul li")).to_have_count(2)
    expect(content.locator("ul em")).to_have_text("em")
    expect(content.locator("ol li")).to_have_count(2)
    expect(content.locator("pre code")).to_have_text("print('<b>')")
    expect(content.locator("table td code")).to_have_text("1")
    expect(content.locator("blockquote")).to_have_text("quoted")


def test_the_key_is_asked_on_401_kept_and_never_in_a_url(page: Page, serve: Serve) -> None:
    url = serve(EchoAgent(), api_key="s3cret-key")
    sent: list[tuple[str, str | None]] = []
    page.on("request", lambda r: sent.append((r.url, r.headers.get("authorization"))))
    open_page(page, url)  # the page itself needs no key
    say(page, "hello with a key")
    dialog = page.locator("#key-dialog")
    expect(dialog).to_be_visible()
    page.locator("#key-input").fill("wrong")
    page.locator("#key-ok").click()
    expect(page.locator("#key-reason")).to_contain_text("refused")  # asked again
    page.locator("#key-input").fill("s3cret-key")
    page.locator("#key-input").press("Enter")  # Enter saves
    expect(last_reply(page).locator(".content")).to_have_text("hello with a key")
    assert page.evaluate("localStorage.getItem('nanobot.apiKey')") == "s3cret-key"
    chats = [auth for u, auth in sent if u.endswith("/v1/chat/completions")]
    assert chats == [None, "Bearer wrong", "Bearer s3cret-key"]
    assert not any("s3cret" in u or "wrong" in u for u, _ in sent)
    say(page, "again")  # the kept key: no prompt
    expect(last_reply(page).locator(".content")).to_have_text("again")
    expect(dialog).to_be_hidden()


def test_a_reload_keeps_the_conversations(page: Page, serve: Serve) -> None:
    open_page(page, serve(EchoAgent()))
    say(page, "first conversation")
    wait_done(page)
    page.locator("#new-chat").click()
    expect(page.locator(".msg")).to_have_count(0)
    say(page, "second conversation")
    wait_done(page)
    ids = page.evaluate("JSON.parse(localStorage.getItem('nanobot.conversations')).map(c => c.id)")
    assert len(set(ids)) == 2  # a session per conversation
    page.reload()
    sessions = page.locator("#sessions .session")
    expect(sessions).to_have_count(2)
    expect(sessions.first).to_contain_text("second conversation")
    sessions.nth(1).locator(".open").click()  # continue the first
    expect(page.locator(".msg.assistant .content")).to_have_text("first conversation")
    say(page, "more")
    expect(page.locator(".msg.assistant .content")).to_have_text(["first conversation", "more"])
    wait_done(page)
    expect(sessions.first).to_contain_text("first conversation")  # most recent first
    sessions.first.locator(".delete").click()
    expect(sessions).to_have_count(1)
    page.reload()
    expect(sessions).to_have_count(1)
    expect(sessions.first).to_contain_text("second conversation")


def test_a_reload_mid_reply_cancels_the_turn_and_keeps_what_came(page: Page, serve: Serve) -> None:
    agent = Stoppable()
    open_page(page, serve(agent))
    say(page, "go on")
    expect(last_reply(page).locator(".content")).to_have_text("first words")
    page.reload()
    assert agent.cancelled.wait(GATE_BOUND), "the server did not cancel the turn"
    page.locator("#sessions .session .open").click()
    expect(last_reply(page).locator(".status")).to_have_text("Stopped.")
    expect(last_reply(page).locator(".content")).to_have_text("first words")
    expect(page.locator(".msg.assistant.streaming")).to_have_count(0)


def test_an_image_upload_reaches_the_agent(page: Page, serve: Serve) -> None:
    agent = MediaRecorder()
    open_page(page, serve(agent))
    page.locator("#files").set_input_files([{"name": "dot.png", "mimeType": "image/png", "buffer": PNG}])
    expect(page.locator("#pending .file .name")).to_have_text("dot.png")
    say(page, "what is this?")
    expect(last_reply(page).locator(".content")).to_have_text("got 1 file(s)")
    assert agent.received == [("dot.png", PNG)]
    assert agent.messages == ["what is this?"]
    sent = page.locator(".msg.user .files .file")
    expect(sent.locator(".name")).to_have_text("dot.png")
    expect(sent.locator("img")).to_have_count(1)
    expect(page.locator("#pending .file")).to_have_count(0)


def test_each_conversation_is_a_session_of_its_own(page: Page, serve: Serve) -> None:
    agent = MediaRecorder()
    open_page(page, serve(agent))
    for text in ("one", "two"):
        say(page, text)
        wait_done(page)
    page.locator("#new-chat").click()
    say(page, "three")
    wait_done(page)
    first, second, third = agent.sessions
    assert first == second != third
    assert first.startswith("api:web-") and third.startswith("api:web-")


def test_a_failing_turn_shows_its_error(page: Page, serve: Serve) -> None:
    open_page(page, serve(ScriptedAgent(["partial answer"], error=RuntimeError("boom"))))
    say(page, "fail please")
    reply = last_reply(page)
    expect(reply.locator(".status.error")).not_to_have_text("")
    expect(reply.locator(".content")).to_have_text("partial answer")
    wait_done(page)


def test_escape_stops_a_reply(page: Page, serve: Serve) -> None:
    agent = Stoppable()
    open_page(page, serve(agent))
    say(page, "go on")
    expect(last_reply(page).locator(".content")).to_have_text("first words")
    page.keyboard.press("Escape")
    assert agent.cancelled.wait(GATE_BOUND), "the server did not cancel the turn"
    expect(last_reply(page).locator(".status")).to_have_text("Stopped.")


def test_usable_at_phone_width(page: Page, serve: Serve) -> None:
    page.set_viewport_size({"width": 360, "height": 640})
    open_page(page, serve(EchoAgent()))
    say(page, "a long " + "word" * 60 + " in a narrow window")
    wait_done(page)
    assert page.evaluate("document.documentElement.scrollWidth") <= 360
    expect(page.locator("#sidebar")).not_to_be_in_viewport()
    page.locator("#menu").click()
    expect(page.locator("#sidebar")).to_be_in_viewport()
    expect(page.locator("#sessions .session")).to_have_count(1)
    page.locator("#messages").click(position={"x": 340, "y": 300})  # beside the menu: it closes
    expect(page.locator("#sidebar")).not_to_be_in_viewport()
