"""The state machine of one streamed response: neutral events in, Responses SSE bytes out.

Every event is ``event: TYPE`` and ``data: {...}`` with a rising ``sequence_number``. The first
bytes of a stream are ``response.created`` and ``response.in_progress``; each output item then
opens (``response.output_item.added``, and for text a content part), streams its deltas and
closes (``…done`` events, then ``response.output_item.done``); the stream ends with
``response.completed``, ``response.incomplete`` (finish ``length`` or ``content_filter``) or
``response.failed``, each carrying the whole ``response`` object. Text follows reasoning in a
new ``message`` item, reasoning follows text in a new ``reasoning`` item; agent activity is a
line of reasoning text, never a ``function_call`` (the client would run it).

A text delta is one pre-encoded head per item, the JSON-escaped token and the sequence number.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

import orjson

from nanobot.api.dialects.responses.body import (
    Item,
    item_id,
    new_call,
    output_text,
    response_object,
    status_of,
)
from nanobot.api.sse import json_text
from nanobot.api.stream import EventEncoder, Finish, StreamClosed, StreamState, contract_error
from nanobot.core.errors import APIError
from nanobot.core.events import (
    ToolCallDelta,
    ToolCallEnd,
    ToolCallStart,
)
from nanobot.core.reply import Usage

_STREAMING = StreamState.STREAMING
#: A delta event: what opens its item (if anything), its head, the escaped text, its number.
_DELTA = b'%b%b%b,"sequence_number":%d}\n\n'
_LINE_BREAKS = ((b"\xe2\x80\xa8", b"\\u2028"), (b"\xe2\x80\xa9", b"\\u2029"), (b"\xc2\x85", b"\\u0085"))


def _json(payload: Mapping[str, Any]) -> bytes:
    """Compact JSON no line splitter can cut (U+2028, U+2029 and U+0085 escaped)."""
    out = orjson.dumps(payload)
    if not out.isascii():
        for raw, escaped in _LINE_BREAKS:
            out = out.replace(raw, escaped)
    return out


def _head(kind: str, fields: Mapping[str, Any], last: str) -> bytes:
    """The bytes of a ``kind`` event up to the JSON value of its ``last`` field."""
    body = _json({"type": kind, **fields})
    return b"event: " + kind.encode() + b"\ndata: " + body[:-1] + b',"' + last.encode() + b'":'


class ResponsesStream(EventEncoder):
    """Turns the events of one response into the bytes of its SSE stream."""

    __slots__ = (
        "_calls",
        "_clock",
        "_created",
        "_final",
        "_held",
        "_message",
        "_message_head",
        "_model",
        "_names",
        "_reasoning",
        "_reasoning_head",
        "_seq",
        "_settings",
        "_summary",
        "_turn_id",
        "items",
        "sent_reasoning",
        "sent_text",
        "started",
        "state",
    )

    def __init__(
        self,
        settings: Mapping[str, Any],
        *,
        turn_id: str,
        created: int,
        model: str,
        names: Mapping[str, tuple[str | None, str]],
        summary: bool,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._clock = clock  #: for ``completed_at``
        self._settings = settings
        self._turn_id = turn_id
        self._created = created
        self._model = model
        self._names = names
        self._summary = summary  #: reasoning as summary parts (the client asked for a summary)
        self.state = StreamState.STREAMING
        self.started = False  #: ``response.created`` went out
        self.sent_text = False
        self.sent_reasoning = False
        self.items: list[Item] = []
        self._seq = 0
        self._message: Item | None = None  #: the open message item
        self._message_head = b""
        self._reasoning: Item | None = None  #: the open reasoning item
        self._reasoning_head = b""
        self._calls: dict[int, Item | None] = {}  #: client calls by index: the item while open
        self._held = b""  #: events encoded ahead (see :meth:`settle`), sent with the next ones
        self._final: dict[str, Any] | None = None

    @property
    def sent_calls(self) -> int:
        """Client tool calls started in this stream."""
        return len(self._calls)

    # -- the encoder protocol -------------------------------------------------------------

    def text(self, text: str) -> bytes:
        """Fast path for :class:`TextDelta`: one event for one token."""
        if self.state is not _STREAMING:
            raise StreamClosed(f"stream is {self.state.value}")
        self.sent_text = True
        item = self._message
        opening = b""
        if item is None:
            opening = self._open_message()
            item = self._message
            assert item is not None
        item.parts.append(text)
        seq = self._seq
        self._seq = seq + 1
        return _DELTA % (opening, self._message_head, json_text(text), seq)

    def reasoning(self, text: str) -> bytes:
        """A reasoning delta (or an activity line)."""
        if self.state is not _STREAMING:
            raise StreamClosed(f"stream is {self.state.value}")
        if not text:
            return b""
        self.sent_reasoning = True
        opening = b"" if self._reasoning is not None else self._open_reasoning()
        item = self._reasoning
        assert item is not None
        item.parts.append(text)
        seq = self._seq
        self._seq = seq + 1
        return _DELTA % (opening, self._reasoning_head, json_text(text), seq)

    # -- storing ahead of the end -----------------------------------------------------------

    def settle(
        self, unsent: Callable[[ResponsesStream], bytes], usage: Usage | None, reason: str
    ) -> dict[str, Any]:
        """The final ``response`` object, before the stream's end is sent: ``unsent`` encodes
        what the agent returned but did not stream (held, and sent with the end)."""
        self._held += unsent(self)
        self._final = self._response(status_of(reason), usage=usage, reason=reason)
        return self._final

    # -- events -----------------------------------------------------------------------------

    def _event(self, kind: str, fields: Mapping[str, Any]) -> bytes:
        seq = self._seq
        self._seq = seq + 1
        body = _json({"type": kind, **fields, "sequence_number": seq})
        return b"event: " + kind.encode() + b"\ndata: " + body + b"\n\n"

    def _start(self) -> bytes:
        if self.started:
            return b""
        self.started = True
        created = self._response("in_progress")
        return self._event("response.created", {"response": created}) + self._event(
            "response.in_progress", {"response": created}
        )

    def _response(
        self, status: str, *, usage: Usage | None = None, reason: str = "stop", error: APIError | None = None
    ) -> dict[str, Any]:
        final = status != "in_progress"
        state = "in_progress" if not final else "incomplete" if error is not None else "completed"
        output = [item.to_dict(state) for item in self.items]
        return response_object(
            self._settings,
            turn_id=self._turn_id,
            created=self._created,
            model=self._model,
            status=status,
            output=output,
            usage=usage,
            reason=reason,
            error=error,
            completed_at=int(self._clock()) if final else None,
        )

    def _add(self, item: Item) -> bytes:
        start = self._start()  # before the item: ``response.created`` shows no output
        index = len(self.items)
        self.items.append(item)
        added = {"output_index": index, "item": item.to_dict("in_progress", empty=True)}
        return start + self._event("response.output_item.added", added)

    def _open_message(self) -> bytes:
        out = self.reasoning_end()
        index = len(self.items)
        item = self._message = Item("message", item_id(self._turn_id, "message", index))
        out += self._add(item)
        place = {"item_id": item.id, "output_index": index, "content_index": 0}
        out += self._event("response.content_part.added", {**place, "part": output_text("")})
        self._message_head = _head("response.output_text.delta", {**place, "logprobs": []}, "delta")
        return out

    def _close_message(self) -> bytes:
        item = self._message
        if item is None:
            return b""
        self._message = None
        self._message_head = b""
        index = self.items.index(item)
        place = {"item_id": item.id, "output_index": index, "content_index": 0}
        text = item.text
        return (
            self._event("response.output_text.done", {**place, "text": text, "logprobs": []})
            + self._event("response.content_part.done", {**place, "part": output_text(text)})
            + self._event("response.output_item.done", {"output_index": index, "item": item.to_dict()})
        )

    def _open_reasoning(self) -> bytes:
        out = self._close_message()
        index = len(self.items)
        summary = self._summary
        item = self._reasoning = Item(
            "reasoning", item_id(self._turn_id, "reasoning", index), summary=summary
        )
        out += self._add(item)
        if summary:
            place: dict[str, Any] = {"item_id": item.id, "output_index": index, "summary_index": 0}
            part = {"type": "summary_text", "text": ""}
            out += self._event("response.reasoning_summary_part.added", {**place, "part": part})
            self._reasoning_head = _head("response.reasoning_summary_text.delta", place, "delta")
        else:
            place = {"item_id": item.id, "output_index": index, "content_index": 0}
            part = {"type": "reasoning_text", "text": ""}
            out += self._event("response.content_part.added", {**place, "part": part})
            self._reasoning_head = _head("response.reasoning_text.delta", place, "delta")
        return out

    def reasoning_end(self) -> bytes:
        item = self._reasoning
        if item is None:
            return b""
        self._reasoning = None
        self._reasoning_head = b""
        index = self.items.index(item)
        text = item.text
        if item.summary:
            place: dict[str, Any] = {"item_id": item.id, "output_index": index, "summary_index": 0}
            part = {"type": "summary_text", "text": text}
            out = self._event("response.reasoning_summary_text.done", {**place, "text": text})
            out += self._event("response.reasoning_summary_part.done", {**place, "part": part})
        else:
            place = {"item_id": item.id, "output_index": index, "content_index": 0}
            part = {"type": "reasoning_text", "text": text}
            out = self._event("response.reasoning_text.done", {**place, "text": text})
            out += self._event("response.content_part.done", {**place, "part": part})
        return out + self._event("response.output_item.done", {"output_index": index, "item": item.to_dict()})

    def tool_call(self, ev: ToolCallStart) -> bytes:
        if ev.index in self._calls or ev.index < 0:
            raise contract_error(f"The agent started tool call {ev.index} twice (or a negative index).")
        out = self._close_message() + self.reasoning_end()
        item = new_call(self._turn_id, len(self.items), ev.call_id, ev.name, self._names)
        self._calls[ev.index] = item
        return out + self._add(item)

    def _open_call(self, index: int, what: str) -> Item:
        item = self._calls.get(index)
        if item is None:
            raise contract_error(f"The agent {what} tool call {index}, which is not open.")
        return item

    def tool_arguments(self, ev: ToolCallDelta) -> bytes:
        item = self._open_call(ev.index, "sent arguments of")
        if not ev.arguments:
            return b""
        item.parts.append(ev.arguments)
        fields = {"item_id": item.id, "output_index": self.items.index(item), "delta": ev.arguments}
        return self._event("response.function_call_arguments.delta", fields)

    def tool_call_end(self, ev: ToolCallEnd) -> bytes:
        item = self._open_call(ev.index, "ended")
        self._calls[ev.index] = None
        return self._close_call(item)

    def _close_call(self, item: Item) -> bytes:
        index = self.items.index(item)
        done = {"item_id": item.id, "output_index": index, "arguments": item.text}
        return self._event("response.function_call_arguments.done", done) + self._event(
            "response.output_item.done", {"output_index": index, "item": item.to_dict()}
        )

    def _close_all(self) -> bytes:
        out = self._close_message() + self.reasoning_end()
        for index, item in self._calls.items():
            if item is not None:
                self._calls[index] = None
                out += self._close_call(item)
        return out

    def finish(self, ev: Finish) -> bytes:
        out = self._held + self._start() + self._close_all()
        reason = "tool_calls" if self._calls and ev.reason == "stop" else ev.reason
        final = self._final or self._response(status_of(reason), usage=ev.usage, reason=reason)
        self.state = StreamState.DONE
        return out + self._event(f"response.{final['status']}", {"response": final})

    def fail(self, error: APIError) -> bytes:
        out = self._held + self._start()
        self.state = StreamState.FAILED
        failed = self._response("failed", error=error)
        return out + self._event("response.failed", {"response": failed})
