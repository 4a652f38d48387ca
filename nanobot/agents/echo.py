"""The embedded default agent: streams the user's words back, offline.

Commands at the start of a message show, offline, what real agents stream besides text:

- ``/think TEXT``: reasoning first (``Thinking about: TEXT``), then the echo of ``TEXT``;
- ``/activity TEXT``: a tool the agent runs itself (``echo_lookup``), started and ended;
- ``/call NAME {JSON}``: a client tool call to ``NAME`` (one of the request's ``tools``; the
  first when ``NAME`` is absent or unknown) with the JSON arguments (``{}`` by default), sent in
  small fragments; the turn ends with ``finish_reason: tool_calls``. Send the tool result back
  and the echo of it is the answer.

Commands combine (``/think /activity hi``).
"""

from __future__ import annotations

import asyncio
import mimetypes
import re
import secrets
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

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

_WORDS = re.compile(r"\s*\S+")


#: Characters of a client tool call's arguments per fragment.
FRAGMENT = 8


@dataclass(frozen=True, slots=True)
class EchoReply:
    content: str
    usage: Usage
    tool_calls: tuple[ToolCall, ...] = ()


def split_words(text: str) -> list[str]:
    """Word tokens that join back to ``text`` exactly (leading spaces kept with each word)."""
    tokens = _WORDS.findall(text)
    rest = text[sum(map(len, tokens)) :]
    if rest:
        tokens.append(rest)
    return tokens


def _tokens(text: str) -> Iterator[str]:
    """:func:`split_words`, one token at a time."""
    end = 0
    for match in _WORDS.finditer(text):
        end = match.end()
        yield match.group()
    if end < len(text):
        yield text[end:]


def describe(media: list[str]) -> str:
    """What the turn received, one line per file: name, type and size (so a user sees it came)."""
    lines = []
    for path in map(Path, media):
        kind = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        lines.append(f"\n[received {path.name}: {kind}, {path.stat().st_size} bytes]")
    return "".join(lines)


class EchoAgent:
    """Echoes the new user message word by word, waiting ``delay`` seconds before each word."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay

    async def process_direct(
        self,
        *,
        content: str,
        session_key: str = "",
        channel: str = "",
        chat_id: str = "",
        media: list[str] | None = None,
        on_stream: Callable[[str], Awaitable[None]] | None = None,
        on_stream_end: Callable[..., Awaitable[None]] | None = None,
        on_event: OnEvent | None = None,
        tools: Sequence[Mapping[str, Any]] | None = None,
        **kwargs: Any,
    ) -> EchoReply:
        content, commands = _commands(content)
        if on_event is not None:
            for command, argument in commands:
                if command == "/call" and tools:
                    call = _client_call(argument, tools, session_key)
                    await _send_call(on_event, call, self.delay)
                    return EchoReply("", Usage(prompt_tokens=1, completion_tokens=1), (call,))
                await _show(on_event, command, content, self.delay)
        content += describe(media or [])
        if on_stream is None:
            count = len(split_words(content))
        else:
            count = 0
            for token in _tokens(content):  # lazily: a huge message never holds the loop at once
                if self.delay > 0:
                    await asyncio.sleep(self.delay)
                await on_stream(token)
                count += 1
        if on_stream_end is not None:
            await on_stream_end()
        return EchoReply(content, Usage(prompt_tokens=count, completion_tokens=count))


_COMMANDS = ("/think", "/activity", "/call")


def _commands(content: str) -> tuple[str, list[tuple[str, str]]]:
    """The leading commands of a message (each with the rest of its line for ``/call``), and
    the text after them."""
    commands: list[tuple[str, str]] = []
    text = content.lstrip()
    while True:
        word = text.split(maxsplit=1)[0] if text.strip() else ""
        if word not in _COMMANDS:
            return (text if commands else content), commands
        text = text[len(word) :].lstrip(" \t")
        if word == "/call":
            line, _, text = text.partition("\n")
            commands.append((word, line.strip()))
        else:
            commands.append((word, ""))


async def _show(on_event: OnEvent, command: str, text: str, delay: float) -> None:
    """``/think``: reasoning words; ``/activity``: a tool of the agent's own, run and ended."""
    if command == "/think":
        for token in _tokens(f"Thinking about: {text.strip() or 'nothing'}"):
            if delay > 0:
                await asyncio.sleep(delay)
            await on_event(ReasoningDelta(token))
        await on_event(ReasoningEnd())
    elif command == "/activity":
        arguments = orjson.dumps({"text": text.strip()}).decode()
        await on_event(Activity("start", "echo_lookup_1", "echo_lookup", arguments))
        if delay > 0:
            await asyncio.sleep(delay)
        words = len(split_words(text))
        await on_event(Activity("end", "echo_lookup_1", "echo_lookup", arguments, f"{words} words"))


def _client_call(argument: str, tools: Sequence[Mapping[str, Any]], session_key: str) -> ToolCall:
    names = [str(t.get("function", {}).get("name")) for t in tools if isinstance(t.get("function"), Mapping)]
    name, _, arguments = argument.partition(" ")
    if name not in names:
        name, arguments = names[0], argument if name.startswith("{") else arguments
    arguments = arguments.strip() or "{}"
    call_id = f"call_{secrets.token_hex(12)}"
    return ToolCall(call_id, name, arguments)


async def _send_call(on_event: OnEvent, call: ToolCall, delay: float) -> None:
    await on_event(ToolCallStart(0, call.call_id, call.name))
    for start in range(0, len(call.arguments), FRAGMENT):
        if delay > 0:
            await asyncio.sleep(delay)
        await on_event(ToolCallDelta(0, call.arguments[start : start + FRAGMENT]))
    await on_event(ToolCallEnd(0))
