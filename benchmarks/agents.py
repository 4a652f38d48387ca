"""The benchmark agents, and the workload a request asks for.

A request names its workload in its last user message, ``"<tokens> <delay>"`` (e.g. ``"256 0"``),
so every server, ours and the peers, gets the same parameters from the same body. ``delay == 0``
is the firehose (every token at once, never waiting); ``delay > 0`` is the paced agent (it sleeps
``delay`` seconds before each token). A silent stream is a paced one with a very long delay.
``"256 0 yield"`` is a firehose that yields to the event loop before each token
(``asyncio.sleep(0)``), as an agent reading tokens off a socket does. A last word names what the
tokens are sent as (:data:`EMITS`): ``"256 0 yield reasoning"`` sends them as reasoning deltas
(``on_event(ReasoningDelta(token))``, then the end of reasoning and a one-token answer),
``"256 0 yield tool"`` as the argument fragments of one client tool call (``ToolCallStart``, a
``ToolCallDelta`` per token, ``ToolCallEnd``; the request must carry ``tools``). Only our
servers get those (their agent takes ``on_event``); text is the default.
Tokens are deterministic, so the load client knows the exact text to expect.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from nanobot.core.events import (
    OnEvent,
    ReasoningDelta,
    ReasoningEnd,
    ToolCallDelta,
    ToolCallEnd,
    ToolCallStart,
)

#: Token stems: plain words, and ones that need JSON escaping (quote, newline, tab, non-ASCII).
VOCABULARY = (" the", " quick", ",", ' "fox"', "\n", " naïve", " \t", " 🙂")

OnStream = Callable[[str], Awaitable[None]]

#: What an agent sends its tokens as: answer text, reasoning deltas, or a tool call's arguments.
EMITS = ("text", "reasoning", "tool")
#: The answer after a reasoning stream, and the client tool call of a ``tool`` stream.
REASONING_ANSWER = " ok"
TOOL_NAME = "bench"
TOOL_CALL_ID = "call_bench"


@dataclass(frozen=True, slots=True)
class Workload:
    """What one request asks of the agent: ``tokens`` tokens, ``delay`` seconds before each."""

    tokens: int
    delay: float = 0.0
    yields: bool = False
    emits: str = "text"  # one of :data:`EMITS`

    def prompt(self) -> str:
        words = [f"{self.tokens} {self.delay:g}"]
        if self.yields:
            words.append("yield")
        if self.emits != "text":
            words.append(self.emits)
        return " ".join(words)


def parse_prompt(content: str) -> Workload:
    """The workload named by a prompt; anything unreadable is a 1-token firehose."""
    parts = content.split()
    try:
        tokens = max(0, min(int(parts[0]), 1_000_000))
        delay = max(0.0, float(parts[1])) if len(parts) > 1 else 0.0
    except (IndexError, ValueError):
        return Workload(1)
    emits = next((word for word in parts[2:] if word in EMITS), "text")
    return Workload(tokens, delay, "yield" in parts[2:], emits)


def token(index: int) -> str:
    """The ``index``-th token of every stream (the number makes any reordering visible)."""
    return f"{VOCABULARY[index % len(VOCABULARY)]}{index}"


@functools.cache
def expected_text(tokens: int) -> str:
    """The whole text of a ``tokens``-token answer."""
    return "".join(token(i) for i in range(tokens))


async def firehose(tokens: int, on_stream: OnStream) -> None:
    """Emit ``tokens`` tokens with no delay."""
    for i in range(tokens):
        await on_stream(token(i))


async def paced(tokens: int, delay: float, on_stream: OnStream) -> None:
    """Emit ``tokens`` tokens: the first at once, then sleeping ``delay`` seconds before each."""
    for i in range(tokens):
        if i:
            await asyncio.sleep(delay)
        await on_stream(token(i))


async def as_events(workload: Workload, on_event: OnEvent, on_stream: OnStream) -> str:
    """The tokens as reasoning deltas (then a one-token answer) or as the argument fragments of
    one client tool call, yielding (or sleeping) before each; the text the agent returns."""
    tool = workload.emits == "tool"
    if tool:
        await on_event(ToolCallStart(0, TOOL_CALL_ID, TOOL_NAME))
    pause = workload.delay > 0 or workload.yields  # as :func:`paced`; else as :func:`firehose`
    for i in range(workload.tokens):
        if i and pause:
            await asyncio.sleep(workload.delay)
        await on_event(ToolCallDelta(0, token(i)) if tool else ReasoningDelta(token(i)))
    if tool:
        await on_event(ToolCallEnd(0))
        return ""
    await on_event(ReasoningEnd())
    await on_stream(REASONING_ANSWER)
    return REASONING_ANSWER


async def _ignore(_: str) -> None:
    """The callback of a non-streaming turn: the text is only returned."""


class BenchAgent:
    """The agent every server runs: firehose or paced, as the prompt says; on our servers, which
    pass ``on_event`` (and the client's ``tools``), also reasoning or a client tool call."""

    async def process_direct(
        self,
        *,
        content: str,
        session_key: str = "",
        channel: str = "",
        chat_id: str = "",
        media: list[str] | None = None,
        on_stream: OnStream | None = None,
        on_stream_end: Callable[..., Awaitable[None]] | None = None,
        on_event: OnEvent | None = None,
        tools: list[Any] | None = None,
        **kwargs: Any,
    ) -> str:
        workload = parse_prompt(content)
        emit = on_stream or _ignore
        if workload.emits != "text" and on_event is not None:
            text = await as_events(workload, on_event, emit)
            if on_stream_end is not None:
                await on_stream_end()
            return text
        if workload.delay > 0 or workload.yields:
            await paced(workload.tokens, workload.delay, emit)
        else:
            await firehose(workload.tokens, emit)
        if on_stream_end is not None:
            await on_stream_end()
        return expected_text(workload.tokens)
