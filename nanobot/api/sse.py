"""Server-sent event framing for chat completion chunks: pure bytes, no I/O.

Chunks are built from a per-stream template in which only the token is JSON-escaped, so a
token costs one small ``orjson.dumps`` rather than a whole chunk object.
"""

from __future__ import annotations

import json
from typing import Any

import orjson

DONE = b"data: [DONE]\n\n"
#: A comment event: ignored by SSE clients, keeps proxies from closing an idle connection.
PING = b": ping\n\n"


#: Characters JSON allows raw but ``str.splitlines``-style readers take for line breaks.
_LINE_BREAKS = ((b"\xe2\x80\xa8", b"\\u2028"), (b"\xe2\x80\xa9", b"\\u2029"), (b"\xc2\x85", b"\\u0085"))


def json_text(text: str) -> bytes:
    """``text`` as a JSON string literal (lone surrogates are escaped, never dropped; U+2028,
    U+2029 and U+0085 are escaped, so no client's line splitter can cut an event)."""
    try:
        out = orjson.dumps(text)
    except orjson.JSONEncodeError:
        return json.dumps(text).encode()
    if text.isascii() or ("\u2028" not in text and "\u2029" not in text and "\x85" not in text):
        return out  # isascii() is O(1) in CPython: most tokens stop there
    return _escape_line_breaks(out)


def _escape_line_breaks(out: bytes) -> bytes:
    for raw, escaped in _LINE_BREAKS:
        out = out.replace(raw, escaped)
    return out


def event(payload: dict[str, Any]) -> bytes:
    """One ``data:`` event carrying ``payload`` as compact JSON."""
    return b"data: " + _escape_line_breaks(orjson.dumps(payload)) + b"\n\n"


_CONTENT = b'[{"index":0,"delta":{"content":'
_FIRST_CONTENT = b'[{"index":0,"delta":{"role":"assistant","content":'
_TAILS = (b"}\n\n", b',"usage":null}\n\n')  #: by ``include_usage``: shared by every stream
_DELTA_ENDS = tuple(b'},"finish_reason":null}]' + tail for tail in _TAILS)


class ChunkFormat:
    """Encodes the ``chat.completion.chunk`` events of one stream.

    Every chunk shares ``chunk_id``, ``created`` and ``model``; when ``include_usage`` is set,
    every chunk but the usage chunk carries ``"usage": null``, as OpenAI does. An open stream
    keeps one bytes object of its own (the head of a content delta): the rest is shared, or
    rebuilt from it on the rare paths (the first delta, the finish and usage chunks).
    """

    __slots__ = ("_content", "_delta_end", "_tail")

    def __init__(self, chunk_id: str, created: int, model: str, *, include_usage: bool) -> None:
        head = orjson.dumps(
            {"id": chunk_id, "object": "chat.completion.chunk", "created": created, "model": model}
        )
        self._content = b"data: " + head[:-1] + b',"choices":' + _CONTENT
        self._tail = _TAILS[include_usage]
        self._delta_end = _DELTA_ENDS[include_usage]

    @property
    def _head(self) -> bytes:
        """``data: {...,"choices":``: what every chunk of this stream begins with."""
        return self._content[: -len(_CONTENT)]

    def delta(self, text: str, *, first: bool = False) -> bytes:
        """A content delta; the first of a stream also names the assistant role."""
        if first:
            return self._head + _FIRST_CONTENT + json_text(text) + self._delta_end
        return self._content + json_text(text) + self._delta_end

    def finish(self, reason: str) -> bytes:
        """The closing chunk: an empty delta and the finish reason."""
        return (
            self._head + b'[{"index":0,"delta":{},"finish_reason":' + json_text(reason) + b"}]" + self._tail
        )

    def usage(self, prompt_tokens: int, completion_tokens: int, total_tokens: int | None = None) -> bytes:
        """The usage chunk sent after the finish chunk when the client asked for it."""
        usage = orjson.dumps(
            {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens if total_tokens is None else total_tokens,
            }
        )
        return self._head + b'[],"usage":' + usage + b"}\n\n"
