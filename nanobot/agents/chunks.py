"""Reading an upstream's streamed answer, without I/O: SSE bytes to events, chunks to text.

:class:`EventDecoder` turns the raw bytes of an SSE body into each event's data, splitting lines
on CR, LF and CRLF only, as SSE does (not on U+2028 or U+0085, which JSON strings may hold raw),
and holding at most :data:`MAX_EVENT_BYTES` for one event. :class:`ChunkReader` folds OpenAI
``chat.completion.chunk`` payloads into the answer's text deltas, its reasoning and client tool
calls (as the neutral events of :mod:`nanobot.core.events`), its usage and whether it finished. Both
raise :class:`UpstreamFailed` for what an OpenAI-compatible server must never send.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

import orjson

from nanobot.core.errors import UpstreamFailed
from nanobot.core.events import (
    AgentEvent,
    ReasoningDelta,
    ReasoningEnd,
    TextDelta,
    ToolCall,
    ToolCallDelta,
    ToolCallEnd,
    ToolCallStart,
)
from nanobot.core.reply import Usage

DONE = b"[DONE]"
MiB = 1024 * 1024
#: The most one event or one non-streamed answer may hold: an event's size is that of its data
#: lines as sent (``data:`` and a line end included) plus its unfinished line and its line end.
#: Streamed chunks are well under 1 KiB, but some servers and proxies send a whole answer as one
#: event: 128k output tokens of CJK text, escaped as ``\uXXXX`` (6 bytes each), are 768 KiB, so
#: 4 MiB leaves room for reasoning text too, while a runaway upstream costs at most that per turn.
MAX_EVENT_BYTES = 4 * MiB
BOM = b"\xef\xbb\xbf"
_DATA = b"data: "
_CR, _LF = 0x0D, 0x0A  # as ints: ``13 in chunk`` is a memchr, ``b"\r" in chunk`` a substring search
#: The most client tool calls one answer may start (a runaway upstream is a failure, not a stream).
MAX_TOOL_CALLS = 1024


def too_large(source: str, what: str, limit: int) -> UpstreamFailed:
    """The error for an upstream that sent more than ``limit`` bytes in one event or answer."""
    size = f"{limit // MiB} MiB" if limit % MiB == 0 else f"{limit} bytes"
    return UpstreamFailed(
        f"The upstream at {source} sent {what} larger than {size}, the most the relay buffers for one event.",
        code="upstream_event_too_large",
    )


class EventDecoder:
    """Bytes of an SSE body in, as they arrive; each event's data out, as UTF-8 bytes.

    Follows the WHATWG rules: a BOM may open the stream, lines end at CR, LF or CRLF (also a
    CRLF split between two chunks), ``:`` starts a comment, ``data:`` lines (one space after the
    colon dropped) are joined with LF, a blank line dispatches the event, other fields are
    ignored. Nothing is decoded here: the JSON parser decodes each whole event, so a character
    split between chunks is whole by then. Unlike WHATWG, :meth:`close` keeps an event the body
    ended without its blank line (a body may end right after ``data: [DONE]``). An event that
    passes ``limit`` bytes raises :class:`UpstreamFailed` (``upstream_event_too_large``) before it
    is buffered. ``source`` names the upstream in errors.
    """

    __slots__ = ("_at_start", "_cr", "_data", "_data_size", "_head", "_limit", "_pending", "source")

    def __init__(self, source: str, limit: int = MAX_EVENT_BYTES) -> None:
        self.source = source
        self._limit = limit
        self._at_start = True  # a BOM may still come
        self._head = b""  # the first bytes, while they may be the start of a BOM
        self._cr = False  # the last chunk ended in CR: a LF opening the next one ends no line
        self._pending = bytearray()  # the unfinished line
        self._data: list[bytes] = []  # the event's data so far, one item per line
        self._data_size = 0  # the size of those lines as sent, each with one line end

    @property
    def buffered(self) -> int:
        """How many bytes the decoder counts as held (a little more than it holds): at most its limit."""
        return len(self._head) + len(self._pending) + self._data_size

    def feed(self, chunk: bytes) -> list[bytes]:
        """Read the next bytes of the body; the data of each event they complete."""
        if self._at_start or self._cr:
            chunk = self._skip_bom_and_lf(chunk)
        if not self._pending and not self._data and chunk.startswith(_DATA) and len(chunk) <= self._limit:
            # The usual chunk: exactly one whole event, ``data: ...`` and a blank line (LF or CRLF).
            end = chunk.find(_LF)
            if end == len(chunk) - 2 and chunk[-1] == _LF and _CR not in chunk:
                return [chunk[6:-2]]
            if end == len(chunk) - 3 and chunk.endswith(b"\r\n\r\n") and chunk.find(_CR) == end - 1:
                return [chunk[6:-4]]
            if chunk.endswith(b"\n\n") and _CR not in chunk:
                # Several whole one-line events (a relay that fell behind reads them at once).
                events = chunk[:-2].split(b"\n\n")
                for data in events:
                    if not data.startswith(_DATA) or _LF in data:
                        return self._split(chunk)
                return [data[6:] for data in events]
        return self._split(chunk)

    def close(self) -> bytes | None:
        """The body ended: the data of an event it ended in the middle of, if any."""
        events: list[bytes] = []
        rest = self._head + self._pending
        self._head, self._at_start, self._cr = b"", False, False
        self._pending.clear()
        if rest:
            self._lines([rest], events)
        return self._dispatch() if self._data else None

    def _skip_bom_and_lf(self, chunk: bytes) -> bytes:
        """``chunk`` without the stream's BOM, or the LF of a CRLF the last chunk cut after its CR."""
        if self._at_start:
            head = self._head + chunk
            if len(head) < len(BOM) and BOM.startswith(head):
                self._head = head
                return b""
            self._at_start, self._head = False, b""
            chunk = head.removeprefix(BOM)
        if self._cr and chunk:
            self._cr = False
            if chunk[0] == _LF:
                chunk = chunk[1:]
        return chunk

    def _split(self, chunk: bytes) -> list[bytes]:
        """Any chunk: its lines read, its unfinished last line kept (within the limit)."""
        if _CR in chunk:
            self._cr = chunk[-1] == _CR
            chunk = chunk.replace(b"\r\n", b"\n")
            if _CR in chunk:  # a lone CR ends a line too
                chunk = chunk.replace(b"\r", b"\n")
        lines = chunk.split(b"\n")
        tail = lines.pop()
        events: list[bytes] = []
        if lines:
            if self._pending:
                lines[0] = bytes(self._pending) + lines[0]
                self._pending.clear()
            self._lines(lines, events)
        if tail:
            if self._data_size + len(self._pending) + len(tail) >= self._limit:  # no room for its end
                raise too_large(self.source, "an event", self._limit)
            self._pending += tail
        return events

    def _lines(self, lines: list[bytes], events: list[bytes]) -> None:
        """Read whole lines (without their ends), appending the data of each event they end."""
        data = self._data
        for line in lines:
            if not line:
                if data:
                    events.append(self._dispatch())
                continue
            if line.startswith(b"data:"):
                value = line[6:] if line[5:6] == b" " else line[5:]
            elif line == b"data":
                value = b""
            else:
                continue  # a comment (":...") or another field: event, id, retry
            self._data_size += len(line) + 1
            if self._data_size > self._limit:
                raise too_large(self.source, "an event", self._limit)
            data.append(value)

    def _dispatch(self) -> bytes:
        data = self._data
        joined = data[0] if len(data) == 1 else b"\n".join(data)
        data.clear()
        self._data_size = 0
        return joined


class ChunkReader:
    """Folds chunk payloads into the answer; ``source`` names the upstream in error messages.

    :meth:`feed` returns a chunk's text when text is all it holds (the per-token fast path).
    A chunk with reasoning or tool-call fragments returns ``""`` and leaves its events, its text
    among them as :class:`TextDelta`, in :attr:`events`, in order, for the caller to send and
    clear. Reasoning comes as ``reasoning_content`` (vLLM, DeepSeek, llama-server) or
    ``reasoning`` (Ollama, OpenRouter); a :class:`ReasoningEnd` follows a run of it once text or
    a tool call starts, or the answer finishes. Tool calls are numbered in the order they start
    (the upstream's ``index`` may be missing or not start at 0); each ends when the answer does.
    """

    def __init__(self, source: str) -> None:
        self.source = source
        self.usage: Usage | None = None
        self.finished = False
        self.finish_reason: str | None = None  #: the upstream's, passed on (``length``, ...)
        self.done = False
        #: Events of the last chunk fed that held more than text, for the caller to send and clear.
        self.events: list[AgentEvent] = []
        self._parts: list[str] = []
        self._plain = True  #: no reasoning run is open: text needs no ReasoningEnd before it
        self._reasoning: list[str] = []
        self._calls: list[tuple[str, str, list[str]]] = []  #: id, name, argument fragments
        self._keys: dict[int, int] = {}  #: the upstream's call index -> ours
        self._ended = False  #: the calls and the reasoning were ended

    @property
    def content(self) -> str:
        return "".join(self._parts)

    @property
    def reasoning(self) -> str:
        return "".join(self._reasoning)

    @property
    def tool_calls(self) -> tuple[ToolCall, ...]:
        """The client tool calls of the answer so far, their arguments joined."""
        return tuple(ToolCall(call_id, name, "".join(parts)) for call_id, name, parts in self._calls)

    @property
    def complete(self) -> bool:
        """The answer is whole: ``[DONE]`` came, or a choice said why it finished."""
        return self.done or self.finished

    def feed(self, data: bytes) -> str:
        """Read one event's data (UTF-8); the text it adds to the answer (often empty)."""
        try:
            chunk = orjson.loads(data)
        except orjson.JSONDecodeError:
            if data.strip() == DONE:
                self.done = True
                self._end()
                return ""
            raise self._malformed(data) from None
        if chunk.__class__ is not dict:
            raise self._malformed(data)
        get = chunk.get
        if get("error") is not None:
            raise UpstreamFailed(f"The upstream at {self.source} failed mid-answer: {error_detail(chunk)}")
        usage = get("usage")
        if usage is not None and isinstance(usage, Mapping):
            self.usage = read_usage(usage)
        choices = get("choices")
        if choices.__class__ is list and len(choices) == 1 and self._plain:
            # The usual chunk: one choice, index 0, a text delta and nothing else, not the last.
            choice = choices[0]
            if choice.__class__ is dict and choice.get("finish_reason") is None:
                delta = choice.get("delta")
                if type(delta) is dict:
                    content = delta.get("content")
                    if (
                        content.__class__ is str
                        and choice.get("index", 0) == 0
                        and (len(delta) == 1 or _text_only(delta))
                    ):
                        if content:
                            self._parts.append(content)
                        return content
        return self._read(choices)

    def read_completion(self, body: bytes) -> str:
        """A whole ``chat.completion`` (from an upstream that does not stream); its text, or ``""``
        with its events in :attr:`events` when it holds reasoning or tool calls too."""
        completion = self._load(body)
        choices = completion.get("choices")
        choice = choices[0] if isinstance(choices, list) and choices else None
        message = choice.get("message") if isinstance(choice, dict) else None
        if not isinstance(message, dict) or not isinstance(message.get("content") or "", str):
            raise self._malformed(body)
        usage = completion.get("usage")
        self.usage = read_usage(usage) if isinstance(usage, Mapping) else None
        calls = message.get("tool_calls")
        if isinstance(calls, list):  # a whole call per item: each its own index when it has none
            calls = [
                {"index": k, **c} if isinstance(c, dict) and "index" not in c else c
                for k, c in enumerate(calls)
            ]
        text = self._delta({**message, "tool_calls": calls})
        self.finished = True
        self._finish(choice.get("finish_reason") if isinstance(choice, dict) else None)
        self._end()
        return self._result(text)

    def _load(self, data: bytes) -> Mapping[str, Any]:
        try:
            chunk = orjson.loads(data)
        except orjson.JSONDecodeError:
            raise self._malformed(data) from None
        if not isinstance(chunk, dict):
            raise self._malformed(data)
        return chunk

    def _read(self, choices: object) -> str:
        """Any chunk's choices: the first choice's text, reasoning and tool calls, and its finish."""
        if choices is None:
            return ""
        if not isinstance(choices, list):
            raise self._malformed(repr(choices))
        text = ""
        for choice in choices:
            delta = (choice.get("delta") or {}) if isinstance(choice, dict) else None
            if not isinstance(delta, dict) or not isinstance(delta.get("content"), str | None):
                raise self._malformed(repr(choice))
            if choice.get("index", 0) != 0:
                continue
            text += self._delta(delta)
            if choice.get("finish_reason"):
                self.finished = True
                self._finish(choice["finish_reason"])
                self._end()
        return self._result(text)

    def _result(self, text: str) -> str:
        """``text`` when it is all the chunk held; else ``""``, the text put first in :attr:`events`
        (text left out of them came before any event)."""
        if text:
            self._parts.append(text)
        if not self.events:
            return text
        if text:
            self.events.insert(0, TextDelta(text))
        return ""

    def _delta(self, delta: Mapping[str, Any]) -> str:
        """One delta (or message): reasoning, then text, then tool-call fragments. Its text, or
        ``""`` when an event came before the text and the text went into :attr:`events`."""
        events = self.events
        reasoning = self._reasoning_of(delta)
        if reasoning:
            self._reasoning.append(reasoning)
            self._plain = False
            events.append(ReasoningDelta(reasoning))
        text: str = delta.get("content") or ""
        calls = delta.get("tool_calls")
        if (text or calls) and not self._plain:
            self._plain = True
            events.append(ReasoningEnd())
        if text and events:
            self._parts.append(text)
            events.append(TextDelta(text))
            text = ""
        if calls is not None:
            self._fragments(calls)
        return text

    def _reasoning_of(self, delta: Mapping[str, Any]) -> str:
        """The delta's reasoning text: ``reasoning_content``, else ``reasoning`` (one, never both:
        some servers send the same text in each)."""
        for name in ("reasoning_content", "reasoning"):
            value = delta.get(name)
            if value is None:
                continue
            if not isinstance(value, str):
                raise self._malformed(f"{name}: {value!r}")
            if value:
                return value
        return ""

    def _fragments(self, calls: object) -> None:
        """``delta.tool_calls``: a call's first fragment starts it, later ones add arguments."""
        if not isinstance(calls, list):
            raise self._malformed(f"tool_calls: {calls!r}")
        events = self.events
        for item in calls:
            function = item.get("function") if isinstance(item, dict) else None
            if not isinstance(item, dict) or not isinstance(function, dict | None):
                raise self._malformed(f"tool_calls: {item!r}")
            function = function or {}
            call_id, name = item.get("id"), function.get("name")
            arguments = _arguments(function.get("arguments"))
            if not isinstance(call_id, str | None) or not isinstance(name, str | None) or arguments is None:
                raise self._malformed(f"tool_calls: {item!r}")
            at = self._index(item.get("index"), call_id, item)
            if self._ended:
                raise UpstreamFailed(
                    f"The upstream at {self.source} sent a tool call fragment after the answer finished.",
                    code="upstream_malformed",
                )
            if at is None:
                if not name:
                    raise UpstreamFailed(
                        f"The upstream at {self.source} started a tool call without a function name: "
                        f"{str(item)[:200]!r}",
                        code="upstream_malformed",
                    )
                if len(self._calls) >= MAX_TOOL_CALLS:
                    raise UpstreamFailed(
                        f"The upstream at {self.source} started more than {MAX_TOOL_CALLS} tool calls.",
                        code="upstream_malformed",
                    )
                at = len(self._calls)
                self._keys[_key(item.get("index"), at)] = at
                call_id = call_id or f"call_{uuid.uuid4().hex[:24]}"
                self._calls.append((call_id, name, []))
                events.append(ToolCallStart(at, call_id, name))
            if arguments:
                self._calls[at][2].append(arguments)
                events.append(ToolCallDelta(at, arguments))

    def _index(self, index: object, call_id: str | None, item: object) -> int | None:
        """Our index of the call a fragment continues, or ``None`` when it starts one."""
        if index is None:  # tolerated: the last call, unless the fragment names another
            if not self._calls or (call_id and call_id != self._calls[-1][0]):
                return None
            return len(self._calls) - 1
        if not isinstance(index, int) or isinstance(index, bool) or index < 0:
            raise self._malformed(f"tool_calls: {item!r}")
        return self._keys.get(index)

    def _end(self) -> None:
        """The answer finished: the open reasoning run and every tool call end."""
        if self._ended:
            return
        self._ended = True
        if not self._plain:
            self._plain = True
            self.events.append(ReasoningEnd())
        self.events.extend(ToolCallEnd(k) for k in range(len(self._calls)))

    def _finish(self, reason: object) -> None:
        if isinstance(reason, str) and reason and len(reason) <= 64:
            self.finish_reason = reason

    def _malformed(self, data: str | bytes) -> UpstreamFailed:
        shown = data if isinstance(data, str) else data[:800].decode(errors="replace")
        return UpstreamFailed(
            f"The upstream at {self.source} sent a malformed chunk: {shown[:200]!r}",
            code="upstream_malformed",
        )


def _text_only(delta: dict[str, Any]) -> bool:
    """A delta with more keys than ``content`` (``role``, nulls) that still holds only text."""
    return not (delta.get("reasoning_content") or delta.get("reasoning") or delta.get("tool_calls"))


def _indexed(call: object, k: int) -> object:
    """A whole call of a non-streamed message, given index ``k`` when it has none."""
    return {"index": k, **call} if isinstance(call, dict) and "index" not in call else call


def _key(index: object, at: int) -> int:
    """The upstream's index of a call, or for a call without one, a key no index takes."""
    return index if isinstance(index, int) else -1 - at


def _arguments(value: object) -> str | None:
    """A fragment's arguments as JSON text (``""`` when absent; an object some servers send
    whole is encoded); ``None`` when they are neither."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        return orjson.dumps(value).decode()
    return None


def read_usage(usage: Mapping[str, Any]) -> Usage:
    """An upstream's token counts; ``completion_tokens_details.reasoning_tokens`` is kept when given."""

    def count(name: str) -> int:
        value = usage.get(name)
        return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0

    total = usage.get("total_tokens")
    kept = total if isinstance(total, int) and not isinstance(total, bool) and total >= 0 else None
    details = usage.get("completion_tokens_details")
    reasoning = details.get("reasoning_tokens") if isinstance(details, Mapping) else None
    if not isinstance(reasoning, int) or isinstance(reasoning, bool) or reasoning < 0:
        reasoning = None
    return Usage(count("prompt_tokens"), count("completion_tokens"), kept, reasoning)


def error_detail(payload: object) -> str:
    """The message in an error body: OpenAI's, vLLM's, FastAPI's or Ollama's shape, else nothing."""
    if not isinstance(payload, Mapping):
        return ""
    error = payload.get("error")
    for candidate in (
        error.get("message") if isinstance(error, Mapping) else error,
        payload.get("message"),
        payload.get("detail"),
    ):
        if isinstance(candidate, str) and candidate:
            return candidate[:300]
    return ""
