"""Dialects: the wire formats of one turn (DESIGN.md §9).

A dialect turns a request body into the neutral :class:`~nanobot.api.request.ChatRequest`, a
turn's events into its API's stream bytes (an :class:`Encoder`) or final JSON, and an error into
its API's error JSON. The service runs every dialect's turn the same way (auth, limits,
sessions, deadlines, disconnects, drain, overload, metrics, the request log); adapters only
route a path to it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from nanobot.api.request import ChatRequest, Limits
from nanobot.api.stream import StreamEvent
from nanobot.core.errors import APIError
from nanobot.core.events import ToolCallDelta
from nanobot.core.reply import Reply


class Encoder(Protocol):
    """One stream's state machine: events in, the dialect's bytes out."""

    sent_text: bool
    sent_reasoning: bool

    @property
    def sent_calls(self) -> int: ...

    def send(self, ev: StreamEvent) -> bytes: ...

    def text(self, text: str) -> bytes:
        """The fast path of a text delta."""
        ...

    def reasoning(self, text: str) -> bytes: ...

    def tool_arguments(self, ev: ToolCallDelta) -> bytes:
        """The fast path of a tool call's argument fragment."""
        ...


class Dialect(Protocol):
    """One API served over the core."""

    #: The route, e.g. ``/v1/chat/completions``.
    path: str
    #: The keepalive written after ``ping_interval`` seconds of silence.
    ping: bytes

    def parse(self, raw: bytes, limits: Limits, *, relays: bool) -> ChatRequest:
        """Validate a JSON body (raise :class:`APIError` naming the field)."""
        ...

    def turn_id(self, unique: str) -> str:
        """The id of a turn's response (``chatcmpl-…``, ``resp_…``, ``msg_…``)."""
        ...

    def encoder(self, request: ChatRequest, *, turn_id: str, created: int, model: str) -> Encoder: ...

    def body(self, reply: Reply, request: ChatRequest, *, turn_id: str, created: int, model: str) -> Any:
        """The non-streaming response body (JSON-serialisable)."""
        ...

    def error(self, error: APIError) -> tuple[int, Any]:
        """The status and error JSON of a failed request (before any stream byte)."""
        ...

    async def prepare(self, request: ChatRequest, headers: Mapping[str, str]) -> ChatRequest:
        """Complete a parsed request from stored state (e.g. a previous response) and from
        the request's headers (e.g. ones that name a session)."""
        ...

    async def finished(self, request: ChatRequest, reply: Reply, turn_id: str) -> None:
        """A turn completed (before its last bytes are sent): store what the dialect keeps."""
        ...
