"""The state machine of one streamed completion: events in, SSE bytes out.

``STREAMING`` accepts text deltas and pings; :class:`Finish` moves it to ``DONE`` (stop chunk,
optional usage chunk, ``[DONE]``) and :class:`Failure` to ``FAILED`` (one error event, no stop
chunk, no ``[DONE]``). Nothing may be sent after either.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from nanobot.api.completion import Usage
from nanobot.api.errors import APIError
from nanobot.api.sse import DONE, PING, ChunkFormat, event


class StreamState(enum.Enum):
    STREAMING = "streaming"
    DONE = "done"
    FAILED = "failed"


_STREAMING = StreamState.STREAMING


@dataclass(frozen=True, slots=True)
class TextDelta:
    text: str


@dataclass(frozen=True, slots=True)
class Finish:
    usage: Usage | None = None
    reason: str = "stop"


@dataclass(frozen=True, slots=True)
class Failure:
    error: APIError


StreamEvent = TextDelta | Finish | Failure


class StreamClosed(RuntimeError):
    """An event was sent to a stream that already ended."""


class ChatStream:
    """Turns the events of one completion into the bytes of its SSE stream."""

    __slots__ = ("_format", "_include_usage", "sent_text", "state")

    def __init__(self, chunk_format: ChunkFormat, *, include_usage: bool) -> None:
        self._format = chunk_format
        self._include_usage = include_usage
        self.state = StreamState.STREAMING
        self.sent_text = False

    def send(self, ev: StreamEvent) -> bytes:
        if self.state is not StreamState.STREAMING:
            raise StreamClosed(f"stream is {self.state.value}")
        if isinstance(ev, TextDelta):
            return self.text(ev.text)
        if isinstance(ev, Finish):
            return self._finish(ev)
        self.state = StreamState.FAILED
        return event(ev.error.to_body())

    def text(self, text: str) -> bytes:
        """Fast path for :class:`TextDelta`: one event for one token."""
        if self.state is not _STREAMING:
            raise StreamClosed(f"stream is {self.state.value}")
        if self.sent_text:
            return self._format.delta(text)
        self.sent_text = True
        return self._format.delta(text, first=True)

    def ping(self) -> bytes:
        """A keepalive comment; empty once the stream has ended."""
        return PING if self.state is StreamState.STREAMING else b""

    def _finish(self, ev: Finish) -> bytes:
        parts = [] if self.sent_text else [self._format.delta("", first=True)]
        parts.append(self._format.finish(ev.reason))
        if self._include_usage:
            usage = ev.usage or Usage()
            parts.append(self._format.usage(usage.prompt_tokens, usage.completion_tokens, usage.total_tokens))
        parts.append(DONE)
        self.state = StreamState.DONE
        return b"".join(parts)
