"""The state machine of one streamed chat completion: neutral events in, SSE bytes out.

``STREAMING`` accepts the agent's events (text, reasoning, client tool calls, activity) and
pings; :class:`Finish` moves it to ``DONE`` (stop chunk, optional usage chunk, ``[DONE]``) and
:class:`Failure` to ``FAILED`` (one error event, no stop chunk, no ``[DONE]``). Nothing may be
sent after either. In Chat Completions reasoning is ``delta.reasoning_content``, agent activity
is a line of reasoning text (never ``delta.tool_calls``, which the client would run), and the
ends of reasoning and of a tool call have no bytes of their own.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from nanobot.api.sse import DONE, PING, ChunkFormat, event
from nanobot.core.errors import AgentFailed, APIError
from nanobot.core.events import (
    Activity,
    AgentEvent,
    ReasoningDelta,
    ReasoningEnd,
    TextDelta,
    ToolCallDelta,
    ToolCallEnd,
    ToolCallStart,
    activity_line,
)
from nanobot.core.reply import Usage


class StreamState(enum.Enum):
    STREAMING = "streaming"
    DONE = "done"
    FAILED = "failed"


_STREAMING = StreamState.STREAMING


@dataclass(frozen=True, slots=True)
class Finish:
    usage: Usage | None = None
    reason: str = "stop"


@dataclass(frozen=True, slots=True)
class Failure:
    error: APIError


StreamEvent = AgentEvent | Finish | Failure


class StreamClosed(RuntimeError):
    """An event was sent to a stream that already ended."""


def contract_error(message: str) -> AgentFailed:
    """An agent broke the event contract (a fragment of a call it never started, ...)."""
    return AgentFailed(message, code="agent_contract")


class EventEncoder:
    """What every dialect's stream shares: :meth:`send` hands each event to the method that
    encodes it (agent activity as a line of reasoning text); a dialect's stream implements them.
    Nothing may be sent once ``state`` left ``STREAMING``."""

    __slots__ = ()
    state: StreamState

    def send(self, ev: StreamEvent) -> bytes:
        if self.state is not _STREAMING:
            raise StreamClosed(f"stream is {self.state.value}")
        if isinstance(ev, TextDelta):
            return self.text(ev.text) if ev.text else b""
        if isinstance(ev, ReasoningDelta):
            return self.reasoning(ev.text)
        if isinstance(ev, ToolCallDelta):
            return self.tool_arguments(ev)
        if isinstance(ev, ToolCallStart):
            return self.tool_call(ev)
        if isinstance(ev, Activity):
            return self.reasoning(activity_line(ev))
        if isinstance(ev, ToolCallEnd):
            return self.tool_call_end(ev)
        if isinstance(ev, ReasoningEnd):
            return self.reasoning_end()
        if isinstance(ev, Finish):
            return self.finish(ev)
        if isinstance(ev, Failure):
            return self.fail(ev.error)
        raise contract_error(f"The agent sent a {type(ev).__name__}, which is not a turn event.")

    def text(self, text: str) -> bytes:
        """A text delta (the hot path: the driver calls it directly)."""
        raise NotImplementedError

    def reasoning(self, text: str) -> bytes:
        raise NotImplementedError

    def reasoning_end(self) -> bytes:
        """The end of a run of reasoning: no bytes unless the dialect closes a block."""
        return b""

    def tool_call(self, ev: ToolCallStart) -> bytes:
        raise NotImplementedError

    def tool_arguments(self, ev: ToolCallDelta) -> bytes:
        raise NotImplementedError

    def tool_call_end(self, ev: ToolCallEnd) -> bytes:
        raise NotImplementedError

    def finish(self, ev: Finish) -> bytes:
        """The stream's successful end; ``state`` becomes ``DONE``."""
        raise NotImplementedError

    def fail(self, error: APIError) -> bytes:
        """The stream's failed end; ``state`` becomes ``FAILED``."""
        raise NotImplementedError


class ChatStream(EventEncoder):
    """Turns the events of one completion into the bytes of its SSE stream."""

    __slots__ = ("_calls", "_format", "_include_usage", "sent_reasoning", "sent_text", "started", "state")

    def __init__(self, chunk_format: ChunkFormat, *, include_usage: bool) -> None:
        self._format = chunk_format
        self._include_usage = include_usage
        self.state = StreamState.STREAMING
        self.started = False  #: a delta went out (it named the assistant role)
        self.sent_text = False
        self.sent_reasoning = False
        self._calls: dict[int, bool] = {}  #: client tool calls by index: still open?

    @property
    def sent_calls(self) -> int:
        """Client tool calls started in this stream."""
        return len(self._calls)

    def text(self, text: str) -> bytes:
        """Fast path for :class:`TextDelta`: one event for one token."""
        if self.state is not _STREAMING:
            raise StreamClosed(f"stream is {self.state.value}")
        if self.sent_text:  # every token after the first: one test, as before tools existed
            return self._format.delta(text)
        self.sent_text = True
        first, self.started = not self.started, True
        return self._format.delta(text, first=first)

    def reasoning(self, text: str) -> bytes:
        """A reasoning delta (or an activity line)."""
        if self.state is not _STREAMING:
            raise StreamClosed(f"stream is {self.state.value}")
        if not text:
            return b""
        self.sent_reasoning = True
        if self.started:
            return self._format.reasoning(text)
        self.started = True
        return self._format.reasoning(text, first=True)

    def ping(self) -> bytes:
        """A keepalive comment; empty once the stream has ended."""
        return PING if self.state is StreamState.STREAMING else b""

    def tool_call(self, ev: ToolCallStart) -> bytes:
        if ev.index in self._calls or ev.index < 0:
            raise contract_error(f"The agent started tool call {ev.index} twice (or a negative index).")
        self._calls[ev.index] = True
        first = not self.started
        self.started = True
        return self._format.tool_call(ev.index, ev.call_id, ev.name, first=first)

    def tool_arguments(self, ev: ToolCallDelta) -> bytes:
        if not self._calls.get(ev.index):
            raise contract_error(f"The agent sent arguments of tool call {ev.index}, which is not open.")
        return self._format.tool_arguments(ev.index, ev.arguments) if ev.arguments else b""

    def tool_call_end(self, ev: ToolCallEnd) -> bytes:
        if not self._calls.get(ev.index):
            raise contract_error(f"The agent ended tool call {ev.index}, which is not open.")
        self._calls[ev.index] = False
        return b""

    def fail(self, error: APIError) -> bytes:
        self.state = StreamState.FAILED
        return event(error.to_body())

    def finish(self, ev: Finish) -> bytes:
        parts = [] if self.started else [self._format.delta("", first=True)]
        reason = "tool_calls" if self._calls and ev.reason == "stop" else ev.reason
        parts.append(self._format.finish(reason))
        if self._include_usage:
            usage = ev.usage or Usage()
            parts.append(
                self._format.usage(
                    usage.prompt_tokens, usage.completion_tokens, usage.total_tokens, usage.reasoning_tokens
                )
            )
        parts.append(DONE)
        self.state = StreamState.DONE
        return b"".join(parts)
