"""Test agents for the chat page: each tells the test, through ``threading`` events (the server
runs in another thread), what happened to its turn."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from nanobot.agents.echo import EchoReply
from nanobot.core.events import (
    Activity,
    OnEvent,
    ReasoningDelta,
    ReasoningEnd,
    ToolCall,
    ToolCallDelta,
    ToolCallEnd,
    ToolCallStart,
)
from nanobot.core.reply import Usage

OnStream = Callable[[str], Awaitable[None]] | None

#: Longest wait on a test's signal inside an agent (then the turn goes on regardless).
GATE_BOUND = 10.0


class Stoppable:
    """Streams its first word, then waits until cancelled, and records the cancellation."""

    def __init__(self) -> None:
        self.cancelled = threading.Event()

    async def process_direct(self, *, content: str, on_stream: OnStream = None, **kwargs: Any) -> str:
        assert on_stream is not None
        await on_stream("first words")
        try:
            await asyncio.sleep(GATE_BOUND * 6)
        except asyncio.CancelledError:
            self.cancelled.set()
            raise
        return "never"


class Thinker:
    """Reasons and runs a tool of its own, then waits for ``release`` before it answers."""

    def __init__(self, answer: str = "The answer.") -> None:
        self.answer = answer
        self.release = threading.Event()

    async def process_direct(
        self, *, content: str, on_stream: OnStream = None, on_event: OnEvent | None = None, **kwargs: Any
    ) -> str:
        assert on_stream is not None and on_event is not None
        for word in ("Weighing", " the", " question", f": {content}\n"):
            await on_event(ReasoningDelta(word))
        arguments = '{"path": "notes.md"}'
        await on_event(Activity("start", "read_1", "read_file", arguments))
        await on_event(Activity("end", "read_1", "read_file", arguments, "3 lines"))
        await on_event(ReasoningEnd())
        await asyncio.to_thread(self.release.wait, GATE_BOUND)
        for word in self.answer.split(" "):
            await on_stream(word + " ")
        return self.answer


class Caller:
    """Asks the client to call a tool (``get_weather``), its arguments sent in fragments."""

    async def process_direct(
        self, *, content: str, on_event: OnEvent | None = None, **kwargs: Any
    ) -> EchoReply:
        assert on_event is not None
        call = ToolCall("call_1", "get_weather", '{"city": "Oslo"}')
        await on_event(ToolCallStart(0, call.call_id, call.name))
        for start in range(0, len(call.arguments), 5):
            await on_event(ToolCallDelta(0, call.arguments[start : start + 5]))
        await on_event(ToolCallEnd(0))
        return EchoReply("", Usage(prompt_tokens=1, completion_tokens=1), (call,))


class MediaRecorder:
    """Records each turn's message, session and files (name and bytes: they are removed after
    the turn)."""

    def __init__(self) -> None:
        self.received: list[tuple[str, bytes]] = []
        self.messages: list[str] = []
        self.sessions: list[str] = []

    async def process_direct(
        self,
        *,
        content: str,
        session_key: str = "",
        media: list[str] | None = None,
        on_stream: OnStream = None,
        **kwargs: Any,
    ) -> str:
        self.messages.append(content)
        self.sessions.append(session_key)
        self.received.extend((Path(path).name, Path(path).read_bytes()) for path in media or [])
        reply = f"got {len(media or [])} file(s)"
        if on_stream is not None:
            await on_stream(reply)
        return reply


class Showcase:
    """For the README's screenshot: a first answer in Markdown; then reasoning, a tool of its own,
    and half an answer, held there until ``release``."""

    FIRST = (
        "Here is a plan for **tonight's release**:\n\n"
        "1. Run the suite: `python -m pytest -q`\n"
        "2. Tag the version\n"
        "3. Publish the notes\n\n"
        "```sh\ngit tag v0.1.0 && git push --tags\n```\n\n"
        "See [the changelog](https://example.com/changelog) for what changed."
    )

    def __init__(self) -> None:
        self.release = threading.Event()
        self.turns = 0

    async def process_direct(
        self, *, content: str, on_stream: OnStream = None, on_event: OnEvent | None = None, **kwargs: Any
    ) -> str:
        assert on_stream is not None and on_event is not None
        self.turns += 1
        if self.turns == 1:
            for line in self.FIRST.splitlines(keepends=True):
                await asyncio.sleep(0.02)  # a pace a reader can follow, for the picture's tokens/s
                await on_stream(line)
            return self.FIRST
        thought = "The user asks which tests are slow; the notes list the timings. "
        for word in thought.split(" ")[:-1]:
            await on_event(ReasoningDelta(word + " "))
        arguments = '{"path": "notes.md"}'
        await on_event(Activity("start", "read_1", "read_file", arguments))
        await on_event(Activity("end", "read_1", "read_file", arguments, "42 lines"))
        await on_event(ReasoningDelta("Three tests take most of the time."))
        await on_event(ReasoningEnd())
        answer = "The slowest are the **browser tests**: each"
        for word in answer.split(" "):
            await on_stream(word + " ")
        await asyncio.to_thread(self.release.wait, GATE_BOUND)
        await on_stream("drives a real Chromium.")
        return answer
