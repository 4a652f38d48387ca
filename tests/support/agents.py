"""Test agents implementing the Agent protocol (no mocks): scripted, gated, failing."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

OnStream = Callable[[str], Awaitable[None]] | None
OnStreamEnd = Callable[..., Awaitable[None]] | None


@dataclass
class Result:
    content: str
    usage: dict[str, int] | None = None


@dataclass
class ScriptedAgent:
    """Streams ``tokens`` (``None`` in the list marks a segment end), then returns or raises."""

    tokens: Sequence[str | None] = ()
    result: Any = None
    error: BaseException | None = None
    calls: list[dict[str, Any]] = field(default_factory=list)

    async def process_direct(
        self,
        *,
        content: str,
        session_key: str,
        channel: str,
        chat_id: str,
        media: list[str] | None = None,
        on_stream: OnStream = None,
        on_stream_end: OnStreamEnd = None,
        **kwargs: Any,
    ) -> Any:
        self.calls.append({"content": content, "session_key": session_key, "media": media, **kwargs})
        for token in self.tokens:
            if token is None:
                if on_stream_end:
                    await on_stream_end(resuming=True)
            elif on_stream:
                await on_stream(token)
        if on_stream_end:
            await on_stream_end()
        if self.error is not None:
            raise self.error
        return self.result if self.result is not None else "".join(t for t in self.tokens if t)


class GateAgent:
    """Streams ``before`` tokens, then waits on ``release``; records entry, exit and cancellation."""

    def __init__(self, before: Sequence[str] = (), after: Sequence[str] = ()) -> None:
        self.before = before
        self.after = after
        self.entered = asyncio.Event()
        self.release = asyncio.Event()
        self.cancelled = asyncio.Event()
        self.log: list[str] = []

    async def process_direct(
        self,
        *,
        content: str,
        session_key: str,
        channel: str,
        chat_id: str,
        media: list[str] | None = None,
        on_stream: OnStream = None,
        on_stream_end: OnStreamEnd = None,
    ) -> str:
        self.log.append(f"start {content}")
        self.entered.set()
        try:
            for token in self.before:
                if on_stream:
                    await on_stream(token)
            await self.release.wait()
            for token in self.after:
                if on_stream:
                    await on_stream(token)
        except asyncio.CancelledError:
            self.cancelled.set()
            raise
        self.log.append(f"end {content}")
        return "".join([*self.before, *self.after])


class Lingering:
    """For shutdown tests in a real process: ``stuck`` streams one token and never ends;
    anything else streams its words 0.1 s apart."""

    async def process_direct(
        self,
        *,
        content: str,
        session_key: str,
        channel: str,
        chat_id: str,
        media: list[str] | None = None,
        on_stream: OnStream = None,
        on_stream_end: OnStreamEnd = None,
    ) -> str:
        assert on_stream is not None
        if content == "stuck":
            await on_stream("stuck")
            await asyncio.Event().wait()
        for word in content.split():
            await on_stream(word)
            await asyncio.sleep(0.1)
        return content


class Stubborn:
    """Ignores every cancellation of its turn: only a process exit ends it."""

    async def process_direct(
        self, *, content: str, session_key: str, channel: str, chat_id: str, **_: Any
    ) -> str:
        while True:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.Event().wait()
