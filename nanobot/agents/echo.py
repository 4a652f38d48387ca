"""The embedded default agent: streams the user's words back, offline."""

from __future__ import annotations

import asyncio
import mimetypes
import re
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nanobot.api.completion import Usage

_WORDS = re.compile(r"\s*\S+")


@dataclass(frozen=True, slots=True)
class EchoReply:
    content: str
    usage: Usage


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
        **kwargs: Any,
    ) -> EchoReply:
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
