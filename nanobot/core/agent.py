"""Agents: anything with ``async process_direct(...)`` can sit behind the API."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class Agent(Protocol):
    """What the server calls for each turn (see DESIGN.md, section 3).

    Returns text, or an object with ``.content`` (and optionally ``.usage``). Extra context
    (``messages``, ``request_id``) is passed only when the signature accepts it.
    """

    async def process_direct(
        self,
        *,
        content: str,
        session_key: str,
        channel: str,
        chat_id: str,
        media: list[str] | None = None,
        on_stream: Callable[[str], Awaitable[None]] | None = None,
        on_stream_end: Callable[..., Awaitable[None]] | None = None,
        **kwargs: Any,
    ) -> Any: ...
