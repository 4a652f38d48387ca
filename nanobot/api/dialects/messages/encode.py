"""The state machine of one streamed Anthropic message: neutral events in, SSE bytes out.

Anthropic's stream names every event on an ``event:`` line (the SDKs dispatch on it)::

    message_start
    content_block_start / content_block_delta ... / content_block_stop   (per block)
    message_delta (stop_reason, usage)
    message_stop

One block is open at a time: text is a ``text`` block, reasoning (and the agent's own tool
activity, as a line of text) a ``thinking`` block, a client tool call a ``tool_use`` block
whose arguments are ``input_json_delta`` fragments. A change of kind closes the open block.
``message_start`` goes out with the first event. A failure is one ``event: error``; nothing
follows it. A text delta costs one JSON escape between two pre-encoded pieces.
"""

from __future__ import annotations

import enum

import orjson

from nanobot.api.dialects.messages.errors import error_body
from nanobot.api.sse import json_text
from nanobot.api.stream import EventEncoder, Finish, StreamClosed, StreamState, contract_error
from nanobot.core.errors import APIError
from nanobot.core.events import (
    ToolCallDelta,
    ToolCallEnd,
    ToolCallStart,
)
from nanobot.core.reply import Usage

PING = b'event: ping\ndata: {"type":"ping"}\n\n'
MESSAGE_STOP = b'event: message_stop\ndata: {"type":"message_stop"}\n\n'

#: Chat finish reasons as Anthropic stop reasons.
STOP_REASONS = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "content_filter": "refusal",
}

_DELTA = b'event: content_block_delta\ndata: {"type":"content_block_delta","index":'
_TEXT_DELTA = b',"delta":{"type":"text_delta","text":'
_THINKING_DELTA = b',"delta":{"type":"thinking_delta","thinking":'
_JSON_DELTA = b',"delta":{"type":"input_json_delta","partial_json":'
_DELTA_END = b"}}\n\n"
_START = b'event: content_block_start\ndata: {"type":"content_block_start","index":'
_TEXT_BLOCK = b',"content_block":{"type":"text","text":""}}\n\n'
_THINKING_BLOCK = b',"content_block":{"type":"thinking","thinking":"","signature":""}}\n\n'
_STOP = b'event: content_block_stop\ndata: {"type":"content_block_stop","index":'


_STREAMING = StreamState.STREAMING


class _Kind(enum.Enum):
    TEXT = "text"
    THINKING = "thinking"
    TOOL = "tool_use"


_TEXT = _Kind.TEXT


def sse(name: str, payload: object) -> bytes:
    """One named event."""
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"


def error_event(body: object) -> bytes:
    return sse("error", body)


def message_start(message_id: str, model: str, input_tokens: int) -> bytes:
    return sse(
        "message_start",
        {
            "type": "message_start",
            "message": {
                "id": message_id,
                "type": "message",
                "role": "assistant",
                "model": model,
                "content": [],
                "stop_reason": None,
                "stop_sequence": None,
                "usage": usage_of(input_tokens, 0),
            },
        },
    )


def usage_of(input_tokens: int, output_tokens: int) -> dict[str, int]:
    return {
        "input_tokens": input_tokens,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
        "output_tokens": output_tokens,
    }


def stop_reason(reason: str, calls: bool) -> str:
    """``tool_use`` whenever the turn ended with client tool calls; else as :data:`STOP_REASONS`."""
    if calls and reason == "stop":
        return "tool_use"
    return STOP_REASONS.get(reason, "end_turn")


class MessagesStream(EventEncoder):
    """Turns the events of one turn into the bytes of its Anthropic SSE stream."""

    __slots__ = (
        "_block",
        "_calls",
        "_deltas",
        "_error",
        "_head",
        "_kind",
        "_open_call",
        "_start",
        "_tool_id",
        "sent_reasoning",
        "sent_text",
        "state",
    )

    def __init__(self, message_id: str, model: str, input_tokens: int, error: object = None) -> None:
        self._start: bytes | None = message_start(message_id, model, input_tokens)
        self._tool_id = "toolu_" + message_id.removeprefix("msg_")
        self.state = StreamState.STREAMING
        self.sent_text = False
        self.sent_reasoning = False
        self._block = -1  #: index of the last block started
        self._kind: _Kind | None = None  #: the open block's kind
        self._head = b""  #: the open block's delta, up to its text
        self._calls: dict[int, bool] = {}  #: client tool calls by index: still open?
        self._open_call: int | None = None
        self._deltas = 0  #: deltas sent: the output count when the agent reports none

    @property
    def sent_calls(self) -> int:
        return len(self._calls)

    def reasoning_end(self) -> bytes:
        return self._close() if self._kind is _Kind.THINKING else b""

    def fail(self, error: APIError) -> bytes:
        self.state = StreamState.FAILED
        self._kind = None
        return error_event(error_body(error)[1])

    def text(self, text: str) -> bytes:
        """Fast path for :class:`TextDelta`: one event for one token."""
        if self._kind is _TEXT:
            self._deltas += 1
            return self._head + json_text(text) + _DELTA_END
        if self.state is not _STREAMING:
            raise StreamClosed(f"stream is {self.state.value}")
        self.sent_text = True
        opening = self._open(_TEXT, _TEXT_BLOCK, _TEXT_DELTA)
        self._deltas += 1
        return opening + self._head + json_text(text) + _DELTA_END

    def reasoning(self, text: str) -> bytes:
        """A thinking delta (or an activity line)."""
        if self.state is not _STREAMING:
            raise StreamClosed(f"stream is {self.state.value}")
        if not text:
            return b""
        self.sent_reasoning = True
        opening = b""
        if self._kind is not _Kind.THINKING:
            opening = self._open(_Kind.THINKING, _THINKING_BLOCK, _THINKING_DELTA)
        self._deltas += 1
        return opening + self._head + json_text(text) + _DELTA_END

    def _open(self, kind: _Kind, block: bytes, delta: bytes) -> bytes:
        """Close the open block (and send ``message_start`` first), start a block of ``kind``."""
        parts = self._close()
        self._block += 1
        index = str(self._block).encode()
        self._kind = kind
        self._head = _DELTA + index + delta
        return parts + _START + index + block

    def _close(self) -> bytes:
        """``message_start`` if it is still due, or the open block's ``content_block_stop``."""
        start = self._start
        if start is not None:
            self._start = None
            return start
        if self._kind is None:
            return b""
        if self._open_call is not None:
            self._calls[self._open_call] = False
            self._open_call = None
        self._kind = None
        return _STOP + str(self._block).encode() + b"}\n\n"

    def tool_call(self, ev: ToolCallStart) -> bytes:
        if ev.index in self._calls or ev.index < 0:
            raise contract_error(f"The agent started tool call {ev.index} twice (or a negative index).")
        opening = self._close()
        self._calls[ev.index] = True
        self._open_call = ev.index
        self._block += 1
        index = str(self._block).encode()
        self._kind = _Kind.TOOL
        self._head = _DELTA + index + _JSON_DELTA
        block = {
            "type": "tool_use",
            "id": ev.call_id or f"{self._tool_id}_{ev.index}",
            "name": ev.name,
            "input": {},
        }
        return opening + _START + index + b',"content_block":' + orjson.dumps(block) + b"}\n\n"

    def tool_arguments(self, ev: ToolCallDelta) -> bytes:
        if not self._calls.get(ev.index):
            raise contract_error(f"The agent sent arguments of tool call {ev.index}, which is not open.")
        if ev.index != self._open_call:
            raise contract_error(
                f"The agent sent arguments of tool call {ev.index} after another block began; "
                "Anthropic's stream holds one block at a time."
            )
        if not ev.arguments:
            return b""
        self._deltas += 1
        return self._head + json_text(ev.arguments) + _DELTA_END

    def tool_call_end(self, ev: ToolCallEnd) -> bytes:
        if ev.index not in self._calls:
            raise contract_error(f"The agent ended tool call {ev.index}, which it never started.")
        if ev.index == self._open_call:
            return self._close()
        self._calls[ev.index] = False  # closed already, when the next block began
        return b""

    def finish(self, ev: Finish) -> bytes:
        parts = [self._close()]  # ``message_start`` when nothing came, else the open block's end
        usage = ev.usage or Usage()
        delta: dict[str, object] = {"output_tokens": usage.completion_tokens if ev.usage else self._deltas}
        if ev.usage is not None and ev.usage.prompt_tokens:
            delta = {"input_tokens": ev.usage.prompt_tokens, **delta}
        reason = stop_reason(ev.reason, bool(self._calls))
        payload = {
            "type": "message_delta",
            "delta": {"stop_reason": reason, "stop_sequence": None},
            "usage": delta,
        }
        parts += (sse("message_delta", payload), MESSAGE_STOP)
        self.state = StreamState.DONE
        return b"".join(parts)
