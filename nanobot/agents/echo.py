"""The embedded default agent: streams the user's words back, offline."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
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
        tokens = split_words(content)
        if on_stream is not None:
            for token in tokens:
                if self.delay > 0:
                    await asyncio.sleep(self.delay)
                await on_stream(token)
        if on_stream_end is not None:
            await on_stream_end()
        return EchoReply(content, Usage(prompt_tokens=len(tokens), completion_tokens=len(tokens)))
