"""Reading an upstream's streamed answer, without I/O: SSE bytes to events, chunks to text.

:class:`EventDecoder` turns the raw bytes of an SSE body into each event's data, splitting lines
on CR, LF and CRLF only, as SSE does (not on U+2028 or U+0085, which JSON strings may hold raw),
and holding at most :data:`MAX_EVENT_BYTES` for one event. :class:`ChunkReader` folds OpenAI
``chat.completion.chunk`` payloads into the answer's text deltas, its usage and whether it
finished. Both raise :class:`UpstreamFailed` for what an OpenAI-compatible server must never send.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from nanobot.api.completion import Usage
from nanobot.api.errors import UpstreamFailed

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
    """Folds chunk payloads into the answer; ``source`` names the upstream in error messages."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.usage: Usage | None = None
        self.finished = False
        self.finish_reason: str | None = None  #: the upstream's, passed on (``length``, ...)
        self.done = False
        self._parts: list[str] = []

    @property
    def content(self) -> str:
        return "".join(self._parts)

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
        if choices.__class__ is list and len(choices) == 1:
            # The usual chunk: one choice, index 0, a text delta, not the last.
            choice = choices[0]
            if choice.__class__ is dict and choice.get("finish_reason") is None:
                delta = choice.get("delta")
                content = delta.get("content") if delta.__class__ is dict else 0
                if content.__class__ is str and choice.get("index", 0) == 0:
                    if content:
                        self._parts.append(content)
                    return content
        text = self._text(choices)
        if text:
            self._parts.append(text)
        return text

    def read_completion(self, body: bytes) -> str:
        """A whole ``chat.completion`` (from an upstream that does not stream); its text."""
        completion = self._load(body)
        choices = completion.get("choices")
        choice = choices[0] if isinstance(choices, list) and choices else None
        message = choice.get("message") if isinstance(choice, dict) else None
        if not isinstance(message, Mapping) or not isinstance(message.get("content") or "", str):
            raise self._malformed(body)
        usage = completion.get("usage")
        self.usage = read_usage(usage) if isinstance(usage, Mapping) else None
        self.finished = True
        self._finish(choice.get("finish_reason") if isinstance(choice, dict) else None)
        self._parts.append(message.get("content") or "")
        return self.content

    def _load(self, data: bytes) -> Mapping[str, Any]:
        try:
            chunk = orjson.loads(data)
        except orjson.JSONDecodeError:
            raise self._malformed(data) from None
        if not isinstance(chunk, dict):
            raise self._malformed(data)
        return chunk

    def _text(self, choices: object) -> str:
        if choices is None:
            return ""
        if not isinstance(choices, list):
            raise self._malformed(repr(choices))
        text = ""
        for choice in choices:
            delta = (choice.get("delta") or {}) if isinstance(choice, dict) else None
            content = delta.get("content") if isinstance(delta, dict) else None
            if not isinstance(delta, dict) or not isinstance(content, str | None):
                raise self._malformed(repr(choice))
            if choice.get("index", 0) != 0:
                continue
            text += content or ""
            if choice.get("finish_reason"):
                self.finished = True
                self._finish(choice["finish_reason"])
        return text

    def _finish(self, reason: object) -> None:
        if isinstance(reason, str) and reason and len(reason) <= 64:
            self.finish_reason = reason

    def _malformed(self, data: str | bytes) -> UpstreamFailed:
        shown = data if isinstance(data, str) else data[:800].decode(errors="replace")
        return UpstreamFailed(
            f"The upstream at {self.source} sent a malformed chunk: {shown[:200]!r}",
            code="upstream_malformed",
        )


def read_usage(usage: Mapping[str, Any]) -> Usage:
    def count(name: str) -> int:
        value = usage.get(name)
        return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0

    total = usage.get("total_tokens")
    kept = total if isinstance(total, int) and not isinstance(total, bool) and total >= 0 else None
    return Usage(count("prompt_tokens"), count("completion_tokens"), kept)


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
