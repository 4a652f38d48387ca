"""Test agents for the chat page: each tells the test, through ``threading`` events (the server
runs in another thread), what happened to its turn."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from nanobot.core.events import Activity, OnEvent, ReasoningDelta, ReasoningEnd

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


class MediaRecorder:
    """Records the files each turn received (name and bytes: they are removed after the turn)."""

    def __init__(self) -> None:
        self.received: list[tuple[str, bytes]] = []
        self.messages: list[str] = []

    async def process_direct(
        self, *, content: str, media: list[str] | None = None, on_stream: OnStream = None, **kwargs: Any
    ) -> str:
        self.messages.append(content)
        self.received.extend((Path(path).name, Path(path).read_bytes()) for path in media or [])
        reply = f"got {len(media or [])} file(s)"
        if on_stream is not None:
            await on_stream(reply)
        return reply
